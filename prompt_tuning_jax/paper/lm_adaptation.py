"""Make an LM-adapted checkpoint (Figure 3(d)): train every weight on the prefix-LM task for
TRAIN_STEPS steps, then write the weights as a T5X checkpoint a prompt run can freeze.

  python -m prompt_tuning_jax.paper.lm_adaptation --gin_file=paper/t5_1_1_span_corruption_base.gin \
      --gin_file=paper/lm_adaptation.gin --gin.MODEL_DIR=/data/paper/lm_adaptation/10k/base \
      --gin.TRAIN_STEPS=10000

Same flags as `python -m prompt_tuning_jax.train` (it is that run, resumable); the checkpoint
goes to MODEL_DIR/t5x/checkpoint_<step offset + steps>, e.g. checkpoint_1010000, the global
step a prompt run continues from (`OptimConfig.step_offset`).
"""
from __future__ import annotations

import sys
from typing import Sequence

from prompt_tuning_jax import cli


def adapted_path(model_dir: str, global_step: int) -> str:
  from prompt_tuning_jax.checkpoints import fs
  return fs.join(model_dir, "t5x", f"checkpoint_{global_step}")


@cli.command
def main(argv: Sequence[str]) -> str | None:
  """-> the written T5X checkpoint's path (None when preempted: rerun to resume)."""
  import gin

  from prompt_tuning_jax import train
  from prompt_tuning_jax.checkpoints import fs, t5x
  result = train.main(list(argv))
  if result is None or result.preempted:
    return None
  model_dir = gin.query_parameter("%MODEL_DIR")
  offset = gin.query_parameter("OptimConfig.step_offset") if _bound("OptimConfig.step_offset") else 0
  path = adapted_path(model_dir, offset + result.step)
  if not fs.exists(path):  # a rerun of a finished adaptation finds it written
    t5x.write_t5x_checkpoint(fs.join(model_dir, "t5x"), result.trainable, offset + result.step)
  print(f"LM-adapted checkpoint: {path}")
  return path


def _bound(name: str) -> bool:
  import gin
  try:
    gin.query_parameter(name)
    return True
  except ValueError:
    return False


if __name__ == "__main__":
  sys.exit(main())
