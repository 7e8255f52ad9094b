"""Evaluate prompts on a task's eval split against the frozen model.

  python -m prompt_tuning_jax.eval --gin_file=models/t5_1_1_base.gin \
    --gin.CHECKPOINT_PATH=gs://.../checkpoint_1100000 --prompt=rte.npy \
    --gin.MIXTURE_OR_TASK_NAME=superglue_rte_taskless --mode=rank --output_dir=/tmp/eval

One --prompt: that prompt. Several: an ensemble (one batch; metrics per member, majority
vote, score averaging). A mixture: --prompt=TASK=PATH per sub-task, all tasks in shared
batches (or one unnamed prompt for all). No --prompt: the plain model. Prompts may be
.npy files, PEFT adapter folders or T5X checkpoints. Model shape comes from gin
(T5Config); CHECKPOINT_PATH (or INITIAL_CHECKPOINT_PATH) names the frozen weights, e.g.
'random:0'. Optional macros: MIXTURE_OR_TASK_NAME, MIXTURE_OR_TASK_MODULE,
TASK_FEATURE_LENGTHS, BATCH_SIZE (else DataConfig's gin bindings / defaults).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any, Sequence

import seqio

import gin
from prompt_tuning_jax import cli, data
from prompt_tuning_jax.checkpoints import backbone
from prompt_tuning_jax.config import T5Config
from prompt_tuning_jax.evaluators import ensemble, predictor, task_evaluator
from prompt_tuning_jax.methods import files as delta_files
from prompt_tuning_jax.prompt import wrapper

_DATA_MACROS = {"MIXTURE_OR_TASK_NAME": "mixture_or_task_name",
                "MIXTURE_OR_TASK_MODULE": "mixture_or_task_module",
                "TASK_FEATURE_LENGTHS": "task_feature_lengths", "BATCH_SIZE": "batch_size"}


def gin_macro(name: str, default: Any = None) -> Any:
  """The value bound to gin macro `name`, or `default` when unbound."""
  try:
    return gin.query_parameter(f"%{name}")
  except ValueError:
    return default


def add_model_flags(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--prompt", action="append", default=[],
                      help="prompt file/folder, or NAME=PATH (repeatable)")
  parser.add_argument("--delta", default=None, help="a trained delta (delta.safetensors or its run folder)")
  parser.add_argument("--mode", default="greedy", choices=predictor.MODES)
  parser.add_argument("--batch_size", type=int, default=None)
  parser.add_argument("--num_beams", type=int, default=4)
  parser.add_argument("--alpha", type=float, default=0.6, help="beam brevity penalty exponent")
  parser.add_argument("--max_decode_length", type=int, default=None)


def load_model(prompt_flags: Sequence[str]) -> tuple[T5Config, Any, dict, list[str], int]:
  """gin's T5Config + CHECKPOINT_PATH + prompts -> (config, model, params, names, N)."""
  t5_config = cli.build_config(T5Config)
  path = gin_macro("CHECKPOINT_PATH", gin_macro("INITIAL_CHECKPOINT_PATH"))
  if not path:
    raise SystemExit("set --gin.CHECKPOINT_PATH=... (a T5X checkpoint, HF T5 folder or 'random:<seed>')")
  frozen, _ = backbone.load_frozen(path, t5_config)
  names, bank = ensemble.load_bank(prompt_flags, t5_config.emb_dim)
  if bank is None:
    return t5_config, wrapper.make_model(t5_config, None), frozen, [], 0
  model = ensemble.bank_model(t5_config, bank, cli.build_config(wrapper.PromptConfig))
  return t5_config, model, ensemble.bank_params(frozen, bank), names, bank.shape[0]


def data_config() -> data.DataConfig:
  """gin's DataConfig with the macros above applied on top."""
  cfg = cli.build_config(data.DataConfig)
  changes = {field: gin_macro(macro) for macro, field in _DATA_MACROS.items() if gin_macro(macro) is not None}
  return dataclasses.replace(cfg, **changes)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  add_model_flags(parser)
  parser.add_argument("--output_dir", default=None, help="metrics JSON, predictions JSONL, TensorBoard")
  parser.add_argument("--split", default=None, help="default: DataConfig.eval_split")
  args = cli.parse(parser, argv)
  cfg = data_config()
  task = data.get_task(cfg)
  names = [ensemble.parse_prompt_flag(p)[0] for p in args.prompt]
  mixture_ids = _mixture_prompt_ids(task, names) if isinstance(task, seqio.Mixture) else None
  _, model, params, _, n = load_model(args.prompt)
  if args.delta:
    model, params = delta_files.apply_delta(model, params, args.delta)
  opts = dict(mode=args.mode, batch_size=args.batch_size, split=args.split, num_beams=args.num_beams,
              alpha=args.alpha, max_decode_length=args.max_decode_length, output_dir=args.output_dir)
  if mixture_ids is not None:
    names = [t.name for t in task.tasks]
    results = task_evaluator.MultiTaskEvaluator(cfg, model, names, prompt_ids=mixture_ids, **opts).evaluate(params)
  elif n > 1:
    results = {task.name: ensemble.EnsembleEvaluator(cfg, model, n, **opts)(params)}
  else:
    results = {task.name: task_evaluator.Evaluator(cfg, model, prompt_id=0 if n else None, **opts)(params)}
  if args.output_dir:
    cli.write_operative_config(args.output_dir)
  print(json.dumps(results, indent=2, sort_keys=True))
  return results


def _mixture_prompt_ids(mixture: seqio.Mixture, names: list[str]) -> list[int]:
  """Bank row of each sub-task: its --prompt=TASK=PATH, or the only prompt for all."""
  tasks = [t.name for t in mixture.tasks]
  if len(names) <= 1:
    return [0] * len(tasks)
  missing = [t for t in tasks if t not in names]
  if missing:
    raise SystemExit(f"mixture {mixture.name!r}: no --prompt=TASK=PATH for {missing}; got names {names}")
  return [names.index(t) for t in tasks]


if __name__ == "__main__":
  main()
