"""Greedy and beam decoding over the KV cache, and rank classification, checked
against the teacher-forced full pass of the same model (an independent code path)."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning_jax.model.config import T5Config
from prompt_tuning_jax.model import decoding
from prompt_tuning_jax.prompt import wrapper

CFG = T5Config(vocab_size=64, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32,
               num_encoder_layers=1, num_decoder_layers=2)
MAX_LEN = 6


@pytest.fixture(scope="module")
def setup():
  model = wrapper.make_model(CFG, wrapper.PromptConfig(length=3))
  tok = jnp.ones((1, 2), jnp.int32)
  params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), tok, tok, tok)["params"])
  params = wrapper.set_prompt(params, jax.random.normal(jax.random.PRNGKey(1), (3, CFG.emb_dim)))
  # Make EOS likely in some contexts so sequences end at different lengths.
  kernel = params["decoder"]["logits_dense"]["kernel"]
  params["decoder"]["logits_dense"]["kernel"] = kernel.at[:, decoding.EOS_ID].mul(2.0)
  rng = np.random.RandomState(0)
  inputs = rng.randint(2, CFG.vocab_size, size=(6, 10)).astype(np.int32)
  for i, n in enumerate([4, 6, 9, 3, 7, 5]):
    inputs[i, n] = decoding.EOS_ID
    inputs[i, n + 1:] = 0
  return model, params, inputs


@functools.partial(jax.jit, static_argnums=0)
def _full_pass_logp(model, params, inputs, tokens):
  logits = model.apply({"params": params}, inputs, decoding.shift_right(tokens), None)
  return jax.nn.log_softmax(logits, axis=-1)


def full_pass_logp(model, params, inputs, tokens):
  """log p of every position of `tokens` [B, T] given its own prefix, no cache."""
  return np.asarray(_full_pass_logp(model, params, inputs, jnp.asarray(tokens)))


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def greedy(model, params, inputs, max_len=MAX_LEN, unused=None):
  return decoding.greedy_decode(model, params, inputs, max_len)


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def beam(model, params, inputs, num_beams, alpha):
  return decoding.beam_search(model, params, inputs, MAX_LEN, num_beams=num_beams, alpha=alpha)


score = jax.jit(decoding.score_candidates, static_argnums=0)


def test_brevity_penalty_hand_values():
  assert float(decoding.brevity_penalty(7, 1.0)) == pytest.approx(2.0)       # (5+7)/6
  assert float(decoding.brevity_penalty(19, 0.5)) == pytest.approx(2.0)      # sqrt(24/6)
  assert float(decoding.brevity_penalty(1, 0.6)) == pytest.approx(1.0)       # (6/6)^a
  assert float(decoding.brevity_penalty(4, 0.0)) == pytest.approx(1.0)
  np.testing.assert_array_equal(decoding.sequence_lengths(jnp.array([[5, 1, 0], [5, 6, 7], [1, 0, 0]])),
                                [2, 3, 1])


@pytest.mark.slow
def test_greedy_matches_full_pass_argmax(setup):
  model, params, inputs = setup
  tokens, scores = greedy(model, params, inputs)
  tokens, scores = np.asarray(tokens), np.asarray(scores)
  logp = full_pass_logp(model, params, inputs, tokens)
  lengths = np.asarray(decoding.sequence_lengths(tokens))
  assert len(set(lengths.tolist())) > 1, "fixture should give different output lengths"
  for b in range(len(inputs)):
    n = lengths[b]
    np.testing.assert_array_equal(tokens[b, :n], logp[b, :n].argmax(-1))
    assert (tokens[b, n:] == 0).all()
    expected = logp[b, np.arange(n), tokens[b, :n]].sum()
    assert scores[b] == pytest.approx(expected, abs=1e-4)


@pytest.fixture(scope="module")
def beams(setup):
  model, params, inputs = setup
  tokens, scores = beam(model, params, inputs, 4, 0.6)
  return np.asarray(tokens), np.asarray(scores)


def test_beam_scores_are_penalized_full_pass_likelihoods(setup, beams):
  model, params, inputs = setup
  tokens, scores = beams
  assert tokens.shape == (6, 4, MAX_LEN) and scores.shape == (6, 4)
  for k in range(4):
    logp = full_pass_logp(model, params, inputs, tokens[:, k])
    lengths = np.asarray(decoding.sequence_lengths(tokens[:, k]))
    for b in range(len(inputs)):
      n = lengths[b]
      loglik = logp[b, np.arange(n), tokens[b, k, :n]].sum()
      assert scores[b, k] == pytest.approx(loglik / ((5.0 + n) / 6.0) ** 0.6, abs=1e-4)
      assert (tokens[b, k, n:] == 0).all()


def test_beams_sorted_and_distinct(beams):
  tokens, scores = beams
  assert (np.diff(scores, axis=1) <= 1e-6).all()
  for b in range(tokens.shape[0]):
    assert len({tuple(row) for row in tokens[b]}) == 4


def test_one_beam_without_penalty_is_greedy(setup):
  model, params, inputs = setup
  g_tokens, g_scores = greedy(model, params, inputs)
  b_tokens, b_scores = beam(model, params, inputs, 1, 0.0)
  np.testing.assert_array_equal(np.asarray(b_tokens[:, 0]), np.asarray(g_tokens))
  np.testing.assert_allclose(np.asarray(b_scores[:, 0]), np.asarray(g_scores), atol=1e-5)


def test_beam_search_rejects_bad_options(setup):
  model, params, inputs = setup
  with pytest.raises(ValueError, match="num_beams"):
    decoding.beam_search(model, params, inputs, MAX_LEN, num_beams=0)
  with pytest.raises(ValueError, match="vocab_size"):
    decoding.beam_search(model, params, inputs, MAX_LEN, num_beams=40)


def test_rank_scores_match_full_pass(setup):
  """Per-example candidates (some padded) scored with one encoder pass agree with the
  teacher-forced full pass, run once per (example, candidate)."""
  model, params, inputs = setup
  rng = np.random.RandomState(1)
  cands = rng.randint(2, CFG.vocab_size, size=(len(inputs), 3, 4)).astype(np.int32)
  cands[:, :, 3] = 0
  cands[:, 0, 1:] = [decoding.EOS_ID, 0, 0]   # a one-token label
  cands[:, 1, 2] = decoding.EOS_ID
  cands[:, 2, 3] = decoding.EOS_ID            # length 4 uses the last column
  cands[:3, 2] = 0                            # padding: the first 3 examples have 2 labels
  scores = np.asarray(score(model, params, inputs, cands))
  b, c, _ = cands.shape
  targets = cands.reshape(b * c, -1)
  logp = full_pass_logp(model, params, np.repeat(inputs, c, axis=0), targets)
  reference = (np.take_along_axis(logp, targets[..., None], -1)[..., 0] * (targets > 0)).sum(-1).reshape(b, c)
  real = cands.any(-1)
  np.testing.assert_allclose(scores[real], reference[real], atol=1e-5)
  assert (scores[~real] == decoding.NEG_INF).all()
