"""The logical axis rules are active while the step is traced, so the model's activation
constraints reach the compiled program (they are no-ops without the rules), with T5X's 1-D
and 2-D activation partitioning; on 8 simulated CPU devices the loss stays the one-device loss.
"""
import re

import flax.linen as nn
import jax
import numpy as np
import pytest
from test_loop import tiny_config
from test_sharded_step import _setup

from prompt_tuning_jax.parallel import sharding
from prompt_tuning_jax.prompt import PROMPT_PATTERN
from prompt_tuning_jax.trainer import loop, optim
from prompt_tuning_jax.trainer import step as step_lib

PATTERNS = (PROMPT_PATTERN,)


def _constraints(hlo: str) -> list[tuple[str, str]]:
  """(mesh axes per dim, tensor type) of each sharding constraint in lowered StableHLO."""
  return re.findall(r"sdy\.sharding_constraint %\S+ <@\S+, (\[.*?\])> : (tensor<[^>]*>)", hlo)


def _step_and_args():
  model, _, params, batch, opt = _setup(PATTERNS)
  trainable, frozen = optim.split_params(params, PATTERNS)
  state = step_lib.init_state(trainable, opt, jax.random.PRNGKey(2))
  return step_lib.jit_train_step(model, opt, step_lib.LossConfig()), (state, frozen, batch)


@pytest.mark.slow
@pytest.mark.parametrize("dims,embed_axes", [(1, '[{"data"}, {}, {}]'), (2, '[{"data"}, {}, {"model"}]')])
def test_rules_put_activation_constraints_in_the_step(dims, embed_axes):
  partition = sharding.PartitionConfig(num_partitions=2, activation_partitioning_dims=dims)
  mesh = sharding.make_mesh(partition)
  step, args = _step_and_args()
  with jax.set_mesh(mesh):
    assert _constraints(step.lower(*args).as_text()) == []  # no rules: the constraints vanish
  step, args = _step_and_args()  # a fresh jit: the trace cache does not key on the rules
  with jax.set_mesh(mesh), nn.logical_axis_rules(partition.rules):
    found = _constraints(step.lower(*args).as_text())
    loss = step(*args)[1]["loss"]
  # [B=8, T=16 (12 + 4 prompt), embed=16] hidden states: batch over data (+ embed over model in 2-D).
  assert (embed_axes, "tensor<8x16x16xf32>") in found
  # [B, T, heads=8, kv=4] attention projections: heads over model.
  assert ('[{"data"}, {}, {"model"}, {}]', "tensor<8x16x8x4xf32>") in found
  step, args = _step_and_args()
  np.testing.assert_allclose(loss, step(*args)[1]["loss"], rtol=1e-6)  # one device, no rules


def test_rules_table_for_2d_activations_follows_t5x():
  rules = sharding.standard_logical_axis_rules(1, 2)
  embed = [axis for name, axis in rules if name == "embed"]
  assert embed[0] == "model" and dict(rules)["batch"] == "data"
  assert [a for n, a in sharding.standard_logical_axis_rules(2, 2) if n == "embed"][:2] == ["model", "data"]
  with pytest.raises(ValueError, match="activation_partitioning_dims must be 1 or 2"):
    sharding.PartitionConfig(activation_partitioning_dims=3)


@pytest.mark.slow
def test_training_loop_traces_its_step_under_the_rules(tmp_path, monkeypatch):
  """The loop's own compiled step (mesh 4 x 2) carries the constraints."""
  seen = []
  real = step_lib.jit_train_step

  def recording(*a, **k):
    fn = real(*a, **k)

    def call(*args):
      if not seen:
        seen.append(fn.lower(*args).as_text())
      return fn(*args)
    return call

  monkeypatch.setattr(step_lib, "jit_train_step", recording)
  cfg = tiny_config(tmp_path / "run", train_steps=1, partition=sharding.PartitionConfig(num_partitions=2))
  loop.train(cfg)
  axes = {a for a, _ in _constraints(seen[0])}
  assert '[{"data"}, {}, {}]' in axes and '[{"data"}, {}, {"model"}, {}]' in axes, axes
