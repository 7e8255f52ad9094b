"""Inference over a (prompted) T5: greedy and beam decoding on the KV cache, and
rank classification (scoring fixed candidate targets) with one encoder pass.

Every function encodes the inputs once. Decoding then runs one token per step in
`lax.while_loop` against a cache of `[B', max_len, H, k]` keys/values (B' = B, or
B * beams for beam search, the encoded states repeated per beam). Rank
classification instead runs the decoder teacher-forced on all candidates at once.
All functions are jittable with the model and the integer options static.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from prompt_tuning_jax.model import losses, t5

Array = jax.Array
EOS_ID = 1
NEG_INF = -1.0e7  # finite "impossible" log-probability: no inf - inf = nan


def encode(model: t5.Transformer, params: Any, encoder_input_tokens: Array, *,
           prompt_ids: Array | None = None) -> tuple[Array, Array]:
  """[B, L] tokens -> (encoded [B, L', d], valid [B, L']); L' includes the prompt."""
  return model.apply({"params": params}, encoder_input_tokens, prompt_ids=prompt_ids,
                     method=t5.Transformer.encode)


def init_cache(model: t5.Transformer, params: Any, encoded: Array, encoder_valid: Array,
               max_decode_length: int) -> Any:
  """Zeroed cache for [B, max_decode_length] decoding, shaped by an abstract pass."""
  batch = encoded.shape[0]
  dummy = jnp.zeros((batch, max_decode_length), jnp.int32)

  def allocate(p):
    _, state = model.apply({"params": p}, encoded, encoder_valid, dummy, decode=True,
                           method=t5.Transformer.decode, mutable=["cache"])
    return state["cache"]

  shapes = jax.eval_shape(allocate, params)
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def decode_step(model: t5.Transformer, params: Any, cache: Any, encoded: Array,
                encoder_valid: Array, tokens: Array) -> tuple[Array, Any]:
  """tokens [B] (the previous output, 0 at the start) -> (logits [B, V], new cache)."""
  logits, state = model.apply({"params": params, "cache": cache}, encoded, encoder_valid,
                              tokens[:, None], decode=True, method=t5.Transformer.decode,
                              mutable=["cache"])
  return logits[:, 0], state["cache"]


def greedy_decode(model: t5.Transformer, params: Any, encoder_input_tokens: Array,
                  max_decode_length: int, *, prompt_ids: Array | None = None) -> tuple[Array, Array]:
  """Argmax decoding until EOS or the length limit.

  Returns (tokens [B, T] with 0 after EOS, summed log-probability [B] of the emitted
  tokens up to and including EOS).
  """
  encoded, valid = encode(model, params, encoder_input_tokens, prompt_ids=prompt_ids)
  batch = encoder_input_tokens.shape[0]
  cache = init_cache(model, params, encoded, valid, max_decode_length)
  out = jnp.zeros((batch, max_decode_length), jnp.int32)
  init = (jnp.int32(0), cache, jnp.zeros((batch,), jnp.int32), out,
          jnp.zeros((batch,), bool), jnp.zeros((batch,), jnp.float32))

  def cond(carry):
    i, _, _, _, done, _ = carry
    return (i < max_decode_length) & ~jnp.all(done)

  def body(carry):
    i, cache, prev, out, done, score = carry
    logits, cache = decode_step(model, params, cache, encoded, valid, prev)
    logp = jax.nn.log_softmax(logits, axis=-1)
    token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    token_logp = jnp.take_along_axis(logp, token[:, None], axis=-1)[:, 0]
    score = score + jnp.where(done, 0.0, token_logp)
    token = jnp.where(done, 0, token)
    out = out.at[:, i].set(token)
    return i + 1, cache, token, out, done | (token == EOS_ID), score

  _, _, _, out, _, score = lax.while_loop(cond, body, init)
  return out, score


# ----------------------------------------------------------------------------- beam search

def brevity_penalty(length: Array | int, alpha: float) -> Array:
  """T5X's length normalizer ((5 + length) / 6) ** alpha; length counts EOS."""
  return jnp.power((5.0 + jnp.asarray(length, jnp.float32)) / 6.0, alpha)


def sequence_lengths(tokens: Array) -> Array:
  """[..., T] -> number of tokens up to and including the first EOS (T if none)."""
  t = tokens.shape[-1]
  is_eos = tokens == EOS_ID
  first = jnp.argmax(is_eos, axis=-1)
  return jnp.where(jnp.any(is_eos, axis=-1), first + 1, t).astype(jnp.int32)


