"""Train a prompt (or, with another regex, the whole model) in the T5X style.

  python -m prompt_tuning_jax.train --gin_file=models/t5_1_1_base.gin \
    --gin_file=runs/prompt_tuning.gin --gin.MODEL_DIR=/tmp/rte \
    --gin.MIXTURE_OR_TASK_NAME=superglue_rte_taskless \
    --gin.TASK_FEATURE_LENGTHS="{'inputs': 512, 'targets': 8}" --gin.TRAIN_STEPS=30000

Multi-host: TPU pods, SLURM, Open MPI and indexed Kubernetes Jobs/JobSets (with jax[k8s]) are
detected from the environment (--cluster forces one, or 'none'); elsewhere add
--coordinator_address=host:port --num_processes=N --process_id=i. --distributed_timeout_s bounds
the wait for every process. SIGTERM (preemption) saves a checkpoint and exits 0; rerun to resume
(before the first step it exits 0 with nothing written). A mistake in the flags, gin files, paths,
task name or data folder prints one line `error: ...` and exits 2 (--verbose: with the traceback).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from prompt_tuning_jax import cli
from prompt_tuning_jax.trainer import preemption

if TYPE_CHECKING:
  from prompt_tuning_jax.trainer import loop


@cli.command
def main(argv: Sequence[str]) -> loop.TrainResult | None:
  installed = preemption.install_sigterm_handler()  # first: a SIGTERM from now on stops cleanly
  try:
    return _train(argv)
  except preemption.StoppedBeforeTraining:
    print("stopped by SIGTERM before the first training step: nothing trained, no checkpoint written; "
          "rerun the same command to start", flush=True)
    return None
  finally:
    if installed:
      preemption.uninstall_sigterm_handler()


def _train(argv: Sequence[str]) -> loop.TrainResult:
  parser = cli.ArgumentParser(description=__doc__)
  from prompt_tuning_jax.parallel import distributed  # pylint: disable=g-import-not-at-top
  distributed.add_flags(parser)
  args = cli.parse(parser, argv, if_empty=(
      "train needs a run configuration: e.g. --gin_file=models/t5_1_1_base.gin --gin_file=runs/prompt_tuning.gin "
      "--gin.MODEL_DIR=DIR --gin.MIXTURE_OR_TASK_NAME=TASK (see --help)"))
  from prompt_tuning_jax.trainer import loop  # pylint: disable=g-import-not-at-top
  config = cli.build_config(loop.TrainConfig)  # every field bound by gin
  cli.check_checkpoint_path(config.initial_checkpoint_path, "INITIAL_CHECKPOINT_PATH")
  preemption.stop_if_requested()  # here and below: a SIGTERM during set-up stops between phases
  distributed.initialize_from_flags(args)
  with loop.run_folder_lock(config.model_dir):  # one run per MODEL_DIR: a second is refused here, in seconds
    cli.check_data(config.data, splits=("train",) + ((config.data.eval_split,) if config.evaluator else ()))
    preemption.stop_if_requested()

    def write_config() -> None:  # only once the backbone loaded and the resume checks passed
      preemption.stop_if_requested()
      cli.write_operative_config(config.model_dir)

    result = loop.train(config, on_ready=write_config if distributed.is_primary() else None)
  if not result.preempted:  # a preempted run said so (and exported nothing)
    print(f"done: step {result.step}, best {result.best}, prompt in {config.model_dir}")
  return result


if __name__ == "__main__":
  raise SystemExit(main())
