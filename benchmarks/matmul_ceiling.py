"""The machine's float32 matmul ceiling with jax (GFLOP/s), the yardstick for the others.

Why: a step time alone says little on a shared 2-core CPU; divided by what a bare
matmul reaches on the same machine it tells how much of the hardware a step uses.
GFLOP per CPU second (summed over threads) is printed too: when other jobs share the
cores, wall-clock rates drop with the load, while per-CPU-second rates mostly do not.

  python benchmarks/matmul_ceiling.py                       # 2048^3, 4096^3, a T5-small MLP shape
  python benchmarks/matmul_ceiling.py --shapes 4096x4096x4096 --reps 3
"""
from __future__ import annotations

import argparse

import common  # noqa: F401  (puts the repo root on sys.path)
from common import fmt, format_table, loadavg, matmul_rate

SQUARE_SHAPES = ("2048x2048x2048", "4096x4096x4096")
DEFAULT_SHAPES = SQUARE_SHAPES + ("7296x512x1024",)  # last: [B*L, d] @ [d, f] of prompt_step


def parse_shape(text: str) -> tuple[int, int, int]:
  parts = text.lower().split("x")
  if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
    raise ValueError(f"--shapes entry {text!r}: expected MxKxN with positive ints, e.g. 2048x2048x2048")
  return int(parts[0]), int(parts[1]), int(parts[2])


def measure(shapes: list[tuple[int, int, int]], reps: int, warmup: int) -> list[dict]:
  return [dict(m=m, k=k, n=n, **matmul_rate(m, k, n, reps=reps, warmup=warmup)) for m, k, n in shapes]


def ceiling(reps: int = 3, warmup: int = 1) -> dict[str, float]:
  """Best wall GFLOP/s and best GFLOP per CPU second over the square shapes."""
  results = measure([parse_shape(s) for s in SQUARE_SHAPES], reps, warmup)
  return {"gflops": max(r["gflops"] for r in results),
          "gflop_per_cpu_s": max(r["gflop_per_cpu_s"] for r in results)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--shapes", default=",".join(DEFAULT_SHAPES), help="comma list of MxKxN")
  parser.add_argument("--reps", type=int, default=5, help="timed repetitions per shape (best is kept)")
  parser.add_argument("--warmup", type=int, default=2)
  args = parser.parse_args()
  shapes = [parse_shape(s) for s in args.shapes.split(",") if s.strip()]
  import jax
  load_before = loadavg()
  results = measure(shapes, args.reps, args.warmup)
  best = max(results, key=lambda r: r["gflops"])
  print(f"jax {jax.__version__}, devices {jax.devices()}, loadavg before {load_before} after {loadavg()}")
  rows = [(f"{r['m']}x{r['k']}x{r['n']}", fmt(2 * r["m"] * r["k"] * r["n"] / 1e9, 1), fmt(r["gflops"], 1),
           fmt(100 * r["gflops"] / best["gflops"], 0), fmt(r["gflop_per_cpu_s"], 1)) for r in results]
  print(format_table(["shape MxKxN (f32)", "GFLOP/matmul", "best GFLOP/s (wall)", "% of best",
                      "GFLOP per CPU-s"], rows))
  print(f"ceiling: {best['gflops']:.1f} GFLOP/s wall ({best['m']}x{best['k']}x{best['n']}); "
        f"{max(r['gflop_per_cpu_s'] for r in results):.1f} GFLOP per CPU-second")


if __name__ == "__main__":
  main()