class _Beams(NamedTuple):
  step: Array           # scalar int32: tokens emitted so far
  live_tokens: Array    # [B, K, T] beams without EOS
  live_logp: Array      # [B, K] summed log-probs, sorted descending
  fin_tokens: Array     # [B, K, T] EOS-terminated hypotheses
  fin_scores: Array     # [B, K] penalized scores, sorted descending (NEG_INF = empty)
  cache: Any            # decoder cache with batch B * K


def _gather(x: Array, index: Array) -> Array:
  """x [B, N, ...], index [B, M] -> [B, M, ...]."""
  return jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)


def _gather_cache(cache: Any, index: Array) -> Any:
  """Reorder the per-beam cache rows ([B * K, ...] leaves) by beam index [B, K]."""
  b, k = index.shape

  def reorder(x):
    if x.ndim < 2 or x.shape[0] != b * k:  # indices, slot masks: not per beam
      return x
    return _gather(x.reshape((b, k) + x.shape[1:]), index).reshape(x.shape)

  return jax.tree.map(reorder, cache)


def _beam_step(state: _Beams, logp: Array, cache: Any, alpha: float) -> _Beams:
  """Extend the K live beams by one token (logp [B, K, V]); update both sets."""
  b, k, v = logp.shape
  t = state.live_tokens.shape[-1]
  total = (state.live_logp[:, :, None] + logp).reshape(b, k * v)
  top_logp, top_index = lax.top_k(total, 2 * k)  # at most K of these end in EOS
  src_beam, token = top_index // v, (top_index % v).astype(jnp.int32)
  seqs = _gather(state.live_tokens, src_beam)
  seqs = jnp.where(jnp.arange(t) == state.step, token[:, :, None], seqs)
  is_eos = token == EOS_ID
  # Live set: the best K continuations that did not just end.
  _, keep = lax.top_k(jnp.where(is_eos, -jnp.inf, top_logp), k)
  cache = _gather_cache(cache, _gather(src_beam, keep))
  # Finished set: an EOS counts if it ranks among the top K of all continuations, so
  # that one beam reproduces greedy decoding exactly.
  rank_ok = jnp.arange(2 * k)[None, :] < k
  new_scores = jnp.where(is_eos & rank_ok, top_logp / brevity_penalty(state.step + 1, alpha), NEG_INF)
  pool_scores = jnp.concatenate([state.fin_scores, new_scores], axis=1)
  pool_tokens = jnp.concatenate([state.fin_tokens, seqs], axis=1)
  fin_scores, best = lax.top_k(pool_scores, k)
  return _Beams(state.step + 1, _gather(seqs, keep), _gather(top_logp, keep),
                _gather(pool_tokens, best), fin_scores, cache)


def _beams_done(state: _Beams, max_len: int, alpha: float) -> Array:
  """[B]: K hypotheses finished and no live beam can still beat the worst of them.

  Log-probs only fall as beams grow and the penalty is largest at `max_len` (alpha
  >= 0), so `live_logp / penalty(max_len)` bounds any later score.
  """
  worst = state.fin_scores[:, -1]
  bound = state.live_logp[:, 0] / brevity_penalty(max_len, alpha)
  return (worst > NEG_INF / 2) & (bound <= worst)


def _final_beams(state: _Beams, max_len: int, alpha: float) -> tuple[Array, Array]:
  """Finished hypotheses first; beams that hit `max_len` without EOS fill any gap.

  Both sets are sorted, so slot j takes finished[j] while there are enough, then
  live[j - num_finished].
  """
  k = state.fin_scores.shape[1]
  num_fin = jnp.sum(state.fin_scores > NEG_INF / 2, axis=1, keepdims=True)  # [B, 1]
  slot = jnp.arange(k)[None, :]
  from_live = slot >= num_fin
  live_index = jnp.clip(slot - num_fin, 0, k - 1)
  live_scores = state.live_logp / brevity_penalty(max_len, alpha)
  tokens = jnp.where(from_live[:, :, None], _gather(state.live_tokens, live_index), state.fin_tokens)
  scores = jnp.where(from_live, _gather(live_scores, live_index), state.fin_scores)
  return tokens, scores


