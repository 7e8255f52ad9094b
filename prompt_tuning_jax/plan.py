"""Will this run fit? `python -m prompt_tuning_jax.plan --model_size xxl --topology v3-32 --num_partitions 16`.

Prints the per-device memory table and FITS / DOES NOT FIT; nothing is allocated, so
it runs on a laptop. See `planning.activation_bytes` for the activation formula.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Sequence

from prompt_tuning_jax import planning, sharding
from prompt_tuning_jax.config import SIZES


def _parse_submesh(text: str) -> tuple[int, ...]:
  try:
    return tuple(int(x) for x in text.strip("()[] ").split(",") if x.strip())
  except ValueError:
    raise argparse.ArgumentTypeError(f"--model_parallel_submesh expects e.g. '4,4,1,2', got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m prompt_tuning_jax.plan", description=__doc__.splitlines()[0])
  p.add_argument("--model_size", default="xxl", choices=sorted(SIZES), help="T5 1.1 preset (config.SIZES)")
  p.add_argument("--topology", help="v2-8, v3-32, v4-64, v5e-16, v5p-128, v6e-8, 8xH100, 16xA100-80GB, ...")
  p.add_argument("--num_devices", type=int, help="instead of --topology: number of jax devices")
  p.add_argument("--device_memory_gib", type=float, help="instead of --topology: memory per device (GiB)")
  p.add_argument("--usable_fraction", type=float, help="share of device memory to plan for "
                 f"(default {planning.TPU_USABLE_FRACTION} on TPU, {planning.GPU_USABLE_FRACTION} on GPU)")
  p.add_argument("--num_partitions", type=int, default=1, help="model-parallel size")
  p.add_argument("--model_parallel_submesh", type=_parse_submesh, help="T5X tile, e.g. 4,4,1,2")
  p.add_argument("--parameter_partitioning_dims", type=int, default=1, choices=(1, 2))
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--input_length", type=int, default=512)
  p.add_argument("--target_length", type=int, default=8)
  p.add_argument("--prompt_length", type=int, default=100)
  p.add_argument("--mode", default="prompt", choices=("prompt", "model"))
  p.add_argument("--activation_dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
  p.add_argument("--param_dtype", default="float32", choices=("bfloat16", "float32"),
                 help="storage dtype of the frozen weights")
  p.add_argument("--dropout_rate", type=float, default=0.0)
  p.add_argument("--momentum", action="store_true", help="Adafactor with a first moment")
  p.add_argument("--remat", action="store_true", help="plan for per-layer rematerialisation")
  p.add_argument("--estimate", default="fused", choices=("fused", "unfused"),
                 help="activation estimate the verdict uses: 'fused' (XLA on TPU/GPU fuses casts and "
                      "elementwise ops) or 'unfused' (JAX's raw residuals, as XLA:CPU keeps them)")
  return p


def topology_from_args(args: argparse.Namespace) -> planning.Topology:
  if args.topology and (args.num_devices or args.device_memory_gib):
    raise ValueError("give either --topology or --num_devices/--device_memory_gib, not both")
  if args.topology:
    topo = planning.parse_topology(args.topology)
  elif args.num_devices and args.device_memory_gib:
    topo = planning.Topology(f"{args.num_devices} devices", args.num_devices, args.device_memory_gib,
                             "device", args.num_devices, planning.TPU_USABLE_FRACTION)
  else:
    raise ValueError("--topology or both --num_devices and --device_memory_gib are required")
  if args.usable_fraction is not None:
    if not 0 < args.usable_fraction <= 1:
      raise ValueError(f"--usable_fraction must be in (0, 1], got {args.usable_fraction}")
    topo = dataclasses.replace(topo, usable_fraction=args.usable_fraction)
  return topo


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    topology = topology_from_args(args)
    partition = sharding.PartitionConfig(num_partitions=args.num_partitions,
                                         model_parallel_submesh=args.model_parallel_submesh,
                                         parameter_partitioning_dims=args.parameter_partitioning_dims)
    run = planning.RunShape(batch_size=args.batch_size, input_length=args.input_length,
                            target_length=args.target_length, prompt_length=args.prompt_length,
                            mode=args.mode, activation_dtype=args.activation_dtype,
                            param_dtype=args.param_dtype, dropout_rate=args.dropout_rate,
                            momentum=args.momentum, remat=args.remat, fused=args.estimate == "fused")
    plan = planning.plan_memory(SIZES[args.model_size], topology, run, partition)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(planning.format_plan(plan, args.model_size, run))
  return 0


if __name__ == "__main__":
  sys.exit(main())
