"""train(config): frozen backbone -> prompt init -> sharded, resumable loop -> exports.

Reads top to bottom: mesh, model, frozen weights, trainable state, compiled step,
resume, data, loop (metrics, checkpoints, eval, early stopping), export.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from typing import Any, Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from prompt_tuning_jax import methods

from prompt_tuning_jax.parallel import distributed, sharding

from prompt_tuning_jax.text import data
from prompt_tuning_jax.checkpoints import backbone, fs, t5x, train_state
from prompt_tuning_jax.model.config import T5Config
from prompt_tuning_jax.methods import files as delta_files
from prompt_tuning_jax.prompt import PROMPT_PATH, initializers, wrapper
from prompt_tuning_jax.prompt import files as prompt_files
from prompt_tuning_jax.trainer import metric_writer, optim, preemption, run_lock
from prompt_tuning_jax.trainer import step as step_lib

Evaluator = Callable[[Any, int], dict[str, float]]  # (full params, step) -> metrics


class NonFiniteError(FloatingPointError):
  """A step's update was not finite (a logged metric, the new params or optimizer state):
  the run stopped with nothing non-finite saved, or, under 'skip', trained nothing at all."""


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
  """Stop when `metric` has not improved for `patience` evaluations.

  `metric` is one eval metric ('accuracy') or several, selected on their mean (the paper's
  rule for multi-metric tasks, e.g. ('macro_f1', 'accuracy') for CB).
  """
  metric: str | tuple[str, ...] | None = None
  mode: str = "max"
  patience: int | None = None

  def __post_init__(self):
    if self.mode not in ("max", "min"):
      raise ValueError(f"EarlyStopping.mode must be 'max' or 'min', got {self.mode!r}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything a run needs; gin binds it (gin/runs/*.gin), the CLI only parses flags."""
  model_dir: str
  initial_checkpoint_path: str
  t5: T5Config = T5Config()
  data: data.DataConfig = data.DataConfig()
  prompt: wrapper.PromptConfig | None = wrapper.PromptConfig()
  prompt_init: initializers.Initializer = initializers.uniform_symmetric(0.5)
  method: methods.DeltaMethod | None = None  # a delta method (gin/methods/*.gin); sets what trains
  optim: optim.OptimConfig = optim.OptimConfig()
  loss: step_lib.LossConfig = step_lib.LossConfig()
  partition: sharding.PartitionConfig = sharding.PartitionConfig()
  train_steps: int = 30000
  eval_period: int = 1000
  checkpoint_period: int = 1000
  keep_checkpoints: int = 3
  log_period: int = 10
  early_stopping: EarlyStopping = EarlyStopping()
  evaluator: Callable[["TrainConfig", Any], Evaluator] | None = None  # built once, called per eval
  seed: int = 0
  progress_bar: bool = True
  # An update with NaN/Inf anywhere (loss, a norm, the new params or optimizer state; it is
  # never applied): "stop" (raise NonFiniteError, keep the last good checkpoint, save nothing)
  # or "skip" (drop that update, record its step, go on; fail at the end if every step was).
  on_nonfinite: str = "stop"
  # Model tuning as the paper: start Adafactor from the checkpoint's second moments where it
  # has them (T5X checkpoints; HF folders and random weights carry none).
  restore_optimizer_state: bool = False

  def __post_init__(self):
    if self.on_nonfinite not in ("stop", "skip"):
      raise ValueError(f"TrainConfig.on_nonfinite must be 'stop' or 'skip', got {self.on_nonfinite!r}")
    for name in ("train_steps", "eval_period", "checkpoint_period", "keep_checkpoints", "log_period"):
      if getattr(self, name) <= 0:
        raise ValueError(f"TrainConfig.{name} must be > 0, got {getattr(self, name)}")
    if not self.model_dir:
      raise ValueError("TrainConfig.model_dir (MODEL_DIR) is empty")
    if self.method is not None and self.optim.trainable_patterns != optim.OptimConfig().trainable_patterns:
      raise ValueError(f"TrainConfig.method={self.method.name!r} names what trains; leave "
                       f"OptimConfig.trainable_patterns unset (got {self.optim.trainable_patterns})")

  @property
  def trainable_patterns(self) -> tuple[str, ...]:
    """The method's patterns (plus the prompt's, if any), or OptimConfig's without a method."""
    if self.method is None:
      return self.optim.trainable_patterns
    return methods.trainable_patterns(self.method, self.t5, with_prompt=self.prompt is not None)