def beam_search(model: t5.Transformer, params: Any, encoder_input_tokens: Array,
                max_decode_length: int, *, num_beams: int = 4, alpha: float = 0.6,
                prompt_ids: Array | None = None) -> tuple[Array, Array]:
  """Beam search with T5X's brevity penalty; the cache holds B * num_beams rows.

  Returns (tokens [B, K, T], 0 after EOS; scores [B, K] = summed log-prob up to and
  including EOS / brevity_penalty(length)), beams sorted best first. A beam that
  reaches the limit without EOS scores with length T and ranks after all finished ones.
  An EOS continuation finishes a hypothesis only if it ranks among the top K of all
  continuations, so num_beams=1 with alpha=0 is exactly greedy decoding.
  """
  if num_beams < 1:
    raise ValueError(f"num_beams must be >= 1, got {num_beams}")
  if alpha < 0:
    raise ValueError(f"beam search alpha must be >= 0, got {alpha}")
  if model.config.vocab_size < 2 * num_beams:
    raise ValueError(f"beam search needs vocab_size >= 2 * num_beams, got "
                     f"{model.config.vocab_size} < {2 * num_beams}")
  encoded, valid = encode(model, params, encoder_input_tokens, prompt_ids=prompt_ids)
  b, k, t = encoder_input_tokens.shape[0], num_beams, max_decode_length
  encoded, valid = jnp.repeat(encoded, k, axis=0), jnp.repeat(valid, k, axis=0)
  cache = init_cache(model, params, encoded, valid, t)
  first_only = jnp.where(jnp.arange(k) == 0, 0.0, NEG_INF)  # K identical empty beams
  state = _Beams(jnp.int32(0), jnp.zeros((b, k, t), jnp.int32), jnp.tile(first_only, (b, 1)),
                 jnp.zeros((b, k, t), jnp.int32), jnp.full((b, k), NEG_INF), cache)

  def cond(s: _Beams):
    return (s.step < t) & ~jnp.all(_beams_done(s, t, alpha))

  def body(s: _Beams):
    prev = lax.dynamic_index_in_dim(s.live_tokens, jnp.maximum(s.step - 1, 0), axis=2, keepdims=False)
    prev = jnp.where(s.step == 0, 0, prev).reshape(b * k)
    logits, new_cache = decode_step(model, params, s.cache, encoded, valid, prev)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1).reshape(b, k, -1)
    return _beam_step(s, logp, new_cache, alpha)

  return _final_beams(lax.while_loop(cond, body, state), t, alpha)


# ------------------------------------------------------------------------ rank classification

def shift_right(targets: Array) -> Array:
  """Teacher-forcing decoder inputs: [..., T] targets -> 0 followed by targets[:-1]."""
  return jnp.concatenate([jnp.zeros_like(targets[..., :1]), targets[..., :-1]], axis=-1)


def candidate_log_probs(model: t5.Transformer, params: Any, encoder_input_tokens: Array,
                        candidates: Array, *, prompt_ids: Array | None = None) -> Array:
  """Per-token log p of each candidate target, encoding each example once.

  candidates: [C, T] shared by all examples, or [B, C, T] per example (a pair scorer passes
  [B, 1, T]); EOS-terminated, 0-padded. Returns [B, C, T] log p(token), 0 at padding.
  """
  encoded, valid = encode(model, params, encoder_input_tokens, prompt_ids=prompt_ids)
  b = encoder_input_tokens.shape[0]
  if candidates.ndim == 2:
    candidates = jnp.broadcast_to(candidates, (b,) + candidates.shape)
  c, t = candidates.shape[1:]
  flat = candidates.reshape(b * c, t).astype(jnp.int32)
  logits = model.apply({"params": params}, jnp.repeat(encoded, c, axis=0), jnp.repeat(valid, c, axis=0),
                       shift_right(flat), flat, method=t5.Transformer.decode)
  return jnp.where(flat > 0, losses.token_log_likelihood(logits, flat), 0.0).reshape(b, c, t)


def score_candidates(model: t5.Transformer, params: Any, encoder_input_tokens: Array,
                     candidates: Array, *, prompt_ids: Array | None = None) -> Array:
  """Summed log-likelihood [B, C] of each candidate (EOS included): rank classification's
  and the pair scorer's one scoring path. An all-pad candidate (padding in a per-example
  list) scores NEG_INF."""
  scores = candidate_log_probs(model, params, encoder_input_tokens, candidates, prompt_ids=prompt_ids).sum(-1)
  return jnp.where(jnp.any(candidates > 0, axis=-1), scores, NEG_INF)
