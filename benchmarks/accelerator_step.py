"""Prompt-tuning step time, tokens/s and model-FLOPs utilisation on whatever accelerator is present.

  python benchmarks/accelerator_step.py --sizes=base,large,xl,xxl --time_budget_s=480
  python benchmarks/accelerator_step.py --sizes=tiny_inline,demo --batch=4 --input_len=64 \
    --prompt_len=8 --time_budget_s=240          # CPU dry run

The step is the real `trainer/step.py` train step, built as `trainer/loop.py` builds it:
the ('data', 'model') mesh from `sharding.make_mesh(PartitionConfig())`, frozen weights
from `backbone.load_frozen('random:0', ..., shardings=...)` in their shards, the prompt
(uniform init) trainable under `optim.PROMPT_TUNING` (Adafactor), `step.jit_train_step`
with the loop's in/out shardings, state donated; activations in `--dtype` (bfloat16).
Default shape: batch 32, inputs 512 + 100 prompt, targets 8 (the paper's).

Each size runs in its own subprocess (its peak memory is its own; an OOM ends only it)
with whatever is left of `--time_budget_s`; a size is skipped when the planner's
estimate (`memory_plan.plan_memory`, one device) exceeds the device's memory limit, or
when the budget is spent. Columns:
  step s        median wall time of the timed steps (after compile and one warm-up)
  tokens/s      batch * (input + prompt + target) / step s
  GFLOP/step    analytic model FLOPs (below)
  MFU %         GFLOP/step / step s / the device's peak dense bf16 FLOP/s (n/a on CPU)
  peak GiB      `device.memory_stats()['peak_bytes_in_use']` (n/a where jax reports none)
  plan GiB      the planner's per-device total for the same step

Model FLOPs (2 per multiply-add, matmuls only, `common.t5_forward_flops`), with
B batch, L = input + prompt encoder tokens, T targets, d = emb_dim, h heads x k = head_dim,
f = mlp_dim, g = number of mlp_activations (2 for gated GELU), V vocab, n_e/n_d layers:
  dense_fwd = n_e * 2 * (4 d h k + (g + 1) d f) * B L
            + n_d * 2 * ((6 d h k + (g + 1) d f) * B T + 2 d h k * B L)  + 2 d V * B T
  attn_fwd  = n_e * 4 B h L L k + n_d * (4 B h T T k + 4 B h T L k)
  step      = 2 * dense_fwd + 3 * attn_fwd
Prompt tuning needs the input gradient of every frozen matmul but never its weight
gradient (only the prompt trains), so dense layers cost forward + one backward matmul
(2x); attention products have no weights, their backward is two products (3x in all).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import common

GIB = 1024 ** 3
# Peak dense bfloat16 FLOP/s per jax device (vendor figures, no sparsity): matched as
# substrings of `device.device_kind`, first match wins (order: specific before general).
PEAK_BF16 = (
    ("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("GH200", 989e12),
    ("A100", 312e12), ("A10G", 70e12), ("L40S", 362e12), ("L4", 121e12), ("V100", 125e12),  # V100: fp16
    ("TPU v6", 918e12), ("TPU v5p", 459e12), ("TPU v5 lite", 197e12), ("TPU v5e", 197e12),
    ("TPU v4", 275e12), ("TPU v3", 61.5e12), ("TPU v2", 22.5e12),  # v2/v3: per core (2 per chip)
)


def peak_flops(device_kind: str) -> float | None:
  for key, value in PEAK_BF16:
    if key.lower() in device_kind.lower():
      return value
  return None


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--sizes", default="base,large,xl,xxl", help="comma-separated config.SIZES keys")
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--input_len", type=int, default=512)
  p.add_argument("--prompt_len", type=int, default=100)
  p.add_argument("--target_len", type=int, default=8)
  p.add_argument("--dtype", default="bfloat16", help="activation dtype (frozen weights stay float32)")
  p.add_argument("--steps", type=int, default=5, help="timed steps per size (fewer if the budget runs out)")
  p.add_argument("--time_budget_s", type=float, default=480.0, help="wall-clock limit for the whole run")
  p.add_argument("--json_out", default=None)
  p.add_argument(common.SINGLE_FLAG, default=None, help=argparse.SUPPRESS)
  p.add_argument("--_deadline", type=float, default=None, help=argparse.SUPPRESS)
  return p


def plan_gib(cfg, args: argparse.Namespace, limit_bytes: int | None) -> float:
  """The planner's per-device total for this step on one device."""
  from prompt_tuning_jax.planning import memory_plan
  gib = (limit_bytes or 0) / GIB or 1.0
  topology = memory_plan.Topology("this device", 1, gib, "this device", 1, 1.0)
  run = memory_plan.RunShape(batch_size=args.batch, input_length=args.input_len, target_length=args.target_len,
                             prompt_length=args.prompt_len, activation_dtype=args.dtype)
  return memory_plan.plan_memory(cfg, topology, run).total / GIB