@dataclasses.dataclass
class TrainResult:
  step: int
  trainable: Any  # host numpy copy of the trained params (the prompt for prompt tuning)
  best: dict[str, Any] | None
  history: list[dict[str, float]]
  stopped_early: bool
  preempted: bool = False  # SIGTERM: checkpoint saved, nothing exported; rerun to resume


def _initial_full_params(cfg: TrainConfig, frozen: dict, rng: jax.Array) -> dict:
  """Frozen weights plus the freshly initialized prompt (when there is one)."""
  if cfg.prompt is None:
    return frozen
  embedding = frozen["token_embedder"]["embedding"]
  shape = cfg.prompt.shape(cfg.t5.emb_dim)
  if cfg.prompt.num_prompts == 1:
    value = cfg.prompt_init(rng, shape, embedding)
  else:
    keys = jax.random.split(rng, cfg.prompt.num_prompts)
    value = jnp.stack([cfg.prompt_init(k, shape[1:], embedding) for k in keys])
  value = jnp.asarray(value, jnp.float32)
  if value.shape != shape:
    raise ValueError(f"prompt_init returned shape {value.shape}; PromptConfig wants {shape}")
  return wrapper.set_prompt(frozen, value)


class _Run:
  """The pieces of one run, assembled in order; `loop` drives them."""

  def __init__(self, cfg: TrainConfig):
    self.cfg = cfg
    self.mesh = sharding.make_mesh(cfg.partition)
    self.rules = cfg.partition.rules
    self.model = methods.make_model(cfg.t5, cfg.prompt, cfg.method)
    abstract = abstract_params(self.model)  # the one trace of the model's parameters: shapes and logical axes
    labels = optim.label_tree(abstract, cfg.trainable_patterns)  # the one trainable/frozen split
    self.param_shardings = sharding.logical_to_sharding(sharding.logical_specs(abstract), self.mesh, self.rules)
    self.frozen, self.checkpoint_step = backbone.load_frozen(
        cfg.initial_checkpoint_path, cfg.t5, shardings=_backbone_part(self.param_shardings, cfg),
        expected=_backbone_part(abstract, cfg))
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(cfg.seed))
    full = _initial_full_params(cfg, self.frozen, init_rng)
    if cfg.method is not None:
      full = methods.add_delta_params(self.model, full, jax.random.fold_in(init_rng, 1))
    trainable, self.frozen = optim.split_by_labels(full, labels)
    if not trainable:
      raise ValueError(f"trainable patterns {cfg.trainable_patterns} match no parameter")
    trainable = jax.tree.map(lambda x: x.astype(jnp.float32), trainable)  # even with bfloat16 weight storage
    optim_cfg = dataclasses.replace(cfg.optim, trainable_patterns=cfg.trainable_patterns)
    if optim_cfg.step_offset == 0 and self.checkpoint_step:
      optim_cfg = dataclasses.replace(optim_cfg, step_offset=self.checkpoint_step)
    trainable_labels, _ = optim.split_by_labels(labels, labels)
    self.optimizer = optim.make_optimizer(optim_cfg, trainable_labels)
    trainable_sh, frozen_sh = optim.split_by_labels(self.param_shardings, labels)
    self.frozen_shardings = frozen_sh
    replicated = sharding.replicated(self.mesh)
    state = step_lib.init_state(jax.device_put(trainable, trainable_sh), self.optimizer, state_rng)
    if cfg.restore_optimizer_state:
      state = state.replace(opt_state=_checkpoint_optimizer_state(cfg.initial_checkpoint_path, state.opt_state))
    self.state_shardings = state_shardings(state, trainable_sh, self.mesh)
    self.state = jax.device_put(state, self.state_shardings)
    self.batch_sharding = sharding.batch_sharding(self.mesh)
    self.train_step = step_lib.jit_train_step(
        self.model, self.optimizer, cfg.loss,
        in_shardings=(self.state_shardings, frozen_sh, self.batch_sharding),
        out_shardings=(self.state_shardings, replicated))
    fingerprint = {"backbone": train_state.backbone_fingerprint(cfg.t5, full["token_embedder"]["embedding"]),
                   "trainable": json.dumps(train_state.trainable_signature(trainable))}
    self.checkpointer = train_state.TrainCheckpointer(cfg.model_dir, keep=cfg.keep_checkpoints,
                                                        fingerprint=fingerprint)
    self.meta: dict[str, Any] = {"best": None, "evals_without_improvement": 0, "history": [],
                                 "skipped_steps": []}
    self.evaluate = cfg.evaluator(cfg, self.model) if cfg.evaluator is not None else None

  def full_params(self) -> dict:
    return optim.merge_params(self.state.params, self.frozen)

  def resume(self) -> None:
    restored = self.checkpointer.restore(self.state)
    if restored is not None:
      self.state, meta = restored
      self.meta.update({k: meta[k] for k in ("best", "evals_without_improvement", "history", "skipped_steps")
                        if k in meta})

  def save(self) -> None:
    """Train state, plus the prompt as a numpy checkpoint at the global step (as the original)."""
    step = int(self.state.step)
    self.checkpointer.save(step, self.state, dict(self.meta, data_position=step))
    if self.cfg.prompt is not None and distributed.is_primary():
      prompt = np.asarray(jax.device_get(wrapper.get_prompt(self.state.params)))
      prompt_files.save_numpy_checkpoint(self.cfg.model_dir, self.checkpoint_step + step, prompt)


