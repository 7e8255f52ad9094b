"""The train step: microbatched gradient accumulation gives the full-batch update."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning_jax.text import data
from prompt_tuning_jax.model.config import T5Config
from prompt_tuning_jax.prompt import PROMPT_PATTERN, wrapper
from prompt_tuning_jax.trainer import optim
from prompt_tuning_jax.trainer import step as step_lib

CFG = T5Config(vocab_size=64, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32, num_encoder_layers=1,
               num_decoder_layers=1)


@pytest.mark.slow
@pytest.mark.parametrize("patterns", [(PROMPT_PATTERN,), (".*",)], ids=["prompt", "model"])
def test_microbatches_give_the_full_batch_update(patterns):
  model = wrapper.make_model(CFG, wrapper.PromptConfig(length=3))
  params = nn.unbox(model.init(jax.random.PRNGKey(0), *(jnp.ones((1, 2), jnp.int32),) * 3)["params"])
  params = wrapper.set_prompt(params, jax.random.uniform(jax.random.PRNGKey(1), (3, 16), minval=-.5, maxval=.5))
  rng = np.random.RandomState(0)
  targets = rng.randint(1, 64, (8, 5))
  targets[::3, 3:] = 0  # pieces with different token counts
  batch = data.encdec_features(rng.randint(1, 64, (8, 10)), targets)
  opt = optim.make_optimizer(optim.OptimConfig(learning_rate=0.3, trainable_patterns=patterns))
  trainable, frozen = optim.split_params(params, patterns)
  results = []
  for n in (1, 4):
    state = step_lib.init_state(jax.tree.map(jnp.array, trainable), opt, jax.random.PRNGKey(2))  # donated
    fn = step_lib.jit_train_step(model, opt, step_lib.LossConfig(num_microbatches=n))
    state, metrics = fn(state, frozen, batch)
    results.append(jax.device_get((state.params, metrics)))
  (p1, m1), (p4, m4) = results
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p4)):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
  for key in ("loss", "cross_entropy", "z_loss", "token_accuracy", "num_tokens", "grad_norm"):
    np.testing.assert_allclose(m1[key], m4[key], rtol=2e-5, err_msg=key)


def test_indivisible_batch_is_named():
  with pytest.raises(ValueError, match="num_microbatches"):
    step_lib.LossConfig(num_microbatches=0)
