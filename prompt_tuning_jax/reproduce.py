"""Run the paper's experiments and collect their tables and plots.

  python -m prompt_tuning_jax.reproduce --experiment=main --root=/data/paper --dry-run
  python -m prompt_tuning_jax.reproduce --experiment=main --sizes=small,base --root=/data/paper
  python -m prompt_tuning_jax.reproduce --experiment=ensemble --root=gs://bucket/paper \
      --launcher=tpu --tpu_args="--name my-v3-32 --zone europe-west4-a" --gin.NUM_PARTITIONS=16
  python -m prompt_tuning_jax.reproduce aggregate --root=/data/paper [--experiment=main,init]
  python -m prompt_tuning_jax.reproduce list

Experiments: main (Figure 1, prompt tuning), model_tuning and multitask_model_tuning (Figure 1,
baselines from the public T5.1.1 checkpoints), prompt_length / init / frozen_model / lm_adaptation
(Figure 3 a-d), ensemble (Table 3), transfer (Table 2), domain_shift (Table 1).
Each run is one `python -m prompt_tuning_jax.train` (MODEL_DIR under --root); finished runs
are skipped and interrupted ones resume. Extra `--gin.NAME=VALUE` flags go to every run.
`--launcher=tpu` starts this queue on the TPU VM through run_tpu.sh (runs stay sequential).
Paths given in --gin flags must be absolute: runs start in the gin/ folder.
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
from typing import Sequence

from prompt_tuning_jax import cli
from prompt_tuning_jax.checkpoints import fs
from prompt_tuning_jax.paper import experiments

DEFAULT_ROOT = "paper_runs"


def _names(text: str | None) -> list[str] | None:
  return [p for p in text.split(",") if p] if text else None


def _split(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """(--gin.NAME=VALUE flags, the rest); the gin flags are checked here, not at launch."""
  extra = [a for a in argv if a.startswith("--gin.")]
  cli.split_gin_flags(extra)
  return extra, [a for a in argv if not a.startswith("--gin.")]


def _common(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--root", default=DEFAULT_ROOT, help="folder (or gs:// URL) holding every run")
  parser.add_argument("--sizes", default=None, help=f"comma-separated, of {','.join(experiments.SIZES)}")
  parser.add_argument("--tasks", default=None, help="comma-separated task keys, e.g. rte,cb")
  parser.add_argument("--seeds", default=None,
                      help=f"comma-separated seeds per grid point (default {','.join(map(str, experiments.SEEDS))})")


def _seeds(text: str | None) -> list[int] | None:
  try:
    return [int(k) for k in text.split(",") if k] if text else None
  except ValueError:
    raise ValueError(f"--seeds={text!r}: expected comma-separated integers, e.g. 0,1,2") from None


def run_main(argv: Sequence[str]) -> int:
  extra, rest = _split(argv)
  parser = cli.ArgumentParser(prog="python -m prompt_tuning_jax.reproduce", description=__doc__)
  parser.add_argument("--experiment", required=True, choices=sorted(experiments.EXPERIMENTS), metavar="NAME")
  _common(parser)
  parser.add_argument("--launcher", default="local", choices=("local", "tpu"))
  parser.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                      help="list every run with its status and command; run nothing")
  parser.add_argument("--keep_going", action="store_true", help="continue after a failed run")
  parser.add_argument("--tpu_args", default="", help="run_tpu.sh global options, e.g. '--name N --zone Z'")
  args = parser.parse_args(rest)
  exp = experiments.EXPERIMENTS[args.experiment]
  runs = experiments.expand(exp, args.root, sizes=_names(args.sizes), tasks=_names(args.tasks), extra=extra,
                            seeds=_seeds(args.seeds))
  if args.launcher == "tpu":
    remote = [f"--experiment={exp.name}", f"--root={fs.abspath(args.root)}"]
    remote += [f"--{k}={v}" for k, v in (("sizes", args.sizes), ("tasks", args.tasks), ("seeds", args.seeds)) if v]
    remote += (["--keep_going"] if args.keep_going else []) + extra
    command = experiments.tpu_command(remote, shlex.split(args.tpu_args), f"reproduce_{exp.name}")
    if "://" not in args.root:
      print(f"note: --root={args.root} is a path on the TPU VM's own disk; use gs:// to keep the runs")
    print(f"{exp.name}: {len(runs)} runs, queued on the TPU VM with:\n  {shlex.join(command)}")
    return 0 if args.dry_run else subprocess.run(command).returncode
  if args.dry_run:
    print(f"{exp.name} ({exp.reproduces}): {len(runs)} runs under {fs.abspath(args.root)}")
    for i, run in enumerate(runs, 1):
      print(f"[{i}] {experiments.status(run)} {run.name}\n  {run.shell()}")
    return 0
  outcomes = experiments.launch_local(runs, keep_going=args.keep_going)
  failed = [n for n, o in outcomes.items() if o.startswith("failed")]
  print(f"{exp.name}: " + ", ".join(f"{o} {sum(v == o for v in outcomes.values())}"
                                    for o in sorted(set(outcomes.values()))))
  return 1 if failed else 0


def aggregate_main(argv: Sequence[str]) -> int:
  from prompt_tuning_jax.paper import report
  extra, rest = _split(argv)
  parser = cli.ArgumentParser(prog="python -m prompt_tuning_jax.reproduce aggregate",
                                   description="Tables (Markdown, CSV) and plots (PNG) of finished runs.")
  parser.add_argument("--experiment", default=None,
                      help="comma-separated (default: every experiment except the demo)")
  _common(parser)
  parser.add_argument("--out", default=None, help="output folder (default: ROOT/results; plots need a local one)")
  args = parser.parse_args(rest)
  names = _names(args.experiment) or [n for n, e in experiments.EXPERIMENTS.items() if not e.hidden]
  written = report.aggregate(args.root, names, sizes=_names(args.sizes), tasks=_names(args.tasks),
                             out_dir=args.out, extra=extra, seeds=_seeds(args.seeds))
  for name, files in written.items():
    print(f"{name}: " + ", ".join(files))
  return 0


def list_main() -> int:
  for name, exp in experiments.EXPERIMENTS.items():
    if not exp.hidden:
      runs = experiments.expand(exp, DEFAULT_ROOT)
      print(f"{name:14s} {len(runs):4d} runs  {exp.reproduces}")
  return 0


@cli.command
def main(argv: Sequence[str]) -> int:
  try:
    if argv[:1] == ["aggregate"]:
      return aggregate_main(argv[1:])
    if argv[:1] == ["list"]:
      return list_main()
    return run_main(argv[1:] if argv[:1] == ["run"] else argv)
  except ValueError as e:
    raise cli.UsageError(f"reproduce: {e}") from None


if __name__ == "__main__":
  raise SystemExit(main())
