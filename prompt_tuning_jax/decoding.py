"""Incremental decoding over the KV cache: encode once, then one token per step.

`init_cache` allocates the cache from abstract shapes (no forward pass);
`decode_step` runs the decoder on one token; `greedy_decode` loops it in `lax.while_loop`.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from prompt_tuning_jax import t5

Array = jax.Array
EOS_ID = 1


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
  encoded, valid = model.apply({"params": params}, encoder_input_tokens, prompt_ids=prompt_ids,
                               method=t5.Transformer.encode)
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
