"""Rematerialisation (T5Config.remat_policy) changes memory, never numbers or names.

Reference: the same model without remat. Loss and gradients (every weight, with and
without dropout) must agree to 1e-6 of each leaf's largest value; parameter paths must
be identical (T5X names).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from prompt_tuning_jax.model import config
from prompt_tuning_jax.model import losses, t5

CFG = config.T5Config(vocab_size=50, emb_dim=16, num_heads=4, head_dim=4, mlp_dim=24, num_encoder_layers=2,
                      num_decoder_layers=2, relative_attention_num_buckets=8, dropout_rate=0.1)


def _batch():
  rng = np.random.RandomState(0)
  enc = rng.randint(2, 50, (3, 11))
  enc[1, 6:] = 0
  targets = rng.randint(2, 50, (3, 5))
  targets[2, 3:] = 0
  dec_in = np.concatenate([np.zeros((3, 1), int), targets[:, :-1]], axis=1)
  return {"encoder_input_tokens": jnp.asarray(enc), "decoder_input_tokens": jnp.asarray(dec_in),
          "decoder_target_tokens": jnp.asarray(targets)}


def _loss_and_grads(cfg, params, dropout_rng):
  model = t5.Transformer(cfg)
  fn = jax.jit(jax.value_and_grad(lambda p: losses.loss_fn(model, p, _batch(), dropout_rng)[0]))
  return fn(params)


@pytest.mark.slow
@pytest.mark.parametrize("policy,dropout", [("full", True), ("dots", False)])
def test_remat_same_loss_and_gradients(policy, dropout):
  params = t5.init_params(CFG, jax.random.PRNGKey(0))
  rng = jax.random.PRNGKey(1) if dropout else None
  loss0, grads0 = _loss_and_grads(CFG, params, rng)
  loss1, grads1 = _loss_and_grads(CFG.replace(remat_policy=policy), params, rng)
  np.testing.assert_allclose(loss1, loss0, rtol=1e-6)
  flat0, flat1 = traverse_util.flatten_dict(grads0, sep="/"), traverse_util.flatten_dict(grads1, sep="/")
  assert flat0.keys() == flat1.keys()
  for name in flat0:
    # XLA may re-associate float32 sums inside the recomputed fusions: 1e-6 of the leaf's scale
    scale = float(np.abs(flat0[name]).max())
    np.testing.assert_allclose(flat1[name], flat0[name], rtol=0, atol=1e-6 * scale, err_msg=name)


@pytest.mark.parametrize("policy", ["full", "dots"])
def test_remat_keeps_t5x_names_and_is_applied(policy):
  cfg = CFG.replace(remat_policy=policy)
  plain = traverse_util.flatten_dict(t5.init_params(CFG, jax.random.PRNGKey(0)), sep="/")
  wrapped = traverse_util.flatten_dict(t5.init_params(cfg, jax.random.PRNGKey(0)), sep="/")
  assert {k: v.shape for k, v in wrapped.items()} == {k: v.shape for k, v in plain.items()}
  assert "encoder/layers_1/mlp/wi_0/kernel" in wrapped
  batch = _batch()
  model = t5.Transformer(cfg)
  jaxpr = str(jax.make_jaxpr(jax.grad(lambda p: losses.loss_fn(model, p, batch, None)[0]))(
      traverse_util.unflatten_dict(plain, sep="/")))
  # one checkpoint (remat) region per layer of each stack
  assert jaxpr.count("checkpoint[") + jaxpr.count("remat") >= cfg.num_encoder_layers + cfg.num_decoder_layers


def test_remat_policy_refused_when_unknown():
  with pytest.raises(ValueError, match="remat_policy"):
    CFG.replace(remat_policy="some")
