"""Analytic vs compiled per-device bytes of the prompt-tuning train step (docs/PLANS.md).

Each row compiles the exact sharded train step for a real TPU topology through libtpu
(`compile_plan.py`) and prints XLA's total bytes per device beside `memory_plan.py`'s.
Rows print (and flush) as they finish, so a run cut short keeps what it measured.

  python benchmarks/plan_table.py grid --sizes small base large xl xxl --topologies v3-8 v3-32 v4-32
  python benchmarks/plan_table.py collectives --size xxl --topology v3-32 --num_partitions 16
  python benchmarks/plan_table.py fit --topologies v3-8 v5e-8 v4-8 --gpus 1xH100 1xH200
  python benchmarks/plan_table.py options --topologies v3-8 v5e-8 v4-8 --remat none full --microbatches 1 4 8

Every row is the run users launch: the settings come from gin/runs/plan.gin, which includes
runs/prompt_tuning.gin (batch 32, inputs 512 + 100 prompt tokens, targets 8, bfloat16
activations, dropout 0.1); only the swept knobs (weight dtype, remat, microbatches) change.
`--dropout_rate 0` plans the dropout-free step instead. `fit` walks weight dtype (float32 first: the paper), remat (none, dots, full)
and microbatches (1, 2, 4, ...) in that order and stops at the first combination the
analytic plan says fits, then compiles it to check.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dataclasses  # noqa: E402

from prompt_tuning_jax import plan as plan_command  # noqa: E402
from prompt_tuning_jax.parallel import sharding  # noqa: E402
from prompt_tuning_jax.planning import compile_plan, memory_plan
from prompt_tuning_jax.model.config import SIZES  # noqa: E402

GIB = memory_plan.GIB
MODEL_PARALLEL = {"small": 1, "base": 2, "large": 4, "xl": 8, "xxl": 16}  # capped at the slice's devices


_LAUNCH: memory_plan.RunShape | None = None


def launch_run(**changes) -> memory_plan.RunShape:
  """runs/prompt_tuning.gin's run shape (through runs/plan.gin), with `changes` applied."""
  global _LAUNCH
  if _LAUNCH is None:
    _, settings = plan_command.launch_settings()
    fields = {f.name for f in dataclasses.fields(memory_plan.RunShape)}
    _LAUNCH = memory_plan.RunShape(**{k: v for k, v in settings.items() if k in fields})
  return dataclasses.replace(_LAUNCH, **changes)


def _gib(n: int) -> str:
  return f"{n / GIB:.2f}"


def _row(size: str, topology: str, model: int, run: memory_plan.RunShape, compile_it: bool = True) -> str:
  topo = memory_plan.parse_topology(topology)
  part = sharding.PartitionConfig(num_partitions=model)
  plan = memory_plan.plan_memory(SIZES[size], topo, run, part)
  cells = [size, topology, f"{topo.num_devices // model}x{model}", run.param_dtype, run.remat,
           str(run.num_microbatches), f"{run.dropout_rate:g}", _gib(plan.total)]
  if compile_it:
    try:
      train = compile_plan.compile_plan(SIZES[size], topology, run, part, steps=("train",)).steps[0]
    except Exception as e:  # noqa: BLE001  XLA:TPU refuses a program larger than the chip (RESOURCE_EXHAUSTED)
      reason = str(e).strip().splitlines()[0][:160]
      return "| " + " | ".join(cells + [f"XLA refused to compile: {reason}", "-", "-", "-",
                                        "yes" if plan.fits else "no", _gib(plan.usable)]) + " |"
    cells += [_gib(train.arguments), _gib(train.temp), _gib(train.total),
              f"{100 * (plan.total / train.total - 1):+.1f}%", "yes" if train.total <= plan.usable else "no"]
  else:
    cells += ["-", "-", "-", "-", "yes" if plan.fits else "no"]
  cells.append(_gib(plan.usable))
  return "| " + " | ".join(cells) + " |"


HEADER = ("| size | topology | mesh (data x model) | weights | remat | microbatches | dropout | analytic GiB | "
          "XLA arguments GiB | XLA temp GiB | XLA total GiB | analytic vs XLA | fits | usable GiB |\n"
          "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")


def grid(args: argparse.Namespace) -> None:
  print(HEADER, flush=True)
  for size, topology, remat, micro in itertools.product(args.sizes, args.topologies, args.remat, args.microbatches):
    model = min(MODEL_PARALLEL[size], memory_plan.parse_topology(topology).num_devices)
    run = launch_run(remat=remat, num_microbatches=micro, param_dtype=args.weight_dtype, **_dropout(args))
    try:
      print(_row(size, topology, model, run, compile_it=not args.analytic_only), flush=True)
    except ValueError as e:  # e.g. fewer rows per replica than microbatches: the planner refuses
      print(f"| {size} | {topology} | - | {args.weight_dtype} | {remat} | {micro} | refused: {e} |", flush=True)