def _checkpoint_optimizer_state(path: str, opt_state: Any) -> Any:
  """The fresh optimizer state with the T5X checkpoint's Adafactor moments, where present."""
  if backbone.detect_format(path) != "t5x":
    logging.info("restore_optimizer_state: %s carries no optimizer state; Adafactor starts fresh", path)
    return opt_state
  index = t5x.open_t5x_checkpoint(path)
  read = lambda name: index.read(name, states=True) if name in index.states else None
  opt_state, count = optim.restore_adafactor_states(opt_state, read)
  logging.info("restore_optimizer_state: %d Adafactor states restored from %s", count, path)
  return opt_state


def abstract_params(model: Any) -> Any:
  """Boxed ShapeDtypeStructs of the full tree (frozen model + prompt), nothing allocated."""
  return jax.eval_shape(lambda r: model.init(r, *(jnp.ones((1, 2), jnp.int32),) * 3)["params"],
                        jax.random.PRNGKey(0))


def state_shardings(state: Any, trainable_sh: Any, mesh: Any) -> step_lib.TrainState:
  """Trainable params as their rules say; step, rng and the (small) Adafactor state replicated.
  Used by the run and by the ahead-of-time compile plan (`compile_plan.py`), so both agree."""
  replicated = sharding.replicated(mesh)
  return step_lib.TrainState(step=replicated, params=trainable_sh,
                             opt_state=jax.tree.map(lambda _: replicated, state.opt_state), rng=replicated)


def _backbone_part(tree: dict, cfg: TrainConfig) -> dict:
  """The frozen checkpoint's part of a full parameter tree (values, abstract params or
  shardings): everything but the prompt subtree at PROMPT_PATH[:2] and a method's leaves."""
  encoder = {k: v for k, v in tree["encoder"].items() if k != PROMPT_PATH[1]}
  tree = {**tree, "encoder": encoder}
  return methods.backbone_only(tree, cfg.t5) if cfg.method is not None else tree


def train(cfg: TrainConfig, on_ready: Callable[[], None] | None = None) -> TrainResult:
  """Train the trainable subtree of `cfg` to `train_steps`, resuming from MODEL_DIR.

  The run first takes MODEL_DIR's lock (one run per folder; a second is refused naming the
  holder) and holds it to the end, exceptions included. Then every check (folder kinds,
  backbone, resume fingerprint and shapes, a non-finite saved state) runs before the first
  byte under MODEL_DIR changes; `on_ready` (e.g. writing config.gin) runs once they passed."""
  distributed.require_initialized()  # several processes acting alone would share MODEL_DIR
  with run_folder_lock(cfg.model_dir):
    return _train(cfg, on_ready)


