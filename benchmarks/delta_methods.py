"""Delta-tuning methods side by side on one frozen T5: cost (Small shape) and demo quality.

Why: researchers choose among prompt tuning, prefix tuning, adapters, LoRA, BitFit, SAID,
last-layer, layer-norm and model tuning on the same frozen model and data. Per method
this prints trainable parameters (and their share of the Small model), the jitted train
step's median time and XLA's planned memory (arguments + temporaries) at the batch and
lengths of `prompt_step.py` (batch 32, inputs 128 (+100 prompt rows for prompt tuning),
targets 8), all in one process; and, with the bundled demo model (`SIZES["demo"]`) after
`--quality_steps` of training through `trainer/loop.py`, the best dev accuracy on the demo's
taskless last-word task and on the bundled SuperGLUE samples (`--superglue_tasks`: 32 train
rows, rank-classified on the 32 dev32 rows; the majority class's share is printed beside them).
Writes delta_methods.json and a plot of quality against trainable parameters to --out_dir.

  python benchmarks/delta_methods.py --steps 2 --warmup 1 --quality_steps 200 --out_dir /tmp/delta_bench
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import tempfile
import time

import common
from common import fmt, format_table

MODES = ("prompt", "model", "lora", "prefix", "prefix_peft", "adapters", "bitfit", "last_layers", "layer_norm", "said")
# Adafactor learning rates: the paper's for prompt and model tuning; one common setting for the rest.
LEARNING_RATES = {"prompt": 0.3, "model": 1e-3, "last_layers": 1e-3, "said": 3e-2}
DEFAULT_LR = 1e-2


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--modes", default=",".join(MODES))
  p.add_argument("--size", default="small")
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--input_len", type=int, default=128)
  p.add_argument("--prompt_len", type=int, default=100)
  p.add_argument("--target_len", type=int, default=8)
  p.add_argument("--steps", type=int, default=2, help="timed steps; 0 compiles only (parameters, XLA memory)")
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument("--quality_steps", type=int, default=200, help="demo training steps per method; 0 skips quality")
  p.add_argument("--superglue_tasks", default="rte,boolq",
                 help="bundled SuperGLUE samples to train and score each method on ('' skips)")
  p.add_argument("--skip_cost", action="store_true", help="only the demo quality (e.g. a second, quick run)")
  p.add_argument("--out_dir", default="delta_bench")
  return p


def method_of(mode: str):
  """The method object for a mode (None for prompt and model tuning)."""
  from prompt_tuning_jax import methods
  prefix = methods.PrefixTuning(length=10, hidden=128)
  return {"lora": methods.LoRA(rank=8, alpha=16.0), "prefix": prefix,
          "prefix_peft": dataclasses.replace(prefix, sites=("decoder",), positions="preceding"),
          "adapters": methods.Adapters(width=16), "bitfit": methods.BitFit(), "last_layers": methods.LastLayers(k=1),
          "layer_norm": methods.LayerNormScales(), "said": methods.IntrinsicSAID(dim=1000)}.get(mode)


def optim_of(mode: str):
  from prompt_tuning_jax.trainer import optim
  base = optim.MODEL_TUNING if mode == "model" else optim.PROMPT_TUNING
  scaled = mode in ("model", "last_layers")
  return dataclasses.replace(base, learning_rate=LEARNING_RATES.get(mode, DEFAULT_LR),
                             multiply_by_parameter_scale=scaled)


def cost(args: argparse.Namespace, mode: str) -> dict:
  """Parameters, step time and XLA memory of one mode's train step, built as loop._Run builds it."""
  import jax
  import jax.numpy as jnp

  from prompt_tuning_jax import methods
  from prompt_tuning_jax.checkpoints import backbone
  from prompt_tuning_jax.model.config import SIZES
  from prompt_tuning_jax.prompt import initializers, wrapper
  from prompt_tuning_jax.trainer import optim, step
  cfg = SIZES[args.size]
  frozen, _ = backbone.load_frozen("random:0", cfg)
  total = sum(x.size for x in jax.tree.leaves(frozen))
  method, input_len = method_of(mode), args.input_len
  prompt_cfg = wrapper.PromptConfig(length=args.prompt_len) if mode == "prompt" else None
  full = frozen
  if prompt_cfg is not None:
    value = initializers.uniform_symmetric(0.5)(jax.random.PRNGKey(0), prompt_cfg.shape(cfg.emb_dim),
                                                frozen["token_embedder"]["embedding"])
    full = wrapper.set_prompt(frozen, jnp.asarray(value, jnp.float32))
  elif mode == "model":
    input_len += args.prompt_len  # the same encoder length as prompt tuning, as prompt_step.py
  model = methods.make_model(cfg, prompt_cfg, method)
  patterns = (optim.MODEL_TUNING.trainable_patterns if mode == "model" else
              methods.trainable_patterns(method, cfg, with_prompt=False) if method else optim.PROMPT_TUNING.trainable_patterns)
  if method is not None:
    full = methods.add_delta_params(model, full, jax.random.PRNGKey(1))
  trainable, frozen = optim.split_params(full, patterns)
  optimizer = optim.make_optimizer(dataclasses.replace(optim_of(mode), trainable_patterns=patterns))
  state = step.init_state(trainable, optimizer, jax.random.PRNGKey(2))
  batch = jax.device_put(common.random_batch(cfg.vocab_size, args.batch, input_len, args.target_len))
  t0 = time.perf_counter()
  compiled = step.jit_train_step(model, optimizer, step.LossConfig()).lower(state, frozen, batch).compile()
  compile_s = time.perf_counter() - t0
  holder = {"state": state}

  def one_step():
    holder["state"], metrics = compiled(holder["state"], frozen, batch)
    return holder["state"], metrics

  step_s = float("nan")
  if args.steps:  # --steps 0: compile only (parameters and XLA memory), no timing
    step_s = common.time_steps(one_step, warmup=args.warmup, steps=args.steps).as_dict()["median_step_s"]
  n = sum(x.size for x in jax.tree.leaves(holder["state"].params))
  added = n if method is not None and method.uses_hooks or prompt_cfg is not None else 0
  mem = common.xla_memory(compiled)
  return dict(mode=mode, trainable_params=int(n), share=n / (total + added), compile_s=round(compile_s, 1),
              median_step_s=step_s,
              xla_gb=round(mem.get("xla_argument_gb", 0) + mem.get("xla_temp_gb", 0), 3))


