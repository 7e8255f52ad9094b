"""Compile the exact sharded steps ahead of time for a real TPU slice, on a CPU machine.

libtpu (the `tpu` extra) describes a TPU topology without the hardware
(`jax.experimental.topologies.get_topology_desc`, as MaxText's train_compile.py does);
the train step is then built by the same functions the run uses (`wrapper.make_model`,
`loop.abstract_params`, `optim.split_params`/`make_optimizer`, `loop.state_shardings`,
`step.jit_train_step`), lowered with abstract arguments carrying their shardings, and
compiled by XLA:TPU. `memory_analysis()` gives XLA's own per-device bytes, which
`plan.py --compile` prints beside the analytic estimate (`memory_plan.py`), and the
compiled HLO text gives the count and bytes of each collective. Rank scoring and greedy
decoding (what evaluation runs) are compiled on the same mesh and shardings.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning_jax.parallel import sharding

from prompt_tuning_jax.planning import memory_plan
from prompt_tuning_jax.model.config import T5Config
from prompt_tuning_jax.model import decoding
from prompt_tuning_jax.prompt import PROMPT_PATTERN, wrapper
from prompt_tuning_jax.trainer import loop, optim
from prompt_tuning_jax.trainer import step as step_lib

GIB = memory_plan.GIB
# Slice name -> (libtpu topology: chips per dimension, chip config). v2/v3/v4 names count
# TensorCores (2 per chip), v5e names count chips; v4 runs one megacore device per chip.
TPU_TOPOLOGIES: dict[str, tuple[str, str]] = {
    "v2-8": ("v2:2x2", "default"), "v2-32": ("v2:4x4", "default"),
    "v3-8": ("v3:2x2", "default"), "v3-32": ("v3:4x4", "default"), "v3-64": ("v3:4x8", "default"),
    "v3-128": ("v3:8x8", "default"),
    "v4-8": ("v4:2x2x1", "megacore"), "v4-16": ("v4:2x2x2", "megacore"), "v4-32": ("v4:2x2x4", "megacore"),
    "v4-64": ("v4:2x4x4", "megacore"), "v4-128": ("v4:4x4x4", "megacore"),
    "v5e-4": ("v5e:2x2", "default"), "v5e-8": ("v5e:2x4", "default"), "v5e-16": ("v5e:4x4", "default"),
    "v5e-32": ("v5e:4x8", "default"),
}
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_COLLECTIVE_RE = re.compile(r"=\s*(?P<shape>\S.*?)\s+(?P<op>" + "|".join(COLLECTIVES) + r")(?:-start)?\(")
_ARRAY_RE = re.compile(r"\b(pred|s8|u8|s16|u16|s32|u32|s64|u64|bf16|f16|f32|f64)\[([0-9,]*)\]")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "f32": 4,
          "s64": 8, "u64": 8, "f64": 8}


@dataclasses.dataclass(frozen=True)
class StepMemory:
  """XLA's per-device bytes for one compiled step, and its collectives {op: (count, bytes)}."""
  name: str
  arguments: int
  outputs: int
  aliased: int  # outputs written in place of donated arguments
  temp: int
  code: int
  collectives: dict[str, tuple[int, int]]
  compile_seconds: float

  @property
  def total(self) -> int:
    return self.arguments + self.outputs - self.aliased + self.temp


@dataclasses.dataclass(frozen=True)
class CompileReport:
  topology: str
  device_kind: str
  mesh: tuple[int, int]
  steps: tuple[StepMemory, ...]