@contextlib.contextmanager
def run_folder_lock(model_dir: str) -> Iterator[None]:
  """MODEL_DIR's run lock (trainer/run_lock.py) for the block: the primary process takes it,
  the others learn whether it could (and all refuse alike)."""
  with contextlib.ExitStack() as stack:
    refusal = None
    if distributed.is_primary():
      try:
        stack.enter_context(run_lock.hold(model_dir))
      except run_lock.RunLockedError as e:
        refusal = e
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      if not int(multihost_utils.broadcast_one_to_all(np.int32(refusal is None))) and refusal is None:
        refusal = run_lock.RunLockedError(f"{model_dir} is in use by another run (the primary process names it)")
    if refusal is not None:
      raise refusal
    yield


# Under MODEL_DIR: what must be a folder, what a file, if present at all.
_FOLDERS = ("train_state", "numpy_checkpoints", "best", "tensorboard")
_FILES = ("metrics.jsonl", "config.gin", "prompt.npy")


def check_run_folder(model_dir: str) -> None:
  """Refuse a MODEL_DIR whose parts have the wrong kind (e.g. `train_state` a file), before
  anything loads or changes; otherwise this is found only at the first save."""
  if fs.exists(model_dir) and not fs.isdir(model_dir):
    raise NotADirectoryError(f"MODEL_DIR {model_dir} is a file, not a folder: use another MODEL_DIR")
  for name in _FOLDERS + _FILES:
    path = fs.join(model_dir, name)
    if not fs.exists(path):
      continue
    folder = fs.isdir(path)
    if folder != (name in _FOLDERS):
      raise NotADirectoryError(f"{path} is a {'folder' if folder else 'file'}; a run keeps a "
                               f"{'file' if folder else 'folder'} there. Move it away or use another MODEL_DIR")


def _train(cfg: TrainConfig, on_ready: Callable[[], None] | None) -> TrainResult:
  """`train` under the run lock: checks, then changes, then the loop."""
  check_run_folder(cfg.model_dir)  # every process: all refuse alike, none waits on a refused primary
  run = _Run(cfg)
  run.resume()
  # Every check passed: from here on MODEL_DIR changes.
  run.checkpointer.tidy()  # damaged steps aside, interrupted saves' temporary folders removed
  fs.makedirs(cfg.model_dir)
  if on_ready is not None:
    on_ready()
  start = int(run.state.step)
  writer = metric_writer.MetricsWriter(cfg.model_dir, enabled=distributed.is_primary(), resume_step=start)
  layout = sharding.data_layout(cfg.data.batch_size, run.mesh)
  batches = data.train_batches(cfg.data, skip_batches=start, shard_id=layout.shard_id,
                               num_shards=layout.num_shards,
                               prompt_slots=cfg.prompt.length if cfg.prompt is not None else 0)
  stopped_early = preempted = False
  bar = tqdm.tqdm(total=cfg.train_steps, initial=start, disable=not (cfg.progress_bar and distributed.is_primary()),
                  unit="step", dynamic_ncols=True)
  bar_fields: dict[str, str] = {}
  # The rules make the model's activation constraints real while the step is traced.
  with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules), preemption.PreemptionWatch() as watch:
    if run.evaluate is not None and start == 0:  # the initial prompt's score: step 0 of the curve
      _evaluate(run, 0, writer)
      bar.set_postfix(progress_fields(bar_fields, scores=run.meta["history"][-1]))
    t0, steps_since = time.time(), 0
    while int(run.state.step) < cfg.train_steps and not stopped_early:
      batch = sharding.make_global_batch(next(batches), run.mesh, cfg.data.batch_size)
      run.state, step_metrics = run.train_step(run.state, run.frozen, batch)
      step, steps_since = int(run.state.step), steps_since + 1
      _guard_nonfinite(run, step, step_metrics, writer)
      bar.update(1)
      if step % cfg.log_period == 0 or step == cfg.train_steps:
        host = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
        elapsed = time.time() - t0
        host["steps_per_sec"] = steps_since / elapsed
        host["examples_per_sec"] = steps_since * cfg.data.batch_size / elapsed
        writer.write(step, host, prefix="train")
        bar.set_postfix(progress_fields(bar_fields, train=host))
        t0, steps_since = time.time(), 0
      if run.evaluate is not None and (step % cfg.eval_period == 0 or step == cfg.train_steps):
        stopped_early = _evaluate(run, step, writer)
        bar.set_postfix(progress_fields(bar_fields, scores=run.meta["history"][-1]))
      preempted = watch.should_stop(step)
      if step % cfg.checkpoint_period == 0 or step == cfg.train_steps or stopped_early or preempted:
        writer.flush()  # before the save: lines past a checkpoint are dropped on resume, lines short of one are lost
        run.save()
      if preempted:
        break
  bar.close()
  trainable = jax.device_get(run.state.params)
  if preempted:
    if distributed.is_primary():
      print(f"preempted at step {int(run.state.step)}; rerun the same command to resume "
            f"(checkpoint saved in {run.checkpointer.directory})", flush=True)
    writer.close()
    return TrainResult(step=int(run.state.step), trainable=trainable, best=run.meta["best"],
                       history=run.meta["history"], stopped_early=False, preempted=True)
  _refuse_untrained(cfg, int(run.state.step), run.meta["skipped_steps"], writer)
  if distributed.is_primary():
    _export(cfg, run, trainable)
  distributed.sync("train_done")
  writer.close()
  return TrainResult(step=int(run.state.step), trainable=trainable, best=run.meta["best"],
                     history=run.meta["history"], stopped_early=stopped_early)