SUPERGLUE_LENGTHS = {"inputs": 256, "targets": 4}


def quality(args: argparse.Namespace, mode: str, model_dir: str, superglue_task: str | None = None) -> dict:
  """Best dev accuracy after `quality_steps` on the demo's taskless last-word task, or on a
  bundled SuperGLUE sample (`superglue_<task>_sample_taskless`)."""
  from prompt_tuning_jax import demo
  from prompt_tuning_jax.text import data
  from prompt_tuning_jax.evaluators import task_evaluator
  from prompt_tuning_jax.evaluators.config import EvalConfig
  from prompt_tuning_jax.prompt import initializers
  from prompt_tuning_jax.trainer import loop
  cfg = demo.demo_config(model_dir, steps=args.quality_steps, prompt_length=10, init=initializers.sampled_vocab())
  cfg = dataclasses.replace(cfg, optim=optim_of(mode), progress_bar=False,
                            eval_period=max(args.quality_steps // 5, 1))
  if superglue_task:  # rank classification: the tiny model's free text is rarely a label at all
    cfg = dataclasses.replace(
        cfg, data=data.DataConfig(f"superglue_{superglue_task}_sample_taskless", "prompt_tuning_jax.tasks",
                                  SUPERGLUE_LENGTHS, batch_size=32),
        evaluator=functools.partial(task_evaluator.make_train_evaluator, eval_config=EvalConfig(mode="rank")))
  if mode != "prompt":
    cfg = dataclasses.replace(cfg, prompt=None, method=method_of(mode))
  if mode == "model":
    cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, trainable_patterns=(".*",)))
  result = loop.train(cfg)
  best = result.best["value"] if result.best else float("nan")
  if superglue_task:
    return {f"{superglue_task}_accuracy": best}
  n = sum(x.size for x in __import__("jax").tree.leaves(result.trainable))
  return dict(demo_trainable_params=int(n), demo_accuracy=best)


