"""Figure 3(d): the kit makes its own LM-adapted checkpoints (a few steps on the demo model
with an in-memory corpus) where the grid expects them, and the ablation's runs wait for them."""
import os

import numpy as np
import pytest

from prompt_tuning_jax.checkpoints import t5x
from prompt_tuning_jax.paper import experiments, lm_adaptation
from prompt_tuning_jax.tasks import lm_adaptation as lm_task

pytestmark = pytest.mark.timeout(900)


@pytest.mark.slow
def test_adapt_steps_on_the_demo_model_writes_a_t5x_checkpoint(tmp_path, monkeypatch):
  lm_task.register_text_task("test_tiny_prefix_lm", [
      "The quick brown fox jumps over the lazy dog. It ran far away, then back again.",
      "Hello world, this is a tiny corpus for the LM-adaptation test; nothing more."] * 4)
  monkeypatch.chdir(experiments.REPO_ROOT / "gin")
  out = tmp_path / "lm_adaptation" / "0k" / "demo"
  path = lm_adaptation.main([
      "--gin_file=models/demo.gin", "--gin_file=paper/lm_adaptation.gin", f"--gin.MODEL_DIR='{out}'",
      f"--gin.INITIAL_CHECKPOINT_PATH='{experiments.DEMO_CHECKPOINT}'",
      "--gin.MIXTURE_OR_TASK_NAME='test_tiny_prefix_lm'", "--gin.TRAIN_STEPS=3", "--gin.BATCH_SIZE=8",
      "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 16}", "--gin.CHECKPOINT_PERIOD=3",
      "--gin.OptimConfig.step_offset=1500"])
  assert path == lm_adaptation.adapted_path(str(out), 1503) and os.path.isdir(path)
  before = t5x.read_t5x_checkpoint(str(experiments.DEMO_CHECKPOINT))
  after = t5x.read_t5x_checkpoint(path)
  assert after.step == 1503
  flat_before, flat_after = (dict(_flatten(c.params)) for c in (before, after))
  assert flat_before.keys() == flat_after.keys()
  assert all(flat_before[k].shape == flat_after[k].shape for k in flat_before)
  changed = [k for k in flat_before if not np.array_equal(flat_before[k], flat_after[k])]
  assert len(changed) == len(flat_before)  # every weight trained (model-tuning path), none frozen
  assert all(np.isfinite(v).all() for v in flat_after.values())


def _flatten(tree, prefix=""):
  for k, v in tree.items():
    if isinstance(v, dict):
      yield from _flatten(v, f"{prefix}{k}/")
    else:
      yield f"{prefix}{k}", np.asarray(v)


def test_grid_makes_10k_and_50k_then_freezes_them(tmp_path):
  runs = experiments.expand(experiments.EXPERIMENTS["lm_adaptation"], str(tmp_path), sizes=["base"], tasks=["rte"],
                            seeds=[0])
  names = [r.name for r in runs]
  assert names == ["prompt_tuning/span_corruption/class_labels/p100/seed0/base/rte",
                   "lm_adaptation/10k/base", "prompt_tuning/lm_adapt_10k/class_labels/p100/seed0/base/rte",
                   "lm_adaptation/50k/base", "prompt_tuning/lm_adapt_50k/class_labels/p100/seed0/base/rte",
                   "prompt_tuning/lm_adapted/class_labels/p100/seed0/base/rte"]
  by = {r.name: r for r in runs}
  adapt = by["lm_adaptation/10k/base"]
  assert adapt.command[:3] == ("python", "-m", "prompt_tuning_jax.paper.lm_adaptation")
  assert "--gin_file=paper/t5_1_1_span_corruption_base.gin" in adapt.command  # from the span-corruption model
  assert "--gin.TRAIN_STEPS=10000" in adapt.command and adapt.train_steps == 10000
  prompt = by["prompt_tuning/lm_adapt_10k/class_labels/p100/seed0/base/rte"]
  assert prompt.needs == ("lm_adaptation/10k/base",)
  ckpt = lm_adaptation.adapted_path(adapt.output_dir, 1_010_000)  # where the adaptation writes it
  assert f"--gin.INITIAL_CHECKPOINT_PATH={ckpt}" in prompt.command
  assert "--gin.OptimConfig.step_offset=1010000" in prompt.command
  assert experiments.PUBLISHED_LM_STEPS == (0, 100_000)  # the public checkpoints: no run needed
  assert not by["prompt_tuning/lm_adapted/class_labels/p100/seed0/base/rte"].needs