def _guard_nonfinite(run: _Run, step: int, step_metrics: dict, writer: "metric_writer.MetricsWriter") -> None:
  """Per step: one device bool, fetched where the loop already syncs on the step count.
  The step itself never applied a non-finite update; here we record it and stop, or count
  the skip (in meta's `skipped_steps`, saved with each checkpoint) and go on."""
  if bool(step_metrics["all_finite"]):
    return
  cfg, skipped = run.cfg, run.meta["skipped_steps"]
  host = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
  if cfg.on_nonfinite == "stop" or not (step % cfg.log_period == 0 or step == cfg.train_steps):
    writer.write(step, host, prefix="train")  # else the loop's own log line records it
  where = f"step {step}: {nonfinite_culprits(host)}"
  if cfg.on_nonfinite == "skip":
    skipped.append(step)
    logging.warning("%s; update skipped (TrainConfig.on_nonfinite='skip'; %d skipped so far)", where, len(skipped))
    return
  writer.close()
  last = run.checkpointer.latest_step()
  kept = (f"the last good checkpoint, step {last} in {run.checkpointer.directory}, is kept" if last is not None
          else f"no checkpoint was saved before it ({run.checkpointer.directory} not written)")
  raise NonFiniteError(f"training stopped at {where}; the update was not applied and nothing was saved for "
                       f"this step; {kept}. Lower the learning rate, check the initial prompt and data, or set "
                       "TrainConfig.on_nonfinite='skip'.")


_NORMS = ("loss", "grad_norm", "update_norm", "param_norm")


def nonfinite_culprits(host: dict[str, float]) -> str:
  """What was not finite in a step's host metrics, e.g. 'update_norm=inf and param_norm=inf'."""
  names = _NORMS + tuple(sorted(k for k in host if k not in _NORMS))
  bad = [f"{k}={host[k]}" for k in names if k in host and not np.isfinite(host[k])]
  if not host.get("opt_state_finite", 1.0):
    bad.append("the new optimizer state")
  return " and ".join(bad or ["the new parameters"]) + " not finite"


