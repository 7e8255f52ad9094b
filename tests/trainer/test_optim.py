"""The optimizer against a plain-numpy transcription of T5X's Adafactor update rule."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from prompt_tuning_jax.prompt import PROMPT_PATTERN
from prompt_tuning_jax.trainer import optim


def t5x_adafactor_reference(param, grads, *, lr, step0, factored, decay=0.8, clip=1.0, wd=1e-5, eps=1e-30):
  """t5x/adafactor.py apply_param_gradient, no momentum, no parameter scaling."""
  p = param.astype(np.float64)
  v = np.zeros_like(p)
  v_row, v_col = np.zeros(p.shape[0]), np.zeros(p.shape[1])
  for i, g in enumerate(grads):
    g = g.astype(np.float64)
    rate = 1.0 - (step0 + i + 1.0) ** (-decay)
    mix = 1.0 - rate
    g2 = g * g + eps
    if factored:  # the two largest dims, reduce the smaller-index roles as T5X picks them
      v_row = rate * v_row + mix * g2.mean(axis=1)
      v_col = rate * v_col + mix * g2.mean(axis=0)
      row_factor = (v_row / v_row.mean()) ** -0.5
      y = g * row_factor[:, None] * (v_col[None, :] ** -0.5)
    else:
      v = rate * v + mix * g2
      y = g * v ** -0.5
    y = y / max(1.0, np.sqrt(np.mean(y * y)) / clip)
    p = (1.0 - wd) * p - lr * y
  return p


@pytest.mark.parametrize("shape,patterns,factored", [((100, 48), (PROMPT_PATTERN,), False),
                                                      ((150, 130), (".*",), True)])
def test_matches_t5x_adafactor(shape, patterns, factored):
  rng = np.random.RandomState(0)
  path = "encoder/prompt/prompt/prompt" if factored is False else "decoder/mlp/wi_0/kernel"
  keys = path.split("/")
  param = rng.randn(*shape).astype(np.float32)
  grads = [rng.randn(*shape).astype(np.float32) * (i + 1) for i in range(4)]

  def nest(x):
    for k in reversed(keys):
      x = {k: x}
    return x

  cfg = optim.OptimConfig(learning_rate=0.3, step_offset=1_100_000, trainable_patterns=patterns)
  opt = optim.make_optimizer(cfg)
  params = nest(jnp.asarray(param))
  state = opt.init(params)
  for g in grads:
    updates, state = opt.update(nest(jnp.asarray(g)), state, params)
    params = optax.apply_updates(params, updates)
  got = np.asarray(jax.tree.leaves(params)[0])
  want = t5x_adafactor_reference(param, grads, lr=0.3, step0=1_100_000, factored=factored)
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


def test_prompt_second_moment_is_unfactored_even_when_long():
  params = {"encoder": {"prompt": {"prompt": {"prompt": jnp.zeros((150, 256))}}}}
  state = optim.make_optimizer(optim.OptimConfig()).init(params)
  shapes = [x.shape for x in jax.tree.leaves(state)]
  assert (150, 256) in shapes  # full v, not v_row / v_col


def test_split_and_merge_by_regex():
  params = {"encoder": {"prompt": {"prompt": {"prompt": np.ones((2, 3))}}, "layers_0": {"w": np.zeros(3)}},
            "decoder": {"w": np.zeros(2)}}
  trainable, frozen = optim.split_params(params, (PROMPT_PATTERN,))
  assert list(jax.tree.leaves(trainable)[0].shape) == [2, 3]
  assert "prompt" not in frozen["encoder"]
  merged = optim.merge_params(trainable, frozen)
  assert jax.tree.structure(merged) == jax.tree.structure(params)
  with pytest.raises(ValueError, match="match no parameter"):
    optim.split_params(params, ("nothing/.*",))


def test_frozen_leaves_never_move_even_when_given_to_the_optimizer():
  params = {"encoder": {"prompt": {"prompt": {"prompt": jnp.ones((4, 3))}}, "w": jnp.ones((3,))}}
  opt = optim.make_optimizer(optim.OptimConfig())
  state = opt.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = opt.update(grads, state, params)
  assert float(jnp.abs(updates["encoder"]["w"]).max()) == 0.0
  assert float(jnp.abs(updates["encoder"]["prompt"]["prompt"]["prompt"]).max()) > 0.0


def test_bad_regex_is_named():
  with pytest.raises(ValueError, match="trainable_patterns"):
    optim.OptimConfig(trainable_patterns=("(",))