def majority_share(superglue_task: str) -> float:
  """Accuracy (%) of always answering the dev32 sample's most common label."""
  import collections

  from prompt_tuning_jax import tasks

  from prompt_tuning_jax.text import jsonl
  from prompt_tuning_jax.tasks import sources
  rows = jsonl.read_jsonl(tasks.SAMPLES_DIR / sources.CONFIGS[superglue_task][1] / "dev32.jsonl")
  counts = collections.Counter(str(r["label"]) for _, r in rows)
  return 100.0 * counts.most_common(1)[0][1] / len(rows)


def plot(rows: list[dict], path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  columns = [k for k in rows[0] if k.endswith("_accuracy")]
  for column, marker in zip(columns, "osD^v"):
    label = "last word (demo)" if column == "demo_accuracy" else f"{column[:-len('_accuracy')].upper()} sample"
    ax.scatter([r["demo_trainable_params"] for r in rows], [r[column] for r in rows], marker=marker, label=label)
  for r in rows:
    ax.annotate(r["mode"], (r["demo_trainable_params"], r["demo_accuracy"]), fontsize=8)
  ax.set_xscale("log")
  ax.set_xlabel("trainable parameters (demo model)")
  ax.set_ylabel("dev accuracy (%)")
  ax.legend(fontsize=7)
  ax.set_title("Delta tuning on one frozen T5: quality vs parameters")
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def main() -> None:
  args = build_parser().parse_args()
  modes = [m for m in args.modes.split(",") if m]
  bad = [m for m in modes if m not in MODES]
  if bad:
    raise SystemExit(f"--modes: unknown {bad}; expected some of {MODES}")
  os.makedirs(args.out_dir, exist_ok=True)
  superglue_tasks = [t for t in args.superglue_tasks.split(",") if t] if args.quality_steps else []
  rows = []
  for mode in modes:
    row = {"mode": mode} if args.skip_cost else cost(args, mode)
    if args.quality_steps:
      with tempfile.TemporaryDirectory() as tmp:
        row.update(quality(args, mode, tmp))
      for task in superglue_tasks:
        with tempfile.TemporaryDirectory() as tmp:
          row.update(quality(args, mode, tmp, task))
    print(json.dumps(row), flush=True)
    rows.append(row)
  name = "delta_methods_quality.json" if args.skip_cost else "delta_methods.json"
  with open(os.path.join(args.out_dir, name), "w") as f:
    json.dump(dict(args=vars(args), rows=rows), f, indent=2)
  headers = ["method", f"trainable ({args.size})", "share", "step s", "step / prompt step", "XLA GB",
             "demo params", "demo accuracy"] + [f"{t} sample accuracy" for t in superglue_tasks]
  prompt_s = next((r["median_step_s"] for r in rows if r["mode"] == "prompt" and "median_step_s" in r), float("nan"))
  table = [(r["mode"], f"{r.get('trainable_params', 0):,}", f"{100 * r.get('share', 0):.4f}%",
            fmt(r.get("median_step_s", float("nan")), 3), fmt(r.get("median_step_s", float("nan")) / prompt_s, 2),
            fmt(r.get("xla_gb", float("nan")), 2), f"{r.get('demo_trainable_params', 0):,}",
            fmt(r.get("demo_accuracy", float("nan")), 3)) + tuple(fmt(r.get(f"{t}_accuracy", float("nan")), 3)
                                                                   for t in superglue_tasks) for r in rows]
  if superglue_tasks:
    table.append(("majority class",) + ("",) * 7 + tuple(fmt(majority_share(t), 3) for t in superglue_tasks))
  print(format_table(headers, table))
  if args.quality_steps:
    plot(rows, os.path.join(args.out_dir, "delta_quality_vs_params.png"))


if __name__ == "__main__":
  main()