def _refuse_untrained(cfg: TrainConfig, step: int, skipped: list[int], writer: "metric_writer.MetricsWriter") -> None:
  """Under 'skip': a run whose every update was dropped has nothing good to export."""
  if step == 0 or len(skipped) < step:
    return
  writer.close()
  raise NonFiniteError(f"every update of this run was non-finite and skipped (steps {_ranges(skipped)}); nothing "
                       "trained, so nothing was exported. Lower the learning rate, or check the initial prompt "
                       "and data.")


def _ranges(steps: list[int]) -> str:
  """[1, 2, 3, 7] -> '1-3, 7'."""
  out, steps = [], sorted(steps)
  for s in steps:
    if out and s == out[-1][1] + 1:
      out[-1][1] = s
    else:
      out.append([s, s])
  return ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in out)


def progress_fields(fields: dict[str, str], *, train: dict[str, float] | None = None,
                    scores: dict[str, float] | None = None) -> dict[str, str]:
  """The progress bar's postfix, updated in place: the logged `loss` (metrics.jsonl's
  train/loss: summed over target tokens, as T5X), the per-token `cross_entropy` and the
  examples/s of the last log line, then the metrics of the latest evaluation."""
  if train is not None:
    fields.update(loss=f"{train['loss']:.6g}", ce=f"{train['cross_entropy']:.4g}",
                  ex_s=f"{train['examples_per_sec']:.1f}")
  if scores is not None:
    for key in [k for k in fields if k.startswith("eval_")]:
      del fields[key]
    fields.update({f"eval_{k}": f"{v:.4g}" for k, v in scores.items()
                   if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)})
  return fields


def _evaluate(run: _Run, step: int, writer: "metric_writer.MetricsWriter") -> bool:
  """Run the eval hook, track the best prompt; True when early stopping triggers."""
  cfg = run.cfg
  scores = run.evaluate(run.full_params(), step)
  writer.write(step, scores, prefix="eval")
  run.meta["history"].append(dict(scores, step=step))
  es = cfg.early_stopping
  if es.metric is None:
    return False
  value = selection_value(scores, es.metric)
  best = run.meta["best"]
  better = best is None or (value > best["value"] if es.mode == "max" else value < best["value"])
  if better:
    run.meta["best"] = {"step": step, "global_step": run.checkpoint_step + step, "metric": es.metric,
                        "value": value}
    run.meta["evals_without_improvement"] = 0
    if cfg.method is not None and distributed.is_primary():  # the best delta, as the best prompt below
      delta_files.save_delta(fs.join(cfg.model_dir, "best"), cfg.method, cfg.t5, jax.device_get(run.state.params))
    if cfg.prompt is not None and distributed.is_primary():
      prompt_files.save_npy(fs.join(cfg.model_dir, "best", "prompt.npy"),
                            np.asarray(jax.device_get(wrapper.get_prompt(run.state.params))))
      fs.atomic_write(fs.join(cfg.model_dir, "best", "best.json"), json.dumps(run.meta["best"]))
  else:
    run.meta["evals_without_improvement"] += 1
  return es.patience is not None and run.meta["evals_without_improvement"] >= es.patience


def selection_value(scores: dict[str, float], metric: str | tuple[str, ...]) -> float:
  """The early-stopping value: one metric, or the mean of several."""
  names = (metric,) if isinstance(metric, str) else tuple(metric)
  missing = [n for n in names if n not in scores]
  if missing or not names:
    raise KeyError(f"EarlyStopping.metric={metric!r}: {missing} not among the eval metrics {sorted(scores)}")
  return float(np.mean([float(scores[n]) for n in names]))


def _export(cfg: TrainConfig, run: _Run, trainable: Any) -> None:
  """The final prompt as .npy and in the original release's numpy_checkpoints layout;
  a method's trained leaves as `delta.safetensors` (methods/files.py)."""
  if cfg.method is not None:
    delta_files.save_delta(cfg.model_dir, cfg.method, cfg.t5, trainable)
  if cfg.prompt is None:
    return
  prompt = np.asarray(wrapper.get_prompt(trainable))
  step = int(run.state.step) + run.checkpoint_step
  prompt_files.save_npy(fs.join(cfg.model_dir, "prompt.npy"), prompt)
  prompt_files.save_numpy_checkpoint(cfg.model_dir, step, prompt)
