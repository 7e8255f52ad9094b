"""Per-device memory plan for a training run, from abstract shapes only (nothing allocated).

Answers "does T5-XXL prompt tuning at batch 32 fit on a v3-32 with 16-way model
parallelism?" before a pod is rented. Parameter shard sizes come from the real model
(`t5.param_shapes`, i.e. `jax.eval_shape(model.init)`) and the real rules table
(`sharding.standard_logical_axis_rules`): shard dim = ceil(dim / product of the mesh
axis sizes it maps to). Activations follow `activation_bytes`, where the formulas are
documented. There are two estimates. The fused one is the default verdict: XLA on
TPU/GPU fuses casts and elementwise ops. The unfused one is JAX's raw residual set,
which is what XLA:CPU keeps, and it is printed for comparison.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

from prompt_tuning_jax.parallel import sharding
from prompt_tuning_jax.model.config import REMAT_POLICIES, T5Config
from prompt_tuning_jax.model import t5
from prompt_tuning_jax.prompt import PROMPT_PATTERN, PROMPT_VARIABLE

GIB = 1024 ** 3
ADAFACTOR_MIN_DIM_TO_FACTOR = 128  # optax / T5X default


@dataclasses.dataclass(frozen=True)
class Topology:
  """A slice as jax sees it: `num_devices` entries in jax.devices(), HBM per device."""
  name: str
  num_devices: int
  device_memory_gib: float
  device_kind: str
  devices_per_host: int
  usable_fraction: float  # share of HBM a training step may plan for (see TPU_/GPU_ notes)

  @property
  def num_hosts(self) -> int:
    return max(1, self.num_devices // self.devices_per_host)


# Name suffix N counts: TPU v2/v3 cores (one jax device per core, 8 per host), v4/v5p
# TensorCores (2 per chip, one megacore jax device per chip, 4 chips per host), v5e/v6e
# chips (one core each). GiB per jax device. 10% is kept back for XLA's own buffers,
# the program and fragmentation.
_TPU = {"v2": (1, 8.0, "TPU v2 core", 8), "v3": (1, 16.0, "TPU v3 core", 8),
        "v4": (2, 32.0, "TPU v4 chip", 4), "v5p": (2, 95.0, "TPU v5p chip", 4),
        "v5e": (1, 16.0, "TPU v5e chip", 4), "v5litepod": (1, 16.0, "TPU v5e chip", 4),
        "v6e": (1, 32.0, "TPU v6e chip", 4)}
TPU_USABLE_FRACTION = 0.9
# GiB as the driver reports it. jax preallocates 75% of GPU memory by default
# (XLA_PYTHON_CLIENT_MEM_FRACTION), so that is what a run can use unless raised.
_GPU = {"H100": 79.6, "H200": 140.4, "A100-80GB": 80.0, "A100-40GB": 40.0, "A100": 40.0,
        "L4": 22.5, "V100": 16.0}
GPU_USABLE_FRACTION = 0.75


def parse_topology(name: str) -> Topology:
  """'v3-32', 'v4-64', 'v5e-16', 'v5p-128', '8xH100', '16xA100-80GB' -> Topology."""
  m = re.fullmatch(r"(v2|v3|v4|v5e|v5litepod|v5p|v6e)-(\d+)", name)
  if m:
    per_device, gib, kind, per_host = _TPU[m.group(1)]
    n = int(m.group(2))
    if n < per_device or n % per_device:
      raise ValueError(f"--topology {name}: {m.group(1)} sizes count TensorCores, must be a multiple of {per_device}")
    devices = n // per_device
    per_host = min(devices, 8 if m.group(1) in ("v2", "v3") or devices <= 8 else per_host)
    return Topology(name, devices, gib, kind, per_host, TPU_USABLE_FRACTION)
  m = re.fullmatch(r"(\d+)x([A-Za-z0-9-]+)", name)
  if m and m.group(2) in _GPU:
    n = int(m.group(1))
    return Topology(name, n, _GPU[m.group(2)], f"NVIDIA {m.group(2)}", min(n, 8), GPU_USABLE_FRACTION)
  raise ValueError(f"--topology {name!r} not understood; expected e.g. v2-8, v3-32, v4-64, v5e-16, v5p-128, "
                   f"v6e-8 or NxGPU with GPU in {sorted(_GPU)}; or give --num_devices and --device_memory_gib")


@dataclasses.dataclass(frozen=True)
class RunShape:
  """What one training step sees (the paper: batch 32, inputs 512 + 100 prompt, targets 8)."""
  batch_size: int = 32
  input_length: int = 512
  target_length: int = 8
  prompt_length: int = 100
  mode: str = "prompt"  # 'prompt': only the prompt trains; 'model': every weight trains
  activation_dtype: str = "bfloat16"
  param_dtype: str = "float32"
  dropout_rate: float = 0.0
  momentum: bool = False  # Adafactor first moment (off in the paper / T5X default)
  remat: bool | str = False  # T5Config.remat_policy: 'none' | 'full' | 'dots' (True = 'full')
  fused: bool = True  # plan with the fused (TPU/GPU) activation estimate, else JAX's raw residuals
  num_microbatches: int = 1  # LossConfig.num_microbatches: activations of one piece at a time

  def __post_init__(self):
    policy = {True: "full", False: "none"}.get(self.remat, self.remat)
    if policy not in REMAT_POLICIES:
      raise ValueError(f"--remat must be one of {REMAT_POLICIES}, got {self.remat!r}")
    object.__setattr__(self, "remat", policy)
    if self.num_microbatches < 1 or self.batch_size % self.num_microbatches:
      raise ValueError(f"--num_microbatches {self.num_microbatches} must be >= 1 and divide --batch_size "
                       f"{self.batch_size}")
    if self.mode not in ("prompt", "model"):
      raise ValueError(f"--mode must be 'prompt' or 'model', got {self.mode!r}")
    for name in ("batch_size", "input_length", "target_length"):
      if getattr(self, name) < 1:
        raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
    if self.prompt_length < 0 or (self.mode == "prompt" and self.prompt_length == 0):
      raise ValueError(f"--prompt_length must be >= 1 in prompt mode (>= 0 otherwise), got {self.prompt_length}")


@dataclasses.dataclass(frozen=True)
class PlanConfig:
  """A training run as the planner reads it: the configurables the run builds, bound by
  gin (gin/runs/plan.gin), so a model file + runs/prompt_tuning.gin describe the run.

  Duck-typed so this leaf imports no data or trainer code: `data` has batch_size and
  task_feature_lengths, `prompt` a length (None: no prompt, as in model tuning), `optim`
  trainable_patterns, `loss` enable_dropout and num_microbatches.
  """
  t5: T5Config
  data: Any
  prompt: Any
  optim: Any
  loss: Any
  partition: sharding.PartitionConfig = sharding.PartitionConfig()

  def run_settings(self) -> dict[str, Any]:
    """The RunShape and PartitionConfig fields this run fixes, by name."""
    lengths = self.data.task_feature_lengths
    patterns = self.optim.trainable_patterns
    return {"batch_size": self.data.batch_size, "input_length": lengths["inputs"],
            "target_length": lengths["targets"], "prompt_length": self.prompt.length if self.prompt else 0,
            "mode": "prompt" if all("prompt" in p for p in patterns) else "model",
            "activation_dtype": self.t5.dtype,
            "dropout_rate": self.t5.dropout_rate if self.loss.enable_dropout else 0.0,
            "num_partitions": self.partition.num_partitions,
            "model_parallel_submesh": self.partition.model_parallel_submesh,
            "parameter_partitioning_dims": self.partition.parameter_partitioning_dims,
            "num_microbatches": self.loss.num_microbatches, "remat": self.t5.remat_policy,
            "param_dtype": self.t5.weight_dtype}


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
  """Bytes per device for each component, and the verdict."""
  topology: Topology
  mesh: tuple[int, int]  # (data, model)
  frozen_params: int
  trainable_params: int
  gradients: int
  optimizer_state: int
  activations: int  # kept for backprop, per `RunShape.fused`
  transient: int
  activations_unfused: int  # JAX's raw residual set (what XLA:CPU keeps), for comparison
  notes: tuple[str, ...] = ()

  @property
  def total(self) -> int:
    return (self.frozen_params + self.trainable_params + self.gradients + self.optimizer_state
            + self.activations + self.transient)

  @property
  def usable(self) -> int:
    return int(self.topology.device_memory_gib * GIB * self.topology.usable_fraction)

  @property
  def fits(self) -> bool:
    return self.total <= self.usable

  @property
  def headroom(self) -> int:
    return self.usable - self.total


def param_table(config: T5Config, prompt_length: int) -> dict[str, tuple[tuple[int, ...], tuple]]:
  """'/'-name -> (global shape, logical axes) for the model (eval_shape) plus the prompt."""
  table = dict(_model_param_table(config))
  if prompt_length:
    table[PROMPT_VARIABLE] = ((prompt_length, config.emb_dim), ("prompt", "prompt_embed"))
  return table


@functools.lru_cache(maxsize=16)
def _model_param_table(config: T5Config) -> tuple[tuple[str, tuple[tuple[int, ...], tuple]], ...]:
  shapes = t5.param_shapes(config)  # jax.eval_shape(model.init): nothing allocated
  specs = traverse_util.flatten_dict(nn.get_partition_spec(shapes), sep="/")
  values = traverse_util.flatten_dict(nn.unbox(shapes), sep="/")
  return tuple((name, (tuple(v.shape), tuple(specs[name]))) for name, v in values.items())


def shard_numel(shape: tuple[int, ...], logical_axes: tuple, rules: Any, mesh_sizes: dict[str, int]) -> int:
  """Elements one device holds: each dim / sizes of the mesh axes it maps to (rounded up)."""
  mesh_axes = nn.logical_to_mesh_axes(logical_axes, rules)
  n = 1
  for i, dim in enumerate(shape):
    axes = mesh_axes[i] if i < len(mesh_axes) else None
    axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    n *= -(-dim // math.prod(mesh_sizes[a] for a in axes))
  return n


def adafactor_state_numel(shape: tuple[int, ...], momentum: bool = False, factored: bool = True) -> int:
  """Adafactor state elements (optax's rules): rows + cols when factored and the two
  largest dims are >= 128, else a full second moment; plus a full first moment with
  momentum. `optim.py` forces the prompt unfactored (factored=False)."""
  numel = math.prod(shape)
  if factored and len(shape) >= 2 and sorted(shape)[-2] >= ADAFACTOR_MIN_DIM_TO_FACTOR:
    order = np.argsort(shape)
    second = numel // shape[order[-1]] + numel // shape[order[-2]]
  else:
    second = numel
  return second + (numel if momentum else 0)


@dataclasses.dataclass(frozen=True)
class _Dims:
  """Per-device sizes: b = B/data, h = ceil(H/model), f = ceil(d_ff/model), v = ceil(V/model)."""
  b: int  # rows of one microbatch on one device
  L: int  # encoder length incl. prompt
  T: int
  d: int
  hk: int  # h * d_head
  h: int
  f: int
  v: int
  a: int  # activation dtype bytes


def _dims(config: T5Config, run: RunShape, data: int, model: int) -> _Dims:
  if run.batch_size % data:
    raise ValueError(f"--batch_size {run.batch_size} is not divisible by the data-parallel size {data} "
                     "(devices / --num_partitions)")
  if (run.batch_size // data) % run.num_microbatches:
    raise ValueError(f"--num_microbatches {run.num_microbatches} does not divide the {run.batch_size // data} "
                     f"rows each data-parallel replica holds (batch {run.batch_size} / data {data})")
  h = -(-config.num_heads // model)
  return _Dims(b=run.batch_size // data // run.num_microbatches, L=run.input_length + run.prompt_length, T=run.target_length,
               d=config.emb_dim, hk=h * config.head_dim, h=h, f=-(-config.mlp_dim // model),
               v=-(-config.vocab_size // model), a=np.dtype(jax.numpy.dtype(run.activation_dtype)).itemsize)


def _fused_layers(cfg: T5Config, x: _Dims, model_mode: bool) -> tuple[int, int, int]:
  """What backprop must keep when XLA fuses casts and elementwise ops (TPU/GPU).

  Prompt tuning differentiates w.r.t. the input embeddings only, so no matmul input
  is kept for weight gradients; elementwise results (GELU, norm scaling, casts) are
  recomputed inside the backward fusions from these dot / reduce outputs:
    encoder layer  a*(2bLd [norm inputs] + 3bLhk [q,k,v] + g*bLf [wi outputs]) + 4bhL^2 [softmax]
    decoder layer  a*(3bTd + 4bThk [self q,k,v, cross q] + 2bLhk [cross k,v] + g*bTf)
                   + 4(bhT^2 + bhTL)
    once           a*(bLd + bTd) [final-norm inputs] + 4bTv [f32 softmax of the logits]
  with g = number of MLP branches (T5 1.1: wi_0, wi_1). Model tuning adds the matmul
  inputs: a*(2bLd + bLhk + bLf) per encoder layer, a*(3bTd + 2bThk + bTf) per decoder
  layer and a*(bLd + bTd) once.
  """
  g = len(cfg.mlp_activations)
  enc = x.a * (2 * x.b * x.L * x.d + 3 * x.b * x.L * x.hk + g * x.b * x.L * x.f) + 4 * x.b * x.h * x.L ** 2
  dec = (x.a * (3 * x.b * x.T * x.d + 4 * x.b * x.T * x.hk + 2 * x.b * x.L * x.hk + g * x.b * x.T * x.f)
         + 4 * x.b * x.h * (x.T ** 2 + x.T * x.L))
  once = x.a * (x.b * x.L * x.d + x.b * x.T * x.d) + 4 * x.b * x.T * x.v
  if model_mode:
    enc += x.a * (2 * x.b * x.L * x.d + x.b * x.L * x.hk + x.b * x.L * x.f)
    dec += x.a * (3 * x.b * x.T * x.d + 2 * x.b * x.T * x.hk + x.b * x.T * x.f)
    once += x.a * (x.b * x.L * x.d + x.b * x.T * x.d)
  return enc, dec, once


def _unfused_layers(cfg: T5Config, x: _Dims, model_mode: bool, input_length: int, model: int) -> tuple[int, int, int]:
  """JAX's own residual set (`jax.vjp` of this model), which XLA:CPU keeps as is.

  Counted from `saved_residuals` of `t5.Transformer` (checked in tests/test_planning.py):
  per RMSNorm two f32 [.., d] and two f32 [.., 1]; q/k/v in `a`; softmax weights in
  f32 and `a` plus two f32 [.., 1]; per MLP position 7 `a` values for gated GELU
  (wi outputs + tanh-GELU intermediates; 8 for model tuning) or `a` + a bool mask for
  ReLU (2a + 1 for model tuning); and, with a != 4, an `a` copy of every kernel.
  """
  b, L, T, d, hk, h, f, a = x.b, x.L, x.T, x.d, x.hk, x.h, x.f, x.a
  gated_gelu = len(cfg.mlp_activations) > 1 or cfg.mlp_activations[0] != "relu"
  mlp = (7 * a if gated_gelu else a + 1) + ((a if gated_gelu else a) if model_mode else 0)
  n_wi = len(cfg.mlp_activations)
  enc_w = dec_w = 0
  if a != 4:  # kernels cast to the activation dtype are kept for the backward matmuls
    enc_w = a * (4 * d * hk + (n_wi + 1) * d * f)
    dec_w = a * (8 * d * hk + (n_wi + 1) * d * f)
  norm = lambda n: 2 * 4 * n * d + 2 * 4 * n
  probs = lambda q, k: (4 + a) * b * h * q * k + 2 * 4 * b * h * q
  enc = 2 * norm(b * L) + 3 * a * b * L * hk + probs(L, L) + mlp * b * L * f + enc_w
  dec = (3 * norm(b * T) + 4 * a * b * T * hk + 2 * a * b * L * hk + probs(T, T) + probs(T, L)
         + mlp * b * T * f + dec_w)
  once = norm(b * L) + a * b * input_length * d + 4 * b * T * x.v
  if model_mode:
    enc += (4 + a) * 2 * b * L * d + a * b * L * hk
    dec += (4 + a) * 3 * b * T * d + 2 * a * b * T * hk
    once += (4 + a) * b * L * d + 4 * 4 * b * T * d
  return enc, dec, once


def _dots_layers(cfg: T5Config, x: _Dims) -> tuple[int, int]:
  """remat 'dots' (`dots_with_no_batch_dims_saveable`): each layer keeps its input and the
  outputs of its weight matmuls; attention scores (batched dots) and elementwise results
  are recomputed: encoder a*(3bLd + 3bLhk + g*bLf), decoder a*(4bTd + 4bThk + 2bLhk + g*bTf)."""
  g = len(cfg.mlp_activations)
  enc = x.a * (3 * x.b * x.L * x.d + 3 * x.b * x.L * x.hk + g * x.b * x.L * x.f)
  dec = x.a * (4 * x.b * x.T * x.d + 4 * x.b * x.T * x.hk + 2 * x.b * x.L * x.hk + g * x.b * x.T * x.f)
  return enc, dec


def activation_bytes(config: T5Config, run: RunShape, data: int, model: int,
                     fused: bool = True) -> tuple[int, int]:
  """(kept for backprop, transient peak) bytes per device; see `_fused_layers`.

  The residual stream [b, L, d] is replicated over 'model' (T5X 1-D activation
  partitioning); heads, d_ff and vocab are split over it. With `run.remat` each layer
  keeps only its input ('full') or also its matmul outputs ('dots') and recomputes the
  rest during backprop. With microbatches, b counts one piece. Transient: the largest
  layer's kept set again (its gradients), the logits gradient 4bTv and the encoder's
  combined attention bias 4bhL^2. XLA:TPU may rematerialise further under memory
  pressure: this is an estimate, not a measurement.
  """
  x = _dims(config, run, data, model)
  model_mode = run.mode == "model"
  if fused:
    enc, dec, once = _fused_layers(config, x, model_mode)
  else:
    enc, dec, once = _unfused_layers(config, x, model_mode, run.input_length, model)
  if run.dropout_rate > 0:  # 1-byte masks on attention weights (residual dropout masks are [b, 1, d])
    enc += x.b * x.h * x.L ** 2
    dec += x.b * x.h * (x.T ** 2 + x.T * x.L)
  layer_peak = max(enc, dec)
  if run.remat == "full":
    enc, dec = x.a * x.b * x.L * x.d, x.a * x.b * x.T * x.d
  elif run.remat == "dots":
    enc, dec = _dots_layers(config, x)
  kept = config.num_encoder_layers * enc + config.num_decoder_layers * dec + once
  transient = layer_peak * (1 if run.remat == "none" else 2) + 4 * x.b * x.T * x.v + 4 * x.b * x.h * x.L ** 2
  return kept, transient


def plan_memory(config: T5Config, topology: Topology, run: RunShape,
                partition: sharding.PartitionConfig = sharding.PartitionConfig()) -> MemoryPlan:
  """Bytes per device of params, prompt, gradients, Adafactor state and activations."""
  model = partition.model_parallel_size
  if topology.num_devices % model:
    flag = "--model_parallel_submesh" if partition.model_parallel_submesh else "--num_partitions"
    raise ValueError(f"{flag}: model-parallel size {model} does not divide the "
                     f"{topology.num_devices} devices of {topology.name}")
  data = topology.num_devices // model
  _dims(config, run, data, model)  # refuses a batch the mesh cannot split
  check_divisible(config, run.prompt_length, partition, model, data)
  sizes, rules = {"data": data, "model": model}, partition.rules
  p_bytes = np.dtype(jax.numpy.dtype(run.param_dtype)).itemsize
  frozen = trainable = grads = opt = 0
  for name, (shape, axes) in param_table(config, run.prompt_length).items():
    is_prompt = re.fullmatch(PROMPT_PATTERN, name) is not None
    local = shard_numel(shape, axes, rules, sizes)
    if run.mode == "prompt" and not is_prompt:
      frozen += local * p_bytes
      continue
    trainable += local * 4  # trained weights stay float32
    grads += local * 4 * (2 if run.num_microbatches > 1 else 1)  # + the accumulator
    state = adafactor_state_numel(shape, run.momentum, factored=not is_prompt)
    # Full-size moments shard like their param; factored row/col vectors are counted
    # whole (replicated), which over-counts by a few MB at most.
    opt += 4 * (local * state // math.prod(shape) if state >= math.prod(shape) else state)
  kept, transient = activation_bytes(config, run, data, model, fused=run.fused)
  unfused, _ = activation_bytes(config, run, data, model, fused=False)
  return MemoryPlan(topology, (data, model), frozen, trainable, grads, opt, kept, transient, unfused,
                    _notes(config, data, model, run))


def check_divisible(config: T5Config, prompt_length: int, partition: sharding.PartitionConfig, model: int,
                    data: int) -> None:
  """Refuse a mesh JAX would refuse (IndivisibleError): the model axis must divide the
  heads (attention activations and the relative-position tables [H, buckets]) and every
  other dim a rule maps onto a mesh axis."""
  flag = "--model_parallel_submesh" if partition.model_parallel_submesh else "--num_partitions"
  if config.num_heads % model:
    raise ValueError(f"{flag}: model-parallel size {model} does not divide num_heads={config.num_heads}; the "
                     f"attention heads and the relative-position tables [{config.num_heads}, "
                     f"{config.relative_attention_num_buckets}] are split over it. Choose a divisor of "
                     f"{config.num_heads}")
  sizes = {"data": data, "model": model}
  for name, (shape, axes) in param_table(config, prompt_length).items():
    mesh_axes = nn.logical_to_mesh_axes(axes, partition.rules)
    for i, dim in enumerate(shape):
      names = mesh_axes[i] if i < len(mesh_axes) else None
      names = () if names is None else (names,) if isinstance(names, str) else tuple(names)
      n = math.prod(sizes[a] for a in names)
      if dim % n:
        raise ValueError(f"{flag}: {name} {shape}: dim {i} ({dim}) does not divide by mesh axes {names} "
                         f"of size {n}")


def _notes(config: T5Config, data: int, model: int, run: RunShape) -> tuple[str, ...]:
  notes = []
  if run.batch_size // data < 1:
    notes.append("fewer examples than data-parallel replicas")
  return tuple(notes)


def format_plan(plan: MemoryPlan, config_name: str, run: RunShape) -> str:
  """A human-readable table with the verdict on the last line."""
  t = plan.topology
  gib = lambda n: f"{n / GIB:10.3f} GiB"
  lines = [
      f"T5 {config_name}, {run.mode} tuning, batch {run.batch_size}, inputs {run.input_length}"
      f" + prompt {run.prompt_length}, targets {run.target_length}, activations {run.activation_dtype},"
      f" dropout {run.dropout_rate:g}",
      f"{t.name}: {t.num_devices} x {t.device_kind} ({t.device_memory_gib:g} GiB), {t.num_hosts} host(s);"
      f" mesh data={plan.mesh[0]} x model={plan.mesh[1]}",
      f"{'component':<40}{'per device':>14}",
  ]
  rows = [(f"frozen params ({run.param_dtype})", plan.frozen_params),
          ("trainable params (float32)", plan.trainable_params), ("gradients (float32)", plan.gradients),
          ("Adafactor state", plan.optimizer_state),
          (f"activations ({'fused' if run.fused else 'unfused'}{', remat ' + run.remat if run.remat != 'none' else ''}"
           f"{f', {run.num_microbatches} microbatches' if run.num_microbatches > 1 else ''})",
           plan.activations),
          ("transient (layer grads, logits)", plan.transient)]
  lines += [f"{name:<40}{gib(n):>14}" for name, n in rows]
  lines.append(f"{'total':<40}{gib(plan.total):>14}")
  lines.append(f"{f'usable ({t.usable_fraction:.0%} of HBM)':<40}{gib(plan.usable):>14}")
  lines += [f"note: {n}" for n in plan.notes]
  if run.fused:
    other = plan.total - plan.activations + plan.activations_unfused
    lines.append(f"note: without XLA fusion (JAX's raw residuals, as XLA:CPU keeps them) activations are "
                 f"{plan.activations_unfused / GIB:.3f} GiB, total {other / GIB:.3f} GiB")
  pct = 100 * plan.headroom / plan.usable
  verdict = "FITS" if plan.fits else "DOES NOT FIT"
  lines.append(f"{verdict}: headroom {plan.headroom / GIB:.3f} GiB ({pct:.1f}% of usable)")
  return "\n".join(lines)