def topology_devices(name: str) -> list[Any]:
  """Compile-only devices of a TPU slice ('v3-32' -> 32 TPU v3 cores), no hardware needed."""
  if name not in TPU_TOPOLOGIES:
    raise ValueError(f"--compile: no TPU topology {name!r}; known: {', '.join(TPU_TOPOLOGIES)}")
  topology, chip_config = TPU_TOPOLOGIES[name]
  # Compiling needs no chip: let several processes (plans, tests) load libtpu at once
  # instead of the first one holding /tmp/libtpu_lockfile.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  try:
    return list(topologies.get_topology_desc(topology_name=topology, platform="tpu", chip_config_name=chip_config,
                                             chips_per_host_bounds=(2, 2, 1), num_slices=1).devices)
  except Exception as e:  # libtpu absent or refusing: say how to get it
    raise RuntimeError(f"--compile {name}: libtpu could not describe topology {topology} ({e}); install it with "
                       "pip install 'prompt_tuning_jax[tpu]' (jax[tpu]==0.10.2 pins libtpu)") from e


def collective_stats(hlo_text: str) -> dict[str, tuple[int, int]]:
  """{op: (count, bytes of its results)} over the compiled HLO (async -start forms included;
  a collective inside a loop body, e.g. the microbatch scan, counts once)."""
  stats = {op: (0, 0) for op in COLLECTIVES}
  for m in _COLLECTIVE_RE.finditer(hlo_text):
    arrays = [_BYTES[t] * int(np.prod([int(d) for d in dims.split(",") if d])) for t, dims in
              _ARRAY_RE.findall(m.group("shape"))]
    # '-start' results are (operands, results[, scratch]) tuples: count the largest buffer
    size = max(arrays) if m.group(0).rstrip("(").endswith("-start") else sum(arrays)
    count, total = stats[m.group("op")]
    stats[m.group("op")] = (count + 1, total + size)
  return stats


def _abstract(tree: Any, shardings: Any, dtype: Any = None) -> Any:
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, dtype or s.dtype, sharding=sh), tree, shardings)


def _measure(name: str, jitted: Any, *args: Any) -> StepMemory:
  t0 = time.time()
  compiled = jitted.lower(*args).compile()
  seconds = time.time() - t0
  mem = compiled.memory_analysis()
  return StepMemory(name, mem.argument_size_in_bytes, mem.output_size_in_bytes, mem.alias_size_in_bytes,
                    mem.temp_size_in_bytes, mem.generated_code_size_in_bytes, collective_stats(compiled.as_text()),
                    seconds)