def collectives(args: argparse.Namespace) -> None:
  run = launch_run(remat=args.remat[0], num_microbatches=args.microbatches[0], **_dropout(args))
  part = sharding.PartitionConfig(num_partitions=args.num_partitions)
  report = compile_plan.compile_plan(SIZES[args.size], args.topology, run, part, steps=tuple(args.steps))
  plan = memory_plan.plan_memory(SIZES[args.size], memory_plan.parse_topology(args.topology), run, part)
  print(compile_plan.format_report(report, plan))
  print("\n| step | collective | count | MiB per device |\n|---|---|---:|---:|")
  for step in report.steps:
    for op, (n, b) in step.collectives.items():
      if n:
        print(f"| {step.name} | {op} | {n} | {b / 2 ** 20:.1f} |")


def _dropout(args: argparse.Namespace) -> dict:
  return {} if args.dropout_rate is None else {"dropout_rate": args.dropout_rate}


def _cheapest(size: str, topology: str, model: int, **changes) -> memory_plan.RunShape | None:
  topo = memory_plan.parse_topology(topology)
  for dtype, remat, micro in itertools.product(("float32", "bfloat16"), ("none", "dots", "full"),
                                               (1, 2, 4, 8, 16, 32)):
    run = launch_run(param_dtype=dtype, remat=remat, num_microbatches=micro, **changes)
    try:
      if memory_plan.plan_memory(SIZES[size], topo, run, sharding.PartitionConfig(num_partitions=model)).fits:
        return run
    except ValueError:  # microbatches not dividing the replica's rows
      continue
  return None


def fit(args: argparse.Namespace) -> None:
  print(HEADER, flush=True)
  for topology in args.topologies + args.gpus:
    n = memory_plan.parse_topology(topology).num_devices
    model = min(n, 16)
    run = _cheapest(args.size, topology, model, **_dropout(args))
    if run is None:
      print(f"| {args.size} | {topology} | {n // model}x{model} | nothing fits |", flush=True)
      continue
    compile_it = topology in compile_plan.TPU_TOPOLOGIES and not args.analytic_only
    print(_row(args.size, topology, model, run, compile_it=compile_it), flush=True)


def options(args: argparse.Namespace) -> None:
  """Every weight dtype x remat x microbatch combination for `--size`, analytic only."""
  print(f"| topology | mesh | weights | remat | microbatches | dropout | frozen GiB | activations GiB | total GiB | "
        f"usable GiB | fits |\n|---|---|---|---|---:|---:|---:|---:|---:|---:|---|", flush=True)
  for topology in args.topologies + args.gpus:
    topo = memory_plan.parse_topology(topology)
    model = min(topo.num_devices, 16)
    for dtype, remat, micro in itertools.product(("float32", "bfloat16"), args.remat, args.microbatches):
      run = launch_run(param_dtype=dtype, remat=remat, num_microbatches=micro, **_dropout(args))
      p = memory_plan.plan_memory(SIZES[args.size], topo, run, sharding.PartitionConfig(num_partitions=model))
      print(f"| {topology} | 1x{model} | {dtype} | {remat} | {micro} | {run.dropout_rate:g} | {_gib(p.frozen_params)} | "
            f"{_gib(p.activations)} | {_gib(p.total)} | {_gib(p.usable)} | {'yes' if p.fits else 'no'} |", flush=True)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("mode", choices=("grid", "collectives", "fit", "options"))
  p.add_argument("--sizes", nargs="+", default=["small", "base", "large", "xl", "xxl"])
  p.add_argument("--size", default="xxl")
  p.add_argument("--topologies", nargs="+", default=["v3-8", "v3-32", "v4-32"])
  p.add_argument("--topology", default="v3-32")
  p.add_argument("--gpus", nargs="*", default=["1xH100", "1xH200"])
  p.add_argument("--num_partitions", type=int, default=16)
  p.add_argument("--remat", nargs="+", default=["none", "full"])
  p.add_argument("--microbatches", nargs="+", type=int, default=[1, 4])
  p.add_argument("--steps", nargs="+", default=["train", "score", "decode"], choices=("train", "score", "decode"),
                 help="collectives: which steps to compile (score and decode never apply dropout)")
  p.add_argument("--weight_dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--dropout_rate", type=float, help="default: runs/prompt_tuning.gin's (0.1)")
  p.add_argument("--analytic_only", action="store_true", help="grid/fit without compiling (seconds instead of hours)")
  args = p.parse_args()
  {"grid": grid, "collectives": collectives, "fit": fit, "options": options}[args.mode](args)


if __name__ == "__main__":
  main()
