"""Evaluate prompts on a task's eval split against the frozen model.

  python -m prompt_tuning_jax.eval --gin_file=models/t5_1_1_base.gin \
    --gin.CHECKPOINT_PATH=gs://.../checkpoint_1100000 --prompt=rte.npy \
    --gin.MIXTURE_OR_TASK_NAME=superglue_rte_taskless --mode=rank --output_dir=/tmp/eval

One --prompt: that prompt. Several: an ensemble (one batch; metrics per member, majority
vote, score averaging). A mixture: --prompt=TASK=PATH per sub-task, all tasks in shared
batches (or one unnamed prompt for all). No --prompt: the plain model. Prompts may be
.npy files, PEFT adapter folders or T5X checkpoints. Everything else is an `EvalConfig`
bound by gin: gin/runs/eval.gin (parsed first) binds it to the macros CHECKPOINT_PATH
(default: the model file's INITIAL_CHECKPOINT_PATH; e.g. 'random:0'), MIXTURE_OR_TASK_NAME,
MIXTURE_OR_TASK_MODULE, TASK_FEATURE_LENGTHS and BATCH_SIZE; the flags override it.
Progress goes to stderr (a bar per task). Multi-host flags as `train`'s.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Sequence

from prompt_tuning_jax import cli


@cli.command
def main(argv: Sequence[str]) -> dict[str, Any]:
  parser = cli.ArgumentParser(description=__doc__)
  cli.add_model_flags(parser)
  parser.add_argument("--output_dir", default=None, help="metrics JSON, predictions JSONL, TensorBoard")
  parser.add_argument("--split", default=None, help="default: DataConfig.eval_split")
  args = cli.parse(parser, argv, defaults=["runs/eval.gin"])
  from prompt_tuning_jax.evaluators import driver, sharded  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.evaluators.config import EvalConfig  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.parallel import distributed  # pylint: disable=g-import-not-at-top
  cfg = cli.build_config(EvalConfig)
  cfg = cli.override(cfg, mode=args.mode, batch_size=args.batch_size, split=args.split, num_beams=args.num_beams,
                     alpha=args.alpha, max_decode_length=args.max_decode_length, output_dir=args.output_dir,
                     model=dataclasses.replace(cfg.model, prompts=tuple(args.prompt) or cfg.model.prompts,
                                               delta=args.delta or cfg.model.delta))
  cli.check_model(cfg.model)
  where = sharded.start(cfg.model.partition, args)
  cli.check_data(cfg.data, splits=(cfg.split or cfg.data.eval_split,))
  results = driver.evaluate(cfg, where, progress=True)
  if args.output_dir and distributed.is_primary():
    cli.write_operative_config(args.output_dir)
  print(json.dumps(results, indent=2, sort_keys=True))
  return results


if __name__ == "__main__":
  raise SystemExit(main())
