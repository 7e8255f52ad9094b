"""bfloat16 frozen-weight storage (T5Config.weight_dtype): cast shard by shard on load,
trainable prompt and optimizer state stay float32.

Reference: the fixture read by the plain T5X reader (`t5x.read_t5x_checkpoint`) and cast
with numpy/ml_dtypes; the float32 run of the same steps.
"""
import pathlib

import jax
import ml_dtypes
import numpy as np
import pytest
from flax import traverse_util

from prompt_tuning_jax.parallel import sharding

from prompt_tuning_jax.text import data
from prompt_tuning_jax.checkpoints import backbone, t5x
from prompt_tuning_jax.model.config import SIZES
from prompt_tuning_jax.model import t5
from prompt_tuning_jax.prompt import wrapper
from prompt_tuning_jax.trainer import loop

FIXTURE = pathlib.Path(__file__).parents[1] / "testdata/t5x_checkpoints/test_t5_tiny.checkpoint_0"
BF16 = SIZES["tiny_inline"].replace(weight_dtype="bfloat16")


def test_bfloat16_storage_is_the_checkpoint_cast_shard_by_shard(monkeypatch):
  mesh = sharding.make_mesh(sharding.PartitionConfig(num_partitions=2))
  specs = sharding.logical_specs(t5.param_shapes(BF16))
  reads = []
  original = t5x.read_t5x_array

  def spy(path, name, index, **kwargs):
    reads.append((name, index))
    return original(path, name, index, **kwargs)

  monkeypatch.setattr(t5x, "read_t5x_array", spy)
  shardings = sharding.logical_to_sharding(specs, mesh, sharding.PartitionConfig().rules)
  params, _ = backbone.load_frozen(str(FIXTURE), BF16, shardings=shardings)
  monkeypatch.undo()
  ref = traverse_util.flatten_dict(t5x.read_t5x_checkpoint(str(FIXTURE)).params, sep="/")
  flat = traverse_util.flatten_dict(params, sep="/")
  assert flat.keys() == ref.keys()
  for name, value in flat.items():
    assert value.dtype == np.dtype(ml_dtypes.bfloat16), name
    np.testing.assert_array_equal(np.asarray(value), np.asarray(ref[name]).astype(ml_dtypes.bfloat16), err_msg=name)
  # model-sharded weights are read by slices, never whole
  wi = [index for name, index in reads if name == "encoder/layers_0/mlp/wi_0/kernel"]
  assert wi and all(index[1] != slice(None) and (index[1].stop - index[1].start) == 8 for index in wi)


@pytest.mark.slow
def test_bfloat16_run_keeps_trainable_and_optimizer_float32(tmp_path):
  cfg = loop.TrainConfig(
      model_dir=str(tmp_path / "run"), initial_checkpoint_path=str(FIXTURE), t5=BF16,
      data=data.DataConfig("superglue_rte_sample_taskless", "prompt_tuning_jax.tasks", {"inputs": 32, "targets": 4},
                           batch_size=8),
      prompt=wrapper.PromptConfig(length=5), train_steps=2, progress_bar=False)
  run = loop._Run(cfg)
  assert {x.dtype for x in jax.tree.leaves(run.frozen)} == {np.dtype(ml_dtypes.bfloat16)}
  assert {x.dtype for x in jax.tree.leaves(run.state.params)} == {np.dtype(np.float32)}
  assert {x.dtype for x in jax.tree.leaves(run.state.opt_state) if x.ndim} == {np.dtype(np.float32)}
  state, metrics = run.train_step(run.state, run.frozen, _batch(run, cfg))
  assert jax.tree.leaves(state.params)[0].dtype == np.float32 and np.isfinite(float(metrics["loss"]))


def _batch(run, cfg):
  rows = next(data.train_batches(cfg.data, prompt_slots=cfg.prompt.length))
  return sharding.make_global_batch(rows, run.mesh, cfg.data.batch_size)
