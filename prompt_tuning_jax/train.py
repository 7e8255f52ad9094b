"""Train a prompt (or, with another regex, the whole model) in the T5X style.

  python -m prompt_tuning_jax.train --gin_file=models/t5_1_1_base.gin \
    --gin_file=runs/prompt_tuning.gin --gin.MODEL_DIR=/tmp/rte \
    --gin.MIXTURE_OR_TASK_NAME=superglue_rte_taskless \
    --gin.TASK_FEATURE_LENGTHS="{'inputs': 512, 'targets': 8}" --gin.TRAIN_STEPS=30000

Multi-host: TPU pods, SLURM, Open MPI and indexed Kubernetes Jobs/JobSets (with jax[k8s]) are
detected from the environment (--cluster forces one, or 'none'); elsewhere add
--coordinator_address=host:port --num_processes=N --process_id=i. --distributed_timeout_s bounds
the wait for every process. SIGTERM (preemption) saves a checkpoint and exits 0; rerun to resume.
"""
from __future__ import annotations

import argparse
from typing import Sequence

from prompt_tuning_jax import cli

from prompt_tuning_jax.parallel import distributed
from prompt_tuning_jax.trainer import loop


def main(argv: Sequence[str] | None = None) -> loop.TrainResult:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  distributed.add_flags(parser)
  args = cli.parse(parser, argv)
  distributed.initialize_from_flags(args)
  config = cli.build_config(loop.TrainConfig)  # every field bound by gin
  def write_config() -> None:  # only once the backbone loaded and the resume checks passed
    cli.write_operative_config(config.model_dir)

  result = loop.train(config, on_ready=write_config if distributed.is_primary() else None)
  print(f"done: step {result.step}, best {result.best}, prompt in {config.model_dir}")
  return result


if __name__ == "__main__":
  main()
