"""The prompt wrapper: placement, mask growth, P=0 identity, prompt banks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning_jax.model.config import T5Config
from prompt_tuning_jax.model import t5
from prompt_tuning_jax.prompt import wrapper

CFG = T5Config(vocab_size=50, emb_dim=8, num_heads=2, head_dim=4, mlp_dim=16, num_encoder_layers=1,
               num_decoder_layers=1)


def _wrap(combination, embedded, valid, prompt, prompt_ids=None, num_prompts=1):
  cfg = wrapper.PromptConfig(length=prompt.shape[-2], combination=combination, num_prompts=num_prompts)
  module = wrapper.PromptWrapper(cfg, embedded.shape[-1])
  params = {"params": {"prompt": {"prompt": prompt}}}
  out, mask, _ = module.apply(params, embedded, valid, prompt_ids)
  return out, mask


def test_combinations_place_the_prompt_where_named():
  # two examples, 4 positions, d=1; x values = 10*b + t, tokens: 3 then 2 valid (EOS last)
  x = jnp.array([[[10.], [11.], [12.], [0.]], [[20.], [21.], [0.], [0.]]])
  valid = jnp.array([[True, True, True, False], [True, True, False, False]])
  p = jnp.array([[-1.], [-2.]])
  out, mask = _wrap("prefix", x, valid, p)
  assert out[..., 0].tolist() == [[-1, -2, 10, 11, 12, 0], [-1, -2, 20, 21, 0, 0]]
  assert mask.tolist() == [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]]
  out, _ = _wrap("prefix_after_first", x, valid, p)
  assert out[..., 0].tolist() == [[10, -1, -2, 11, 12, 0], [20, -1, -2, 21, 0, 0]]
  out, mask = _wrap("suffix_before_eos", x, valid, p)
  assert out[..., 0].tolist() == [[10, 11, -1, -2, 12, 0], [20, -1, -2, 21, 0, 0]]
  assert mask.tolist() == [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]]


@pytest.mark.slow
def test_zero_length_prompt_is_the_plain_model():
  params = t5.init_params(CFG, jax.random.PRNGKey(0))
  enc = jnp.array([[5, 6, 7, 1, 0]])
  dec_in, dec_t = jnp.array([[0, 3, 4]]), jnp.array([[3, 4, 1]])
  plain = t5.Transformer(CFG).apply({"params": params}, enc, dec_in, dec_t)
  model = wrapper.make_model(CFG, wrapper.PromptConfig(length=0))
  with_empty = model.apply({"params": wrapper.set_prompt(params, jnp.zeros((0, 8)))}, enc, dec_in, dec_t)
  np.testing.assert_array_equal(np.asarray(plain), np.asarray(with_empty))


@pytest.mark.slow
def test_prompt_bank_selects_each_examples_prompt():
  params = t5.init_params(CFG, jax.random.PRNGKey(0))
  bank = jax.random.uniform(jax.random.PRNGKey(1), (3, 4, 8), minval=-0.5, maxval=0.5)
  enc = jnp.array([[5, 6, 7, 1], [8, 9, 1, 0], [5, 5, 1, 0]])
  dec_in, dec_t = jnp.zeros((3, 2), jnp.int32), jnp.array([[3, 1], [4, 1], [5, 1]])
  ids = jnp.array([2, 0, 1])
  banked = wrapper.make_model(CFG, wrapper.PromptConfig(length=4, num_prompts=3)).apply(
      {"params": wrapper.set_prompt(params, bank)}, enc, dec_in, dec_t, prompt_ids=ids)
  single = wrapper.make_model(CFG, wrapper.PromptConfig(length=4))
  for b in range(3):
    alone = single.apply({"params": wrapper.set_prompt(params, bank[ids[b]])}, enc[b:b + 1], dec_in[b:b + 1],
                         dec_t[b:b + 1])
    np.testing.assert_allclose(np.asarray(banked[b]), np.asarray(alone[0]), rtol=1e-5, atol=1e-6)


def test_prompt_path_matches_the_original_release():
  model = wrapper.make_model(CFG, wrapper.PromptConfig(length=3))
  params = model.init(jax.random.PRNGKey(0), *(jnp.ones((1, 2), jnp.int32),) * 3)["params"]
  assert wrapper.get_prompt(params).value.shape == (3, 8)


def test_bad_prompt_config_is_named():
  with pytest.raises(ValueError, match="PromptConfig.combination"):
    wrapper.PromptConfig(combination="middle")
  with pytest.raises(ValueError, match="PromptConfig.length"):
    wrapper.PromptConfig(length=-1)
