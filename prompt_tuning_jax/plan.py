"""Will this run fit? Prints the per-device memory table and FITS / DOES NOT FIT.

  python -m prompt_tuning_jax.plan --model_size xxl --topology v3-32 --num_partitions 16
  python -m prompt_tuning_jax.plan --gin_file=models/t5_1_1_xxl.gin \
    --gin_file=runs/prompt_tuning.gin --gin.NUM_PARTITIONS=16 --topology v3-32

The run settings (batch, lengths, prompt length, dropout, microbatches, dtypes, remat,
partitioning) always come from gin: a `PlanConfig` that gin/runs/plan.gin (parsed first)
binds to the run's configurables (T5Config, DataConfig, PromptConfig, OptimConfig,
LossConfig, PartitionConfig). plan.gin includes models/t5_1_1_xxl.gin and
runs/prompt_tuning.gin, so with no gin files the plan is the run users launch (dropout
0.1 included); --gin_file/--gin.NAME replace it, and flags given explicitly override both.
Nothing is allocated, so this runs on a laptop. The
activation formulas are in `memory_plan.activation_bytes`.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import TYPE_CHECKING, Any, Sequence

from prompt_tuning_jax import cli
from prompt_tuning_jax.model.config import REMAT_POLICIES, SIZES, T5Config

if TYPE_CHECKING:  # jax and flax load in the functions, so `--help` needs neither
  from prompt_tuning_jax.planning import memory_plan

PLAN_GIN = "runs/plan.gin"  # includes models/t5_1_1_xxl.gin and runs/prompt_tuning.gin


def _parse_submesh(text: str) -> tuple[int, ...]:
  try:
    return tuple(int(x) for x in text.strip("()[] ").split(",") if x.strip())
  except ValueError:
    raise argparse.ArgumentTypeError(f"--model_parallel_submesh expects e.g. '4,4,1,2', got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
  p = cli.ArgumentParser(prog="python -m prompt_tuning_jax.plan", description=__doc__)
  p.add_argument("--model_size", choices=sorted(SIZES), help="T5 1.1 preset (default xxl, or the gin T5Config)")
  p.add_argument("--topology", help="v2-8, v3-32, v4-64, v5e-16, v5p-128, v6e-8, 8xH100, 16xA100-80GB, ...")
  p.add_argument("--num_devices", type=int, help="instead of --topology: number of jax devices")
  p.add_argument("--device_memory_gib", type=float, help="instead of --topology: memory per device (GiB)")
  p.add_argument("--usable_fraction", type=float, help="share of device memory to plan for "
                 "(default: memory_plan.TPU_USABLE_FRACTION on TPU, GPU_USABLE_FRACTION on GPU)")
  p.add_argument("--num_partitions", type=int, help="model-parallel size (default 1)")
  p.add_argument("--model_parallel_submesh", type=_parse_submesh, help="T5X tile, e.g. 4,4,1,2")
  p.add_argument("--parameter_partitioning_dims", type=int, choices=(1, 2))
  p.add_argument("--batch_size", type=int, help="global batch (default: the gin's, 32)")
  p.add_argument("--input_length", type=int, help="encoder tokens before the prompt (default: the gin's, 512)")
  p.add_argument("--target_length", type=int, help="decoder tokens (default: the gin's, 8)")
  p.add_argument("--prompt_length", type=int, help="default: the gin's, 100")
  p.add_argument("--mode", choices=("prompt", "model"), help="what trains (default: the gin's, prompt)")
  p.add_argument("--activation_dtype", choices=("bfloat16", "float16", "float32"),
                 help="default: the gin's, bfloat16")
  p.add_argument("--param_dtype", choices=("bfloat16", "float32"),
                 help="storage dtype of the frozen weights (T5Config.weight_dtype; default: the gin's, float32)")
  p.add_argument("--dropout_rate", type=float,
                 help="default: the gin's (runs/prompt_tuning.gin trains with 0.1); 0 plans a dropout-free step")
  p.add_argument("--momentum", action="store_true", help="Adafactor with a first moment")
  p.add_argument("--remat", nargs="?", const="full", choices=REMAT_POLICIES,
                 help="per-layer rematerialisation (T5Config.remat_policy; bare --remat = full)")
  p.add_argument("--num_microbatches", type=int, help="LossConfig.num_microbatches (default: the gin's, 1)")
  p.add_argument("--compile", action="store_true",
                 help="also compile the exact sharded train, rank-scoring and greedy-decode steps ahead of time "
                      "for --topology (a TPU slice, through libtpu) and print XLA's bytes and collectives")
  p.add_argument("--estimate", default="fused", choices=("fused", "unfused"),
                 help="activation estimate the verdict uses: 'fused' (XLA on TPU/GPU fuses casts and "
                      "elementwise ops) or 'unfused' (JAX's raw residuals, as XLA:CPU keeps them)")
  return p


def topology_from_args(args: argparse.Namespace) -> memory_plan.Topology:
  from prompt_tuning_jax.planning import memory_plan  # pylint: disable=g-import-not-at-top
  if args.topology and (args.num_devices or args.device_memory_gib):
    raise ValueError("give either --topology or --num_devices/--device_memory_gib, not both")
  if args.topology:
    topo = memory_plan.parse_topology(args.topology)
  elif args.num_devices and args.device_memory_gib:
    topo = memory_plan.Topology(f"{args.num_devices} devices", args.num_devices, args.device_memory_gib,
                             "device", args.num_devices, memory_plan.TPU_USABLE_FRACTION)
  else:
    raise ValueError("--topology or both --num_devices and --device_memory_gib are required")
  if args.usable_fraction is not None:
    if not 0 < args.usable_fraction <= 1:
      raise ValueError(f"--usable_fraction must be in (0, 1], got {args.usable_fraction}")
    topo = dataclasses.replace(topo, usable_fraction=args.usable_fraction)
  return topo


def launch_settings(gin_files: Sequence[str] = (), bindings: Sequence[str] = ()) -> tuple[T5Config, dict[str, Any]]:
  """The model and run settings gin/runs/plan.gin (+ `gin_files`, `bindings`) describe:
  by default XXL prompt tuning exactly as runs/prompt_tuning.gin trains it."""
  from prompt_tuning_jax.planning import memory_plan  # pylint: disable=g-import-not-at-top
  cli.parse_gin([PLAN_GIN, *gin_files], bindings, [str(cli.GIN_DIR)])
  plan_config = cli.build_config(memory_plan.PlanConfig)
  return plan_config.t5, plan_config.run_settings()


def _parse(argv: Sequence[str]) -> tuple[argparse.Namespace, T5Config, dict[str, Any], str]:
  args = cli.parse(build_parser(), argv, defaults=[PLAN_GIN])
  from prompt_tuning_jax.planning import memory_plan  # pylint: disable=g-import-not-at-top
  plan_config = cli.build_config(memory_plan.PlanConfig)
  config, settings = plan_config.t5, plan_config.run_settings()
  name = ", ".join(args.gin_file) or "xxl"
  if args.model_size:
    config, name = SIZES[args.model_size], args.model_size
  merged = dict(settings)
  merged.update({k: v for k, v in vars(args).items() if k in merged and v is not None})
  return args, config, merged, name


@cli.command
def main(argv: Sequence[str]) -> int:
  try:
    args, config, s, name = _parse(argv)  # --help ends here, before jax loads
    from prompt_tuning_jax.parallel import sharding  # pylint: disable=g-import-not-at-top
    from prompt_tuning_jax.planning import memory_plan
    topology = topology_from_args(args)
    submesh = tuple(s["model_parallel_submesh"]) if s["model_parallel_submesh"] else None
    partition = sharding.PartitionConfig(num_partitions=s["num_partitions"], model_parallel_submesh=submesh,
                                         parameter_partitioning_dims=s["parameter_partitioning_dims"])
    run = memory_plan.RunShape(batch_size=s["batch_size"], input_length=s["input_length"],
                            target_length=s["target_length"], prompt_length=s["prompt_length"],
                            mode=s["mode"], activation_dtype=s["activation_dtype"], param_dtype=s["param_dtype"],
                            dropout_rate=s["dropout_rate"], momentum=args.momentum, remat=s["remat"],
                            fused=args.estimate == "fused", num_microbatches=s["num_microbatches"])
    plan = memory_plan.plan_memory(config, topology, run, partition)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(memory_plan.format_plan(plan, name, run))
  if args.compile:
    from prompt_tuning_jax.planning import compile_plan  # libtpu and the model: only when asked
    try:
      report = compile_plan.compile_plan(config, topology.name, run, partition)
    except ValueError as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
    print(compile_plan.format_report(report, plan))
  return 0


if __name__ == "__main__":
  sys.exit(main())
