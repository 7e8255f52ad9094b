"""Delta-tuning methods side by side on one frozen T5: cost (Small shape) and quality (demo model).

Why: researchers choose among prompt tuning, prefix tuning, adapters, LoRA, BitFit, SAID,
last-layer, layer-norm and model tuning on the same frozen model and data, and the comparison
must not favour one of them by construction (docs/DELTA.md, "Comparison").

Cost, all methods in one process: trainable parameters (and their share of the Small model),
the jitted train step's median time and XLA's planned memory (arguments + temporaries) at
batch 32, targets 8 and the SAME encoder length for every method: `--input_len` +
`--prompt_len` positions (prompt tuning: input tokens + prompt rows; the rest: that many tokens).

Quality, with the bundled demo model (`SIZES["demo"]`), on tasks it was never trained on
with or without a prefix (`tasks/demo.py`: demo_first_kind, demo_second_word) and on the
bundled SuperGLUE samples: for every method, every learning rate of its grid (`LR_GRID`:
1/3x, 1x, 3x its usual rate, extended by 3x steps where the best sat at an edge) x `--seeds` seeds, `--quality_steps` Adafactor steps at batch 32,
the best of 4 dev evaluations per run, each by rank classification over the task's labels;
the table gives mean +- std over seeds at the learning rate with the best mean. Equal encoder length here too (`ENCODER_POSITIONS`; prompt tuning's
10 prompt rows count towards it). Writes delta_methods.json (the whole grid) and
delta_quality_vs_params.png to --out_dir.

  python benchmarks/delta_methods.py                    # both tables as published (docs/DELTA.md)
  python benchmarks/delta_methods.py --quality_steps 0  # cost only
  python benchmarks/delta_methods.py --skip_cost        # quality only: 4 tasks, 100 steps, 4-6 lrs x 3 seeds
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import time

import common
from common import fmt, format_table

MODES = ("prompt", "model", "lora", "prefix", "prefix_peft", "adapters", "bitfit", "last_layers", "layer_norm", "said")
# Adafactor learning rates: the paper's for prompt and model tuning; one common setting for the rest.
LEARNING_RATES = {"prompt": 0.3, "model": 1e-3, "last_layers": 1e-3, "said": 3e-2}
DEFAULT_LR = 1e-2
# The quality sweep, as published (docs/DELTA.md): 1/3x, 1x and 3x each method's usual rate
# above, then 3x steps outwards wherever the best mean sat at an edge (the values as they ran).
_ROUND = (DEFAULT_LR / 3, DEFAULT_LR, DEFAULT_LR * 3)
LR_GRID = {
    "prompt": (0.1, 0.3, 0.9, 2.7, 8.1),
    "model": (1e-3 / 3, 1e-3, 3e-3, 9e-3, 2.7e-2, 8.1e-2),
    "lora": (3.7037e-4, 1.1111e-3) + _ROUND,
    "prefix": (3.7037e-4, 1.1111e-3) + _ROUND,
    "prefix_peft": (3.7037e-4, 1.1111e-3) + _ROUND,
    "adapters": (1.1111e-3,) + _ROUND + (9e-2,),
    "bitfit": _ROUND + (9e-2, 0.27),
    "layer_norm": _ROUND + (9e-2, 0.27),
    "last_layers": (1e-3 / 3, 1e-3, 3e-3, 9e-3, 2.7e-2, 8.1e-2, 0.243),
    "said": (3.3333e-3, 1e-2, 3e-2, 9e-2, 0.27),
}


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
  p.add_argument("--quality_steps", type=int, default=100, help="training steps per quality run; 0 skips quality")
  p.add_argument("--quality_tasks", default=",".join(DEFAULT_QUALITY_TASKS),
                 help=f"tasks of the quality sweep, some of {QUALITY_TASKS}")
  p.add_argument("--seeds", type=int, default=3, help="seeds per (method, task, learning rate)")
  p.add_argument("--skip_cost", action="store_true", help="only the quality sweep")
  p.add_argument("--out_dir", default="delta_bench")
  p.add_argument("--lrs", help="comma-separated learning rates instead of each mode's grid (to extend a grid "
                 "whose best rate sits at its edge; merge the runs with --from_json A B)")
  p.add_argument("--from_json", nargs="+", help="print the tables from runs' delta_methods.json (several: their "
                 "learning-rate sweeps merged per method and task) and write the merged json and the plot to --out_dir")
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
  else:
    input_len += args.prompt_len  # every method encodes as many positions as prompt tuning
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
              encoder_positions=args.input_len + args.prompt_len,
              median_step_s=step_s,
              xla_gb=round(mem.get("xla_argument_gb", 0) + mem.get("xla_temp_gb", 0), 3))


# ---------------------------------------------------------------------------- quality

QUALITY_TASKS = ("demo_first_kind", "demo_second_word", "superglue_rte_sample_taskless",
                 "superglue_boolq_sample_taskless")
DEFAULT_QUALITY_TASKS = QUALITY_TASKS  # the table in README.md and docs/DELTA.md
# Encoder positions every method sees (prompt tuning: inputs + its P prompt rows; the rest:
# inputs padded to the same total), and target tokens, per task family.
ENCODER_POSITIONS = {"demo": 26, "superglue": 96}
TARGET_LENGTH = {"demo": 4, "superglue": 4}
QUALITY_PROMPT_LENGTH = 10


def _family(task: str) -> str:
  return "demo" if task.startswith("demo_") else "superglue"


def _task_arrays(task: str, split: str, input_len: int, target_len: int, limit: int | None = None):
  """Tokenized rows of a registered SeqIO task -> (inputs [N, L], targets [N, T]) int32, zero padded."""
  import numpy as np
  import seqio

  import prompt_tuning_jax.tasks  # noqa: F401  registers the SuperGLUE samples
  import prompt_tuning_jax.tasks.demo  # noqa: F401  registers the demo tasks
  ds = seqio.get_mixture_or_task(task).get_dataset({"inputs": input_len, "targets": target_len}, split=split,
                                                   shuffle=False)
  if limit:
    ds = ds.take(limit)
  inputs, targets = [], []
  for ex in ds.as_numpy_iterator():
    inputs.append(np.pad(ex["inputs"][:input_len], (0, input_len - len(ex["inputs"][:input_len]))))
    targets.append(np.pad(ex["targets"][:target_len], (0, target_len - len(ex["targets"][:target_len]))))
  return np.stack(inputs).astype(np.int32), np.stack(targets).astype(np.int32)


def _runtime_lr_optimizer(cfg):
  """`optim.make_optimizer(cfg)` with Adafactor's learning rate held in the optimizer state
  (optax.inject_hyperparams), so one compiled step serves every learning rate of the sweep."""
  from unittest import mock

  import optax

  from prompt_tuning_jax.trainer import optim
  static = ("min_dim_size_to_factor", "decay_rate", "decay_offset", "multiply_by_parameter_scale",
            "clipping_threshold", "momentum", "weight_decay_rate", "eps", "factored")
  with mock.patch.object(optim.optax, "adafactor", optax.inject_hyperparams(optax.adafactor, static_args=static)):
    return optim.make_optimizer(cfg)


def _with_learning_rate(opt_state, lr: float):
  import jax
  import jax.numpy as jnp
  is_injected = lambda x: "learning_rate" in getattr(x, "hyperparams", {})
  found = [x for x in jax.tree.leaves(opt_state, is_leaf=is_injected) if is_injected(x)]
  if not found:
    raise ValueError("no injected learning rate in the optimizer state")
  return jax.tree.map(lambda x: x._replace(hyperparams={**x.hyperparams, "learning_rate": jnp.float32(lr)})
                      if is_injected(x) else x, opt_state, is_leaf=is_injected)


class QualityRunner:
  """One method on the demo backbone: its train step and its evaluation compiled once per
  task family (shapes), then every (task, learning rate, seed) run reuses them.

  Each run: the method's parameters initialised from `seed` (prompt: sampled vocabulary;
  others: the method's own init), `quality_steps` Adafactor steps on batches of 32 drawn
  by `seed`, dev accuracy every `steps // 4` steps; the run's score is the best of those
  (as the trainer's early stopping keeps the best), each by rank classification over the
  task's labels (every distinct target of its train and dev rows).
  """

  def __init__(self, mode: str, steps: int):
    import jax

    from prompt_tuning_jax import demo, methods
    from prompt_tuning_jax.checkpoints import backbone
    from prompt_tuning_jax.model.config import SIZES
    from prompt_tuning_jax.prompt import wrapper
    from prompt_tuning_jax.trainer import optim, step
    self.mode, self.steps, self.cfg = mode, steps, SIZES["demo"]
    self.frozen_full, _ = backbone.load_frozen(str(demo.DEMO_CHECKPOINT), self.cfg)
    self.method = method_of(mode)
    self.prompt_cfg = wrapper.PromptConfig(length=QUALITY_PROMPT_LENGTH) if mode == "prompt" else None
    self.model = methods.make_model(self.cfg, self.prompt_cfg, self.method)
    self.patterns = (optim.MODEL_TUNING.trainable_patterns if mode == "model" else
                     methods.trainable_patterns(self.method, self.cfg, with_prompt=False) if self.method else
                     optim.PROMPT_TUNING.trainable_patterns)
    self.optimizer = _runtime_lr_optimizer(dataclasses.replace(optim_of(mode), trainable_patterns=self.patterns))
    self._jax = jax
    self._eval_fn = None
    self._inits = {}
    self._train_many = None

  def init(self, seed: int):
    """(trainable, frozen) for one seed (made once, reused across tasks and learning rates)."""
    if seed not in self._inits:
      self._inits[seed] = self._init(seed)
    return self._inits[seed]

  def _init(self, seed: int):
    import jax
    import jax.numpy as jnp

    from prompt_tuning_jax import methods
    from prompt_tuning_jax.prompt import initializers, wrapper
    from prompt_tuning_jax.trainer import optim
    rng = jax.random.PRNGKey(seed)
    full = self.frozen_full
    if self.prompt_cfg is not None:
      value = initializers.sampled_vocab()(rng, self.prompt_cfg.shape(self.cfg.emb_dim),
                                           full["token_embedder"]["embedding"])
      full = wrapper.set_prompt(full, jnp.asarray(value, jnp.float32))
    elif self.method is not None:
      full = methods.add_delta_params(self.model, full, rng)
    return optim.split_params(full, self.patterns)

  def _evaluate(self, trainable, frozen, inputs, targets, candidates):
    """Dev accuracy (%) of every run at once: [R]. Rank classification over the task's labels
    (`decoding.score_candidates`), the same for every method and task."""
    import jax
    import numpy as np

    from prompt_tuning_jax.model import decoding
    from prompt_tuning_jax.trainer import optim
    if self._eval_fn is None:
      one = lambda t, f, x, c: decoding.score_candidates(self.model, optim.merge_params(t, f), x, c)
      self._eval_fn = jax.jit(jax.vmap(one, in_axes=(0, None, None, None)))
    # Rows in chunks, so the [runs, rows, labels, T, vocab] logits stay near 1 GB; the last
    # chunk is padded with row 0 (one compile) and its copies dropped.
    runs = self._jax.tree.leaves(trainable)[0].shape[0]
    per_row = runs * candidates.size * self.cfg.vocab_size * 4
    chunk = int(max(1, min(len(inputs), 2 ** 30 // per_row)))
    padded = np.concatenate([inputs, np.repeat(inputs[:1], -len(inputs) % chunk, axis=0)])
    out = np.concatenate([np.asarray(self._eval_fn(trainable, frozen, padded[i:i + chunk], candidates))
                          for i in range(0, len(padded), chunk)], axis=1)[:, :len(inputs)]
    gold = np.array([next(i for i, c in enumerate(candidates) if np.array_equal(c, t)) for t in targets])
    return 100.0 * np.mean(out.argmax(-1) == gold[None], axis=-1)

  def sweep(self, task: str, data: dict, lrs, seeds) -> dict[tuple[float, int], float]:
    """Every (learning rate, seed) run of one task side by side: one vmapped train step
    (`step.train_step`, as the trainer's) over the runs' states and batches. -> best dev accuracy per run."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from prompt_tuning_jax.text import data as data_lib
    from prompt_tuning_jax.trainer import step
    runs = [(lr, seed) for lr in lrs for seed in seeds]
    states, frozen = [], None
    for lr, seed in runs:
      trainable, frozen = self.init(seed)
      trainable = jax.tree.map(lambda x: x.copy(), trainable)
      state = step.init_state(trainable, self.optimizer, jax.random.PRNGKey(seed + 1))
      states.append(state.replace(opt_state=_with_learning_rate(state.opt_state, lr)))
    state = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
    if self._train_many is None:
      fn = functools.partial(step.train_step, model=self.model, optimizer=self.optimizer, loss_config=step.LossConfig())
      self._train_many = jax.jit(jax.vmap(fn, in_axes=(0, None, 0)), donate_argnums=(0,))
    rngs = [np.random.default_rng(seed) for _, seed in runs]
    train_x, train_y = data["train"]
    period = max(self.steps // 4, 1)
    best = np.full(len(runs), -np.inf)
    for i in range(1, self.steps + 1):
      picks = [r.choice(len(train_x), 32, replace=len(train_x) < 32) for r in rngs]
      batch = data_lib.encdec_features(np.stack([train_x[p] for p in picks]), np.stack([train_y[p] for p in picks]))
      state, metrics = self._train_many(state, frozen, batch)
      if i % period == 0 or i == self.steps:
        acc = self._evaluate(state.params, frozen, *data["validation"], data["candidates"])
        finite = np.isfinite(np.asarray(metrics["loss"]))
        best = np.where(finite, np.maximum(best, acc), np.nan)  # a run that went non-finite stays NaN
    return {run: float(b) for run, b in zip(runs, best)}


def quality_data(task: str, mode: str) -> dict:
  """Train/dev arrays at the family's equal encoder length (prompt tuning gets P fewer input tokens)."""
  import numpy as np
  family = _family(task)
  input_len = ENCODER_POSITIONS[family] - (QUALITY_PROMPT_LENGTH if mode == "prompt" else 0)
  out = {split: _task_arrays(task, split, input_len, TARGET_LENGTH[family], limit=4000 if split == "train" else None)
         for split in ("train", "validation")}
  out["candidates"] = np.unique(np.concatenate([out["train"][1], out["validation"][1]]), axis=0)
  return out




def quality(args: argparse.Namespace, mode: str) -> dict:
  """Per task: every learning rate of the grid x `--seeds` seeds (best dev accuracy of each
  run), their mean and std, and the learning rate with the best mean."""
  runner = QualityRunner(mode, args.quality_steps)
  trainable, _ = runner.init(0)
  out = {"demo_trainable_params": int(sum(x.size for x in runner._jax.tree.leaves(trainable)))}
  lrs = [float(x) for x in args.lrs.split(",")] if args.lrs else LR_GRID[mode]
  seeds = list(range(args.seeds))
  for task in [t for t in args.quality_tasks.split(",") if t]:
    t0 = time.perf_counter()
    scores = runner.sweep(task, quality_data(task, mode), lrs, seeds)
    sweep = {f"{lr:g}": [scores[(lr, s)] for s in seeds] for lr in lrs}
    print(json.dumps({"mode": mode, "task": task, "sweep": sweep, "seconds": round(time.perf_counter() - t0, 1),
                      "load": os.getloadavg()[0]}), flush=True)
    out[task] = summarise(sweep)
  return out


def majority_shares(task: str) -> tuple[float, float]:
  """Dev accuracy (%) of always answering the dev split's most common target, and of always
  answering the train split's (what a model that learned only the train labels' prior gives;
  on the RTE sample the train majority is the dev minority). Each split is read once."""
  import numpy as np
  family = _family(task)
  length = ENCODER_POSITIONS[family], TARGET_LENGTH[family]
  _, dev = _task_arrays(task, "validation", *length)
  _, train = _task_arrays(task, "train", *length, limit=4000)
  def share(targets):
    labels, counts = np.unique(targets, axis=0, return_counts=True)
    return 100.0 * np.mean(np.all(dev == labels[counts.argmax()], axis=-1))
  return share(dev), share(train)


def plot(rows: list[dict], tasks: list[str], path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  for task, marker in zip(tasks, "osD^v"):
    done = [r for r in rows if task in r]  # a method cut short misses some tasks
    ax.errorbar([r["demo_trainable_params"] for r in done], [r[task]["mean"] for r in done],
                yerr=[r[task]["std"] for r in done], fmt=marker,
                label=task.replace("_taskless", ""), capsize=2)
  for r in rows:
    if tasks[0] in r:
      ax.annotate(r["mode"], (r["demo_trainable_params"], r[tasks[0]]["mean"]), fontsize=7)
  ax.set_xscale("log")
  ax.set_xlabel("trainable parameters (demo model)")
  ax.set_ylabel("dev accuracy (%), mean +- std over seeds, best lr")
  ax.legend(fontsize=7)
  ax.set_title("Delta tuning on one frozen T5: quality vs parameters")
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def summarise(sweep: dict[str, list[float]]) -> dict:
  """The learning rate with the best mean over seeds (a rate with a non-finite run never
  wins), and that rate's mean and sample std."""
  import numpy as np
  means = {k: (np.mean(v) if np.all(np.isfinite(v)) else -np.inf) for k, v in sweep.items()}
  best_lr = max(means, key=means.get)
  return {"sweep": sweep, "best_lr": best_lr, "mean": float(np.mean(sweep[best_lr])),
          "std": float(np.std(sweep[best_lr], ddof=1)) if len(sweep[best_lr]) > 1 else 0.0}


def merge_rows(runs: list[list[dict]], tasks: list[str]) -> list[dict]:
  """Rows of several runs, one per method in first-seen order, each task's sweeps joined
  (rates in increasing order) and summarised again. Runs must use the same seeds and steps."""
  merged: dict[str, dict] = {}
  for rows in runs:
    for row in rows:
      into = merged.setdefault(row["mode"], {k: v for k, v in row.items() if k not in tasks})
      for task in tasks:
        if task in row:
          sweep = {**into.get(task, {}).get("sweep", {}), **row[task]["sweep"]}
          into[task] = summarise(dict(sorted(sweep.items(), key=lambda kv: float(kv[0]))))
  return list(merged.values())


def report(rows: list[dict], size: str, tasks: list[str], out_dir: str) -> None:
  """The cost table, the quality table (best learning rate's mean +- std, then every rate's
  mean) and the plot, from the rows a run wrote (or `--from_json` reads back)."""
  import numpy as np
  if rows and "median_step_s" in rows[0]:
    prompt_s = next((r["median_step_s"] for r in rows if r["mode"] == "prompt"), float("nan"))
    print(format_table(
        ["method", f"trainable ({size})", "share", "encoder positions", "step s", "step / prompt step", "XLA GB"],
        [(r["mode"], f"{r['trainable_params']:,}", f"{100 * r['share']:.4f}%", str(r["encoder_positions"]),
          fmt(r["median_step_s"], 3), fmt(r["median_step_s"] / prompt_s, 2), fmt(r["xla_gb"], 2)) for r in rows]))
  if tasks:
    shares = {t: majority_shares(t) for t in tasks}

    def cell(q):
      per_lr = " / ".join(f"{np.mean(v):.1f}" for v in q["sweep"].values())
      rates = [float(k) for k in q["sweep"]]
      edge = "^" if float(q["best_lr"]) in (min(rates), max(rates)) and len(set(
          np.mean(v) for v in q["sweep"].values())) > 1 else ""  # best at the grid's edge: its optimum may lie beyond
      return f"**{q['mean']:.1f} +- {q['std']:.1f}** (lr {float(q['best_lr']):.2g}{edge}); {per_lr}"
    def rates(r):  # the learning rates of the per-lr means, in their order (the union over tasks)
      tried = sorted({float(k) for t in tasks if t in r for k in r[t]["sweep"]})
      return ", ".join(f"{x:.2g}" for x in tried)

    print(format_table(["method", "trainable (demo)", "learning rates tried"]
                       + [f"{t.replace('_taskless', '')}: mean +- std (best lr); per-lr means" for t in tasks],
                       [(r["mode"], f"{r['demo_trainable_params']:,}", rates(r))
                        + tuple(cell(r[t]) if t in r else "not run" for t in tasks) for r in rows]
                       + [("dev majority class", "", "") + tuple(f"{shares[t][0]:.1f}" for t in tasks),
                          ("train majority class, on dev", "", "") + tuple(f"{shares[t][1]:.1f}" for t in tasks)]))
    plot(rows, tasks, os.path.join(out_dir, "delta_quality_vs_params.png"))


def main() -> None:
  args = build_parser().parse_args()
  if args.from_json:  # tables and plot again from finished runs, nothing trained
    try:
      saved = [json.load(open(path)) for path in args.from_json]
    except (OSError, ValueError) as e:
      raise SystemExit(f"--from_json: cannot read a run's delta_methods.json ({e})") from None
    tasks = [t for t in saved[0]["args"]["quality_tasks"].split(",") if t] if saved[0]["args"]["quality_steps"] else []
    rows = merge_rows([s["rows"] for s in saved], tasks)
    os.makedirs(args.out_dir, exist_ok=True)
    keep = ("quality_tasks", "quality_steps", "size")
    with open(os.path.join(args.out_dir, "delta_methods.json"), "w") as f:  # the merged runs, read back as one
      json.dump(dict(args={k: saved[0]["args"][k] for k in keep}, rows=rows), f, indent=2)
    report(rows, saved[0]["args"]["size"], tasks, args.out_dir)
    return
  modes = [m for m in args.modes.split(",") if m]
  bad = [m for m in modes if m not in MODES]
  if bad:
    raise SystemExit(f"--modes: unknown {bad}; expected some of {MODES}")
  tasks = [t for t in args.quality_tasks.split(",") if t] if args.quality_steps else []
  os.makedirs(args.out_dir, exist_ok=True)
  rows = []
  for mode in modes:
    row = {"mode": mode}
    if not args.skip_cost:
      row.update(cost(args, mode))
    if tasks:
      row.update(quality(args, mode))
    print(json.dumps(row), flush=True)
    rows.append(row)
    with open(os.path.join(args.out_dir, "delta_methods.json"), "w") as f:  # rewritten as rows finish
      json.dump(dict(args=vars(args), load_average=os.getloadavg(), rows=rows), f, indent=2)
  print(f"load average {os.getloadavg()}")
  report(rows, args.size, tasks, args.out_dir)


if __name__ == "__main__":
  main()
