"""Forward and forward+backward of T5 1.1 (all weights differentiated) vs the matmul ceiling.

Why: model tuning's compute without the optimizer, in plain numbers: step time, FLOPs
from XLA's cost analysis of the compiled step and from an analytic count
(`common.t5_train_flops`: 2 FLOPs per multiply-add, 3x the forward for dense layers),
and the share of the machine's f32 matmul ceiling it reaches. FACTS.md's reference:
2.7 s for this shape (batch 8 x 512, targets 8) in plain Flax on 2 cores.

  python benchmarks/t5_fwd_bwd.py                         # small, batch 8 x 512, targets 8
  python benchmarks/t5_fwd_bwd.py --steps 3 --warmup 1 --ceiling_gflops 430
"""
from __future__ import annotations

import argparse
import time

import common
from common import fmt, format_table, loadavg


def build(size: str, batch: int, input_len: int, target_len: int, seed: int, dtype: str = "float32"):
  """-> (model, params, batch arrays) with random weights (`backbone.load_frozen('random:<seed>')`)."""
  import jax

  from prompt_tuning_jax.checkpoints import backbone
  from prompt_tuning_jax.model.config import SIZES
  from prompt_tuning_jax.prompt import wrapper
  if size not in SIZES:
    raise ValueError(f"--size={size!r}; expected one of {sorted(SIZES)}")
  cfg = SIZES[size].replace(dtype=dtype)
  params, _ = backbone.load_frozen(f"random:{seed}", cfg)
  feats = jax.device_put(common.random_batch(cfg.vocab_size, batch, input_len, target_len, seed))
  return cfg, wrapper.make_model(cfg, None), params, feats


def run_pass(name: str, fn, args: tuple, *, warmup: int, steps: int) -> dict:
  """Compile `fn` once (cost analysis from that executable), then time it."""
  import jax
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - t0
  timing = common.time_steps(lambda: compiled(*args), warmup=warmup, steps=steps)
  return dict(name=name, compile_s=round(compile_s, 1), **timing.as_dict(), **common.xla_cost(compiled),
              **common.xla_memory(compiled))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--size", default="small")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--input_len", type=int, default=512)
  parser.add_argument("--target_len", type=int, default=8)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--dtype", default="float32", help="T5Config.dtype (activations); params stay float32")
  parser.add_argument("--ceiling_gflops", type=float, default=None,
                      help="matmul ceiling to divide by; measured here (matmul_ceiling.py) when omitted")
  parser.add_argument("--skip_forward", action="store_true", help="time forward+backward only")
  args = parser.parse_args()

  import jax
  import matmul_ceiling

  from prompt_tuning_jax.model import losses
  load_before = loadavg()
  ceiling = ({"gflops": args.ceiling_gflops, "gflop_per_cpu_s": float("nan")} if args.ceiling_gflops
             else matmul_ceiling.ceiling())
  cfg, model, params, batch = build(args.size, args.batch, args.input_len, args.target_len, args.seed,
                                     args.dtype)
  loss = lambda p, b: losses.loss_fn(model, p, b, None)[0]
  results = []
  if not args.skip_forward:
    results.append(run_pass("forward (loss)", loss, (params, batch), warmup=args.warmup, steps=args.steps))
  results.append(run_pass("forward+backward (all params)", jax.value_and_grad(loss), (params, batch),
                          warmup=args.warmup, steps=args.steps))

  fwd = common.t5_forward_flops(cfg, args.batch, args.input_len, args.target_len)["total"]
  train = common.t5_train_flops(cfg, args.batch, args.input_len, args.target_len, trainable="model")
  rows = []
  for r, analytic in zip(results, ([fwd] if not args.skip_forward else []) + [train]):
    step = r["median_step_s"]
    xla_rate, ana_rate = r["flops"] / step / 1e9, analytic / step / 1e9
    cpu_rate = r["flops"] / r["median_step_cpu_s"] / 1e9
    rows.append((r["name"], fmt(step, 3), fmt(r["median_step_cpu_s"], 2), fmt(r["flops"] / 1e9, 1),
                 fmt(analytic / 1e9, 1), fmt(xla_rate, 1), fmt(ana_rate, 1),
                 fmt(100 * xla_rate / ceiling["gflops"], 1),
                 fmt(100 * cpu_rate / ceiling["gflop_per_cpu_s"], 1), fmt(r["compile_s"], 1)))
  print(f"T5 1.1 {args.size}, {args.dtype} activations (float32 params), random weights, "
        f"batch {args.batch} x {args.input_len} inputs, {args.target_len} targets; "
        f"{args.warmup} warm-up + {args.steps} timed steps (median); "
        f"jax {jax.__version__}; loadavg before {load_before} after {loadavg()}")
  print(f"matmul ceiling: {ceiling['gflops']:.1f} GFLOP/s wall, {ceiling['gflop_per_cpu_s']:.1f} GFLOP per CPU-s")
  print(format_table(["pass", "step (s)", "CPU s/step", "GFLOP (XLA)", "GFLOP (analytic)", "GFLOP/s (XLA)",
                      "GFLOP/s (analytic)", "% ceiling (XLA, wall)", "% ceiling (XLA, CPU-s)", "compile (s)"],
                     rows))
  print("GFLOP (XLA): compiled.cost_analysis()['flops'] of the jitted pass. GFLOP (analytic): matmuls only, "
        "2*N*tokens per dense kernel + attention products; fwd+bwd = 3x dense + 3x attention.")
  for r in results:
    print(f"{r['name']}: steps {r['step_times_s']}, XLA temp {r.get('xla_temp_gb', 'n/a')} GB")


if __name__ == "__main__":
  main()
