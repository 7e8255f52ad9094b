"""train(config): frozen backbone -> prompt init -> sharded, resumable loop -> exports.

Reads top to bottom: mesh, model, frozen weights, trainable state, compiled step,
resume, data, loop (metrics, checkpoints, eval, early stopping), export.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from prompt_tuning_jax import data, distributed, methods, sharding
from prompt_tuning_jax.checkpoints import backbone, train_state
from prompt_tuning_jax.config import T5Config
from prompt_tuning_jax.methods import files as delta_files
from prompt_tuning_jax.prompt import PROMPT_PATTERN, initializers, wrapper
from prompt_tuning_jax.prompt import files as prompt_files
from prompt_tuning_jax.trainer import metric_writer, optim
from prompt_tuning_jax.trainer import step as step_lib

Evaluator = Callable[[Any, int], dict[str, float]]  # (full params, step) -> metrics


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
  """Stop when `metric` (e.g. 'accuracy') has not improved for `patience` evaluations."""
  metric: str | None = None
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

  def __post_init__(self):
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
    specs = sharding.logical_specs(jax.eval_shape(
        lambda r: self.model.init(r, *(jnp.ones((1, 2), jnp.int32),) * 3)["params"], jax.random.PRNGKey(0)))
    self.param_shardings = sharding.logical_to_sharding(specs, self.mesh, self.rules)
    backbone_specs = specs
    if cfg.prompt is not None:  # the backbone is everything but the prompt
      _, backbone_specs = optim.split_params(specs, (PROMPT_PATTERN,))
    if cfg.method is not None:  # ... and the method's new leaves
      backbone_specs = methods.backbone_only(backbone_specs, cfg.t5)
    self.frozen, self.checkpoint_step = backbone.load_frozen(
        cfg.initial_checkpoint_path, cfg.t5,
        shardings=sharding.logical_to_sharding(backbone_specs, self.mesh, self.rules))
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(cfg.seed))
    full = _initial_full_params(cfg, self.frozen, init_rng)
    if cfg.method is not None:
      full = methods.add_delta_params(self.model, full, jax.random.fold_in(init_rng, 1))
    trainable, frozen = optim.split_params(full, cfg.trainable_patterns)
    self.frozen = frozen
    optim_cfg = dataclasses.replace(cfg.optim, trainable_patterns=cfg.trainable_patterns)
    if optim_cfg.step_offset == 0 and self.checkpoint_step:
      optim_cfg = dataclasses.replace(optim_cfg, step_offset=self.checkpoint_step)
    self.optimizer = optim.make_optimizer(optim_cfg)
    trainable_sh, frozen_sh = _split_like(self.param_shardings, cfg)
    self.frozen_shardings = frozen_sh
    replicated = sharding.replicated(self.mesh)
    state = step_lib.init_state(jax.device_put(trainable, trainable_sh), self.optimizer, state_rng)
    self.state_shardings = step_lib.TrainState(
        step=replicated, params=trainable_sh,
        opt_state=jax.tree.map(lambda _: replicated, state.opt_state), rng=replicated)
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
    self.meta: dict[str, Any] = {"best": None, "evals_without_improvement": 0, "history": []}
    self.evaluate = cfg.evaluator(cfg, self.model) if cfg.evaluator is not None else None

  def full_params(self) -> dict:
    return optim.merge_params(self.state.params, self.frozen)

  def resume(self) -> None:
    restored = self.checkpointer.restore(self.state)
    if restored is not None:
      self.state, meta = restored
      self.meta.update({k: meta[k] for k in ("best", "evals_without_improvement", "history") if k in meta})

  def save(self) -> None:
    step = int(self.state.step)
    self.checkpointer.save(step, self.state, dict(self.meta, data_position=step))


def _split_like(tree: Any, cfg: TrainConfig) -> tuple[Any, Any]:
  return optim.split_params(tree, cfg.trainable_patterns)


def train(cfg: TrainConfig) -> TrainResult:
  """Train the trainable subtree of `cfg` to `train_steps`, resuming from MODEL_DIR."""
  os.makedirs(cfg.model_dir, exist_ok=True)
  run = _Run(cfg)
  run.resume()
  start = int(run.state.step)
  writer = metric_writer.MetricsWriter(cfg.model_dir, enabled=distributed.is_primary())
  layout = sharding.data_layout(cfg.data.batch_size, run.mesh)
  batches = data.train_batches(cfg.data, skip_batches=start, shard_id=layout.shard_id,
                               num_shards=layout.num_shards,
                               prompt_slots=cfg.prompt.length if cfg.prompt is not None else 0)
  stopped_early = False
  bar = tqdm.tqdm(total=cfg.train_steps, initial=start, disable=not (cfg.progress_bar and distributed.is_primary()),
                  unit="step", dynamic_ncols=True)
  with jax.set_mesh(run.mesh):
    if run.evaluate is not None and start == 0:  # the initial prompt's score: step 0 of the curve
      _evaluate(run, 0, writer)
    t0, steps_since = time.time(), 0
    while int(run.state.step) < cfg.train_steps and not stopped_early:
      batch = sharding.make_global_batch(next(batches), run.mesh, cfg.data.batch_size)
      run.state, step_metrics = run.train_step(run.state, run.frozen, batch)
      step, steps_since = int(run.state.step), steps_since + 1
      bar.update(1)
      if step % cfg.log_period == 0 or step == cfg.train_steps:
        host = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
        elapsed = time.time() - t0
        host["steps_per_sec"] = steps_since / elapsed
        host["examples_per_sec"] = steps_since * cfg.data.batch_size / elapsed
        writer.write(step, host, prefix="train")
        bar.set_postfix(loss=f"{host['cross_entropy']:.3f}", ex_s=f"{host['examples_per_sec']:.1f}")
        t0, steps_since = time.time(), 0
      if run.evaluate is not None and (step % cfg.eval_period == 0 or step == cfg.train_steps):
        stopped_early = _evaluate(run, step, writer)
      if step % cfg.checkpoint_period == 0 or step == cfg.train_steps or stopped_early:
        run.save()
  bar.close()
  trainable = jax.device_get(run.state.params)
  if distributed.is_primary():
    _export(cfg, run, trainable)
  distributed.sync("train_done")
  writer.close()
  return TrainResult(step=int(run.state.step), trainable=trainable, best=run.meta["best"],
                     history=run.meta["history"], stopped_early=stopped_early)


def _evaluate(run: _Run, step: int, writer: "metric_writer.MetricsWriter") -> bool:
  """Run the eval hook, track the best prompt; True when early stopping triggers."""
  cfg = run.cfg
  scores = run.evaluate(run.full_params(), step)
  writer.write(step, scores, prefix="eval")
  run.meta["history"].append(dict(scores, step=step))
  es = cfg.early_stopping
  if es.metric is None:
    return False
  if es.metric not in scores:
    raise KeyError(f"EarlyStopping.metric={es.metric!r} is not among the eval metrics {sorted(scores)}")
  value = float(scores[es.metric])
  best = run.meta["best"]
  better = best is None or (value > best["value"] if es.mode == "max" else value < best["value"])
  if better:
    run.meta["best"] = {"step": step, "metric": es.metric, "value": value}
    run.meta["evals_without_improvement"] = 0
    if cfg.method is not None and distributed.is_primary():  # the best delta, as the best prompt below
      delta_files.save_delta(os.path.join(cfg.model_dir, "best"), cfg.method, cfg.t5, jax.device_get(run.state.params))
    if cfg.prompt is not None and distributed.is_primary():
      prompt_files.save_npy(os.path.join(cfg.model_dir, "best", "prompt.npy"),
                         np.asarray(jax.device_get(wrapper.get_prompt(run.state.params))))
      with open(os.path.join(cfg.model_dir, "best", "best.json"), "w") as f:
        json.dump(run.meta["best"], f)
  else:
    run.meta["evals_without_improvement"] += 1
  return es.patience is not None and run.meta["evals_without_improvement"] >= es.patience


def _export(cfg: TrainConfig, run: _Run, trainable: Any) -> None:
  """The final prompt as .npy and in the original release's numpy_checkpoints layout;
  a method's trained leaves as `delta.safetensors` (methods/files.py)."""
  if cfg.method is not None:
    delta_files.save_delta(cfg.model_dir, cfg.method, cfg.t5, trainable)
  if cfg.prompt is None:
    return
  prompt = np.asarray(wrapper.get_prompt(trainable))
  step = int(run.state.step) + run.checkpoint_step
  prompt_files.save_npy(os.path.join(cfg.model_dir, "prompt.npy"), prompt)
  prompt_files.save_numpy_checkpoint(cfg.model_dir, step, prompt)
