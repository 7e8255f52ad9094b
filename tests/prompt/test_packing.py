"""Packed encoder inputs with one prompt copy per segment give the unpacked losses."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning_jax.text import data
from prompt_tuning_jax.model.config import T5Config
from prompt_tuning_jax.model import losses, t5
from prompt_tuning_jax.prompt import wrapper

CFG = T5Config(vocab_size=60, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32, num_encoder_layers=2,
               num_decoder_layers=2)
INPUTS = [[5, 6, 7, 8, 1], [9, 10, 1], [11, 12, 13, 1]]
TARGETS = [[20, 1], [21, 22, 1], [23, 1]]


def _token_log_probs(model, params, batch):
  """Teacher-forced log p(target) [B, T] from one full forward pass (the packing reference)."""
  logits = model.apply({"params": params}, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
                       batch["decoder_target_tokens"], encoder_segment_ids=batch.get("encoder_segment_ids"),
                       decoder_segment_ids=batch.get("decoder_segment_ids"))
  per_token = np.asarray(losses.token_log_likelihood(logits, batch["decoder_target_tokens"]))
  return per_token * (batch["decoder_target_tokens"] > 0)


def _unpacked():
  enc = np.zeros((3, 8), np.int32)
  tgt = np.zeros((3, 4), np.int32)
  for i, (a, b) in enumerate(zip(INPUTS, TARGETS)):
    enc[i, :len(a)], tgt[i, :len(b)] = a, b
  return data.encdec_features(enc, tgt)


def _packed(prompt_length, pad_to=28, tgt_pad=9):
  enc, enc_seg, tgt, tgt_seg, dec_in = ([] for _ in range(5))
  for s, (a, b) in enumerate(zip(INPUTS, TARGETS), start=1):
    a = [data.PROMPT_SLOT_ID] * prompt_length + a  # what data.reserve_prompt_slots does
    enc += a
    enc_seg += [s] * len(a)
    tgt += b
    tgt_seg += [s] * len(b)
    dec_in += [0] + b[:-1]  # shifted within each segment, as seqio packs
  pad = lambda x, n: np.array([x + [0] * (n - len(x))], np.int32)
  return {"encoder_input_tokens": pad(enc, pad_to), "encoder_segment_ids": pad(enc_seg, pad_to),
          "decoder_target_tokens": pad(tgt, tgt_pad), "decoder_input_tokens": pad(dec_in, tgt_pad),
          "decoder_segment_ids": pad(tgt_seg, tgt_pad), "decoder_loss_weights": pad([1] * len(tgt), tgt_pad)}


@pytest.mark.slow
@pytest.mark.parametrize("prompt_length", [0, 3])
def test_packed_per_example_log_likelihood_equals_unpacked(prompt_length):
  params = t5.init_params(CFG, jax.random.PRNGKey(0))
  cfg = wrapper.PromptConfig(length=prompt_length)
  params = wrapper.set_prompt(params, jax.random.uniform(jax.random.PRNGKey(1), (prompt_length, 16), minval=-.5,
                                                          maxval=.5))
  model = wrapper.make_model(CFG, cfg)
  want = _token_log_probs(model, params, _unpacked()).sum(-1)
  packed = _packed(prompt_length)
  per_token = _token_log_probs(model, params, packed)
  seg = packed["decoder_segment_ids"][0]
  got = [float(np.asarray(per_token)[0][seg == s].sum()) for s in (1, 2, 3)]
  np.testing.assert_allclose(got, np.asarray(want), rtol=1e-5, atol=1e-6)


def test_each_segment_gets_its_own_prompt_copy():
  x = jnp.arange(1, 10, dtype=jnp.float32).reshape(1, 9, 1)
  seg = jnp.array([[1, 1, 1, 2, 2, 2, 2, 0, 0]])  # two slots reserved at each segment start
  prompt = jnp.array([[[-1.], [-2.]]])
  out = wrapper._fill_segment_prompts(x, seg, prompt)
  assert out[0, :, 0].tolist() == [-1, -2, 3, -1, -2, 6, 7, 8, 9]


def test_reserve_prompt_slots_prefixes_and_truncates():
  import tensorflow as tf
  ds = tf.data.Dataset.from_tensor_slices({"inputs": tf.constant([[5, 6, 7, 8, 1]])})
  out = next(iter(data.reserve_prompt_slots(ds, prompt_length=3, input_length=6)))
  assert out["inputs"].numpy().tolist() == [1, 1, 1, 5, 6, 7]