def compile_plan(config: T5Config, topology: str, run: memory_plan.RunShape,
                 partition: sharding.PartitionConfig = sharding.PartitionConfig(),
                 steps: tuple[str, ...] = ("train", "score", "decode"), num_candidates: int = 2) -> CompileReport:
  """Compile the run's train step (and the eval steps) for `topology`; XLA's bytes per device."""
  devices = topology_devices(topology)
  model_size = partition.model_parallel_size
  if len(devices) % model_size:
    raise ValueError(f"--num_partitions: model-parallel size {model_size} does not divide the {len(devices)} "
                     f"devices of {topology}")
  data = len(devices) // model_size
  memory_plan.check_divisible(config, run.prompt_length, partition, model_size, data)
  mesh = sharding.make_mesh(partition, devices)
  cfg = config.replace(dtype=run.activation_dtype, remat_policy=run.remat, weight_dtype=run.param_dtype,
                       dropout_rate=run.dropout_rate)
  model = wrapper.make_model(cfg, wrapper.PromptConfig(length=run.prompt_length) if run.prompt_length else None)
  boxed = loop.abstract_params(model)
  full_sh = sharding.logical_to_sharding(sharding.logical_specs(boxed), mesh, partition.rules)
  patterns = (PROMPT_PATTERN,) if run.mode == "prompt" else (".*",)
  trainable, frozen = optim.split_params(nn.unbox(boxed), patterns)
  trainable_sh, frozen_sh = optim.split_params(full_sh, patterns)
  # as `backbone.load_frozen` stores them (T5Config.weight_dtype); trainable stays float32
  frozen = _abstract(frozen, frozen_sh, jnp.dtype(cfg.weight_dtype))
  trainable = _abstract(trainable, trainable_sh)
  batch_sh, replicated = sharding.batch_sharding(mesh), sharding.replicated(mesh)
  tokens = lambda n: jax.ShapeDtypeStruct((run.batch_size, n), jnp.int32, sharding=batch_sh)
  results = []
  with jax.set_mesh(mesh), nn.logical_axis_rules(partition.rules):
    if "train" in steps:
      optimizer = optim.make_optimizer(optim.PROMPT_TUNING if run.mode == "prompt" else optim.MODEL_TUNING)
      state = jax.eval_shape(lambda p: step_lib.init_state(p, optimizer, jax.random.PRNGKey(0)), trainable)
      state_sh = loop.state_shardings(state, trainable_sh, mesh)
      loss = step_lib.LossConfig(enable_dropout=run.dropout_rate > 0, num_microbatches=run.num_microbatches)
      jitted = step_lib.jit_train_step(model, optimizer, loss, in_shardings=(state_sh, frozen_sh, batch_sh),
                                       out_shardings=(state_sh, replicated))
      batch = {"encoder_input_tokens": tokens(run.input_length), "decoder_input_tokens": tokens(run.target_length),
               "decoder_target_tokens": tokens(run.target_length),
               "decoder_loss_weights": tokens(run.target_length)}
      results.append(_measure("train", jitted, _abstract(state, state_sh), frozen, batch))
    params = optim.merge_params(trainable, frozen)
    if "score" in steps:  # rank classification: every candidate scored, one encoding per example
      jitted = jax.jit(functools.partial(decoding.score_candidates, model), in_shardings=(full_sh, batch_sh, replicated))
      candidates = jax.ShapeDtypeStruct((num_candidates, run.target_length), jnp.int32, sharding=replicated)
      results.append(_measure("score", jitted, params, tokens(run.input_length), candidates))
    if "decode" in steps:
      fn = functools.partial(decoding.greedy_decode, model, max_decode_length=run.target_length)
      jitted = jax.jit(fn, in_shardings=(full_sh, batch_sh))
      results.append(_measure("decode", jitted, params, tokens(run.input_length)))
  return CompileReport(topology, devices[0].device_kind, (data, model_size), tuple(results))


def format_report(report: CompileReport, plan: memory_plan.MemoryPlan | None = None) -> str:
  """XLA's bytes per device for each step (and the analytic plan's), then the collectives."""
  gib = lambda n: f"{n / GIB:9.4f}"
  lines = [f"compiled for {report.topology} ({report.device_kind}), mesh data={report.mesh[0]} x "
           f"model={report.mesh[1]}; GiB per device, by XLA's memory_analysis()",
           f"{'step':<8}{'arguments':>10}{'outputs':>10}{'aliased':>10}{'temp':>10}{'total':>10}{'compile s':>11}"]
  for s in report.steps:
    lines.append(f"{s.name:<8}{gib(s.arguments):>10}{gib(s.outputs):>10}{gib(s.aliased):>10}{gib(s.temp):>10}"
                 f"{gib(s.total):>10}{s.compile_seconds:>11.1f}")
  train = next((s for s in report.steps if s.name == "train"), None)
  if plan is not None and train is not None:
    persistent = plan.frozen_params + plan.trainable_params + plan.optimizer_state
    working = plan.gradients + plan.activations + plan.transient
    lines += [f"analytic train step: params + state {gib(persistent)} (XLA arguments {gib(train.arguments)}), "
              f"grads + activations + transient {gib(working)} (XLA temp {gib(train.temp)}), "
              f"total {gib(plan.total)} (XLA {gib(train.total)}; {100 * (plan.total / train.total - 1):+.1f}%)"]
  for s in report.steps:
    found = [f"{op} x{n} ({b / 2 ** 20:.1f} MiB)" for op, (n, b) in s.collectives.items() if n]
    lines.append(f"collectives in {s.name}: {', '.join(found) or 'none'}")
  return "\n".join(lines)
