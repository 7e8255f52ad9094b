"""A numpy prompt at every checkpoint save, named by the GLOBAL step (checkpoint step +
run step), as the original release; best.json carries the global step too."""
import dataclasses
import json
import pathlib

import numpy as np

from prompt_tuning_jax.text import data
from prompt_tuning_jax.model.config import SIZES
from prompt_tuning_jax.prompt import files as prompt_files
from prompt_tuning_jax.prompt import initializers, wrapper
from prompt_tuning_jax.trainer import loop

ZARR = pathlib.Path(__file__).resolve().parents[1] / "testdata" / "t5x_checkpoints" / "test_t5_1_1_tiny" / "checkpoint_3"


def test_numpy_prompt_at_every_save_with_global_steps(tmp_path):
  evaluations = []

  def evaluator(cfg, model):
    def evaluate(params, step):
      evaluations.append(step)
      return {"accuracy": float(step)}  # improves every eval: the last is best
    return evaluate

  cfg = loop.TrainConfig(
      model_dir=str(tmp_path / "run"), initial_checkpoint_path=str(ZARR), t5=SIZES["tiny_zarr"],
      data=data.DataConfig("superglue_rte_sample_taskless", "prompt_tuning_jax.tasks",
                           {"inputs": 16, "targets": 4}, batch_size=8),
      prompt=wrapper.PromptConfig(length=2), prompt_init=initializers.uniform_symmetric(0.5), train_steps=4,
      eval_period=2, checkpoint_period=2, log_period=1, progress_bar=False, evaluator=evaluator,
      early_stopping=loop.EarlyStopping(metric=("accuracy",)))
  result = loop.train(dataclasses.replace(cfg))
  saved = sorted(p.name for p in (tmp_path / "run" / "numpy_checkpoints").iterdir())
  assert saved == ["checkpoint_5", "checkpoint_7"]  # the fixture is at step 3: 3 + 2, 3 + 4
  last = prompt_files.load_numpy_checkpoint(tmp_path / "run" / "numpy_checkpoints" / "checkpoint_7")
  np.testing.assert_array_equal(last, np.load(tmp_path / "run" / "prompt.npy"))
  first = prompt_files.load_numpy_checkpoint(tmp_path / "run" / "numpy_checkpoints" / "checkpoint_5")
  assert not np.array_equal(first, last)  # saved at step 2, not a copy of the final prompt
  best = json.loads((tmp_path / "run" / "best" / "best.json").read_text())
  assert (best["step"], best["global_step"], best["value"]) == (4, 7, 4.0) and result.best["global_step"] == 7
  assert evaluations == [0, 2, 4]