def run_size(args: argparse.Namespace, size: str) -> dict:
  """Build and time one size in this process (a subprocess of `main`)."""
  import jax
  import jax.numpy as jnp

  from prompt_tuning_jax.parallel import sharding
  from prompt_tuning_jax.checkpoints import backbone
  from prompt_tuning_jax.model.config import SIZES
  from prompt_tuning_jax.prompt import PROMPT_PATTERN, initializers, wrapper
  from prompt_tuning_jax.trainer import optim, step

  device = jax.devices()[0]
  stats = device.memory_stats() or {}
  cfg = SIZES[size].replace(dtype=args.dtype)
  plan = plan_gib(cfg, args, stats.get("bytes_limit"))
  out = dict(size=size, platform=device.platform, device_kind=device.device_kind, plan_gib=round(plan, 2),
             limit_gib=round(stats["bytes_limit"] / GIB, 2) if "bytes_limit" in stats else None)
  if "bytes_limit" in stats and plan * GIB > stats["bytes_limit"]:
    return dict(out, status=f"skipped: plan {plan:.1f} GiB > limit {stats['bytes_limit'] / GIB:.1f} GiB")
  # --- as trainer/loop.py's _Run builds the step
  partition = sharding.PartitionConfig()
  mesh = sharding.make_mesh(partition)
  prompt_cfg, optim_cfg = wrapper.PromptConfig(length=args.prompt_len), optim.PROMPT_TUNING
  model = wrapper.make_model(cfg, prompt_cfg)
  specs = sharding.logical_specs(jax.eval_shape(
      lambda r: model.init(r, *(jnp.ones((1, 2), jnp.int32),) * 3)["params"], jax.random.PRNGKey(0)))
  param_sh = sharding.logical_to_sharding(specs, mesh, partition.rules)
  _, backbone_specs = optim.split_params(specs, (PROMPT_PATTERN,))
  frozen, _ = backbone.load_frozen("random:0", cfg,
                                   shardings=sharding.logical_to_sharding(backbone_specs, mesh, partition.rules))
  value = initializers.uniform_symmetric(0.5)(jax.random.PRNGKey(1), prompt_cfg.shape(cfg.emb_dim),
                                              frozen["token_embedder"]["embedding"])
  trainable, frozen = optim.split_params(wrapper.set_prompt(frozen, jnp.asarray(value, jnp.float32)),
                                         optim_cfg.trainable_patterns)
  trainable_sh, frozen_sh = optim.split_params(param_sh, optim_cfg.trainable_patterns)
  optimizer = optim.make_optimizer(optim_cfg)
  replicated = sharding.replicated(mesh)
  state = step.init_state(jax.device_put(trainable, trainable_sh), optimizer, jax.random.PRNGKey(2))
  state_sh = step.TrainState(step=replicated, params=trainable_sh,
                             opt_state=jax.tree.map(lambda _: replicated, state.opt_state), rng=replicated)
  state = jax.device_put(state, state_sh)
  batch = jax.device_put(common.random_batch(cfg.vocab_size, args.batch, args.input_len, args.target_len),
                         sharding.batch_sharding(mesh))
  train_step = step.jit_train_step(model, optimizer, step.LossConfig(),
                                   in_shardings=(state_sh, frozen_sh, sharding.batch_sharding(mesh)),
                                   out_shardings=(state_sh, replicated))
  t0 = time.perf_counter()
  with jax.set_mesh(mesh):
    compiled = train_step.lower(state, frozen, batch).compile()
  out["compile_s"] = round(time.perf_counter() - t0, 1)
  holder = {"state": state}
  del state

  def one_step():
    holder["state"], metrics = compiled(holder["state"], frozen, batch)
    return metrics["loss"]

  common.block(one_step())  # warm-up
  times = []
  deadline = args._deadline or float("inf")
  while len(times) < args.steps and (not times or time.time() + times[-1] < deadline):
    t0 = time.perf_counter()
    loss = common.block(one_step())
    times.append(time.perf_counter() - t0)
  step_s = sorted(times)[len(times) // 2]
  flops = common.t5_train_flops(cfg, args.batch, args.input_len + args.prompt_len, args.target_len,
                                trainable="prompt")
  peak = peak_flops(device.device_kind) if device.platform != "cpu" else None
  stats = device.memory_stats() or {}
  return dict(out, status="ok", steps=len(times), step_s=round(step_s, 4), loss=float(loss),
              tokens_per_s=round(args.batch * (args.input_len + args.prompt_len + args.target_len) / step_s, 1),
              gflop_per_step=round(flops / 1e9, 3), mfu=None if peak is None else round(flops / step_s / peak, 4),
              peak_gib=round(stats["peak_bytes_in_use"] / GIB, 2) if "peak_bytes_in_use" in stats else None)


def _child(args: argparse.Namespace, size: str, deadline: float) -> dict:
  """Run one size in a fresh interpreter until `deadline`; OOMs and timeouts become rows."""
  argv = [a for a in sys.argv[1:] if not a.startswith("--json_out")]
  cmd = [sys.executable, os.path.abspath(__file__), *argv, "--_deadline", str(deadline), common.SINGLE_FLAG, size]
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(1.0, deadline - time.time()))
  except subprocess.TimeoutExpired:
    return dict(size=size, status="timed out (--time_budget_s)")
  lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
  if proc.returncode == 0 and lines:
    return json.loads(lines[-1])
  err = proc.stderr[-3000:]
  oom = any(s in err for s in ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "OOM"))
  if not oom:
    sys.stderr.write(err)
  return dict(size=size, status="OOM" if oom else f"failed (rc={proc.returncode})")


