"""Model tuning starts Adafactor from the checkpoint's second moments (the paper's baseline).

Checked against the real T5X fixture's own `param_states` (unfactored: its dims are < 128)
and, for factored weights, against hand-placed row/column statistics."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from prompt_tuning_jax.model import config
from prompt_tuning_jax.checkpoints import backbone, t5x
from prompt_tuning_jax.trainer import optim
from prompt_tuning_jax.trainer.loop import _checkpoint_optimizer_state

FIXTURE = "tests/testdata/t5x_checkpoints/test_t5_1_1_tiny/checkpoint_3"
MODEL = optim.OptimConfig(learning_rate=1e-3, multiply_by_parameter_scale=True, trainable_patterns=(".*",))


def _factored(state):
  return [x for x in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, optax.FactoredState))
          if isinstance(x, optax.FactoredState)]


def test_real_t5x_fixture_states_land_in_optax_state():
  params, _ = backbone.load_frozen(FIXTURE, config.SIZES["tiny_zarr"])
  fresh = optim.make_optimizer(MODEL).init(params)
  state = _checkpoint_optimizer_state(FIXTURE, fresh)
  index = t5x.open_t5x_checkpoint(FIXTURE)
  v = _factored(state)[-1].v  # the 'trainable' label's state
  key = "encoder/layers_0/attention/key/kernel"
  want = index.read(key + "/v", states=True)
  assert np.abs(want).max() > 0  # the fixture's moments are not zeros
  np.testing.assert_array_equal(np.asarray(v["encoder"]["layers_0"]["attention"]["key"]["kernel"]), want)
  np.testing.assert_array_equal(np.asarray(v["decoder"]["decoder_norm"]["scale"]),
                                index.read("decoder/decoder_norm/scale/v", states=True))


def test_factored_statistics_matched_by_shape_either_naming():
  params = {"w": {"kernel": jnp.ones((256, 128))}}
  fresh = optim.make_optimizer(MODEL).init(params)
  row, col = np.full((128,), 2.0, np.float32), np.full((256,), 3.0, np.float32)
  for names in ({"v_row": row, "v_col": col}, {"v_row": col, "v_col": row}):
    states = dict(names, v=np.zeros((1,), np.float32))
    got, n = optim.restore_adafactor_states(fresh, lambda k: states.get(k.rsplit("/", 1)[1]))
    fs = _factored(got)[-1]
    assert n == 1
    np.testing.assert_array_equal(np.asarray(fs.v_row["w"]["kernel"]), row)
    np.testing.assert_array_equal(np.asarray(fs.v_col["w"]["kernel"]), col)


def test_wrong_shapes_are_refused_with_the_parameter_named():
  fresh = optim.make_optimizer(MODEL).init({"w": {"kernel": jnp.ones((256, 128))}})
  bad = {"v_row": np.ones((7,)), "v_col": np.ones((256,)), "v": np.zeros((1,))}
  with pytest.raises(ValueError, match="w/kernel"):
    optim.restore_adafactor_states(fresh, lambda k: bad.get(k.rsplit("/", 1)[1]))


def test_random_weights_have_no_state_to_restore():
  fresh = optim.make_optimizer(MODEL).init({"w": {"kernel": jnp.ones((4, 4))}})
  assert _checkpoint_optimizer_state("random:0", fresh) is fresh
