"""Every gin/methods/*.gin binds its method into TrainConfig through the CLI's gin parsing."""
import argparse
import pathlib

import pytest

import gin
from prompt_tuning_jax import cli, methods
from prompt_tuning_jax.trainer import loop

GIN_METHODS = sorted(p.stem for p in (pathlib.Path(cli.GIN_DIR) / "methods").glob("*.gin"))
# gin files that configure a variant of a method: file stem -> (method name, fields it sets)
VARIANTS = {"prefix_peft": ("prefix", {"sites": ("decoder",), "positions": "preceding"})}


@pytest.mark.parametrize("name", GIN_METHODS)
def test_method_gin_file_builds_its_method(name, tmp_path):
  gin.clear_config()
  try:
    cli.parse(argparse.ArgumentParser(), [
        "--gin_file=tests/tiny_inline.gin", f"--gin_file=methods/{name}.gin", f"--gin.MODEL_DIR={tmp_path}",
        "--gin.MIXTURE_OR_TASK_NAME=superglue_rte_sample_taskless", "--gin.TRAIN_STEPS=2",
        "--gin.INITIAL_CHECKPOINT_PATH=random:0", "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 4}",
        "--gin.BATCH_SIZE=8"])
    config = cli.build_config(loop.TrainConfig)
  finally:
    gin.clear_config()
  method_name, fields = VARIANTS.get(name, (name, {}))
  assert isinstance(config.method, methods.METHODS[method_name]) and config.prompt is None
  assert {k: getattr(config.method, k) for k in fields} == fields
  assert config.trainable_patterns == config.method.patterns(config.t5)


def test_every_method_has_a_gin_file():
  assert {VARIANTS.get(name, (name,))[0] for name in GIN_METHODS} == set(methods.METHODS)


def test_reproduce_lists_one_run_per_method_with_its_gin_file(tmp_path):
  from prompt_tuning_jax.paper import experiments
  runs = experiments.expand(experiments.EXPERIMENTS["delta_methods"], str(tmp_path), sizes=("small",),
                            tasks=("rte",))
  # one run per method and seed (3 seeds per point, as every seeded grid)
  assert sorted(r.setting.method for r in runs) == sorted(list(methods.METHODS) * len(experiments.SEEDS))
  for run in runs:
    assert f"--gin_file=methods/{run.setting.method}.gin" in run.command
    assert "--gin_file=models/t5_1_1_small.gin" in run.command