def main() -> None:
  args = build_parser().parse_args()
  single = getattr(args, common.SINGLE_FLAG.lstrip("-"))
  if single:
    print(json.dumps(run_size(args, single)))
    return
  deadline = time.time() + args.time_budget_s
  rows = []
  for size in [s for s in args.sizes.split(",") if s]:
    if time.time() > deadline - 10:
      rows.append(dict(size=size, status="skipped: time budget spent"))
      continue
    rows.append(_child(args, size, deadline))
    print(json.dumps(rows[-1]), flush=True)
  kind = next((r["device_kind"] for r in rows if "device_kind" in r), "?")
  print(f"\nprompt-tuning step on {kind}: batch {args.batch}, inputs {args.input_len} + {args.prompt_len} "
        f"prompt, targets {args.target_len}, {args.dtype} activations, float32 frozen weights")
  fmt = common.fmt
  table = [[r["size"], r["status"], fmt(r.get("step_s"), 3), fmt(r.get("tokens_per_s"), 0),
            fmt(r.get("gflop_per_step"), 3), fmt(r["mfu"] * 100 if r.get("mfu") is not None else None, 1),
            fmt(r.get("peak_gib")), fmt(r.get("plan_gib")), fmt(r.get("compile_s"), 1)] for r in rows]
  print(common.format_table(["size", "status", "step s", "tokens/s", "GFLOP/step", "MFU %", "peak GiB",
                             "plan GiB", "compile s"], table))
  if args.json_out:
    with open(args.json_out, "w") as f:
      json.dump(rows, f, indent=2)


if __name__ == "__main__":
  main()
