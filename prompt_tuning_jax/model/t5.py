"""T5 encoder-decoder with T5X's parameter names (T5 1.1 by default; T5 1.0 by config).

The encoder optionally takes an `input_wrapper`: a module factory applied to the
embedded inputs before the first layer and named `prompt`, so a soft prompt lives at
`encoder/prompt/...` exactly as in the original release while this file knows nothing
about prompts (see `prompt/wrapper.py`).

Delta-tuning methods (LoRA, adapters, prefixes, ...; see `methods/`) attach through one
generic slot, `interceptor`: a `flax.linen` method interceptor that every call below the
Transformer runs under, so a method can add parameters to, and transform the inputs and
outputs of, any layer by its type and path without this file knowing about it.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from prompt_tuning_jax.model.config import T5Config
from prompt_tuning_jax.model import layers

Array = jax.Array
# An input wrapper maps (embedded [B, L, d], valid [B, L], prompt_ids [B] | None,
# segment_ids [B, L] | None) to (embedded [B, L', d], valid [B, L'], segment_ids [B, L'] | None).
InputWrapperFactory = Callable[..., nn.Module]
# A flax method interceptor: (next_fun, args, kwargs, context) -> outputs (`nn.intercept_methods`).
Interceptor = Callable[..., Any]


def remat_layer(cls: type[nn.Module], policy: str, static_argnums: tuple[int, ...]) -> type[nn.Module]:
  """`cls` wrapped in `nn.remat` per `T5Config.remat_policy`, so backprop keeps each layer's
  input only ('full') or its input and matmul outputs ('dots'), recomputing the rest.

  The explicit `name=` at the call site keeps T5X's parameter paths (`layers_{i}/...`).
  `static_argnums` counts `self` as 0 and names the bool flags (traced otherwise).
  """
  if policy == "none":
    return cls
  saveable = jax.checkpoint_policies.dots_with_no_batch_dims_saveable if policy == "dots" else None
  return nn.remat(cls, policy=saveable, static_argnums=static_argnums)


class EncoderLayer(nn.Module):
  config: T5Config

  @nn.compact
  def __call__(self, x: Array, bias: Array, enable_dropout: bool) -> Array:
    cfg = self.config
    norm = lambda name: layers.RMSNorm(cfg.layer_norm_epsilon, cfg.activation_dtype, name=name)
    y = norm("pre_attention_layer_norm")(x)
    y = layers.Attention(cfg, name="attention")(y, y, bias, enable_dropout=enable_dropout)
    x = x + layers.dropout(cfg, y, enable_dropout)
    y = norm("pre_mlp_layer_norm")(x)
    y = layers.MlpBlock(cfg, name="mlp")(y, enable_dropout=enable_dropout)
    x = x + layers.dropout(cfg, y, enable_dropout)
    return layers.constrain(x, ("batch", "length", "embed"))


class DecoderLayer(nn.Module):
  config: T5Config

  @nn.compact
  def __call__(self, x: Array, encoded: Array, self_bias: Array, cross_bias: Array,
               enable_dropout: bool, decode: bool) -> Array:
    cfg = self.config
    norm = lambda name: layers.RMSNorm(cfg.layer_norm_epsilon, cfg.activation_dtype, name=name)
    y = norm("pre_self_attention_layer_norm")(x)
    y = layers.Attention(cfg, name="self_attention")(y, y, self_bias, enable_dropout=enable_dropout,
                                                     decode=decode)
    x = x + layers.dropout(cfg, y, enable_dropout)
    y = norm("pre_cross_attention_layer_norm")(x)
    y = layers.Attention(cfg, name="encoder_decoder_attention")(y, encoded, cross_bias,
                                                                enable_dropout=enable_dropout)
    x = x + layers.dropout(cfg, y, enable_dropout)
    y = norm("pre_mlp_layer_norm")(x)
    y = layers.MlpBlock(cfg, name="mlp")(y, enable_dropout=enable_dropout)
    x = x + layers.dropout(cfg, y, enable_dropout)
    return layers.constrain(x, ("batch", "length", "embed"))


class Encoder(nn.Module):
  """Embeds (or wraps) inputs and runs the bidirectional stack."""
  config: T5Config
  shared_embedding: nn.Module
  input_wrapper: InputWrapperFactory | None = None

  @nn.compact
  def __call__(self, tokens: Array, *, enable_dropout: bool = False, prompt_ids: Array | None = None,
               segment_ids: Array | None = None) -> tuple[Array, Array, Array | None]:
    """[B, L] int tokens -> (encoded [B, L', d], valid [B, L'] bool, segment ids [B, L'] or None).

    L' = L + prompt. `segment_ids` (packed examples, 1-based, 0 = padding) keep each
    example's attention within itself; contiguous segments make arange relative
    positions equal to per-example ones.
    """
    cfg = self.config
    x = self.shared_embedding(tokens.astype(jnp.int32))
    valid = tokens > 0
    if self.input_wrapper is not None:
      x, valid, segment_ids = self.input_wrapper(name="prompt")(x, valid, prompt_ids, segment_ids)
    x = layers.constrain(x, ("batch", "length", "embed"))
    length = x.shape[1]
    bias = layers.RelativePositionBias(
        cfg.num_heads, cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance,
        bidirectional=True, dtype=cfg.activation_dtype, name="relpos_bias")(length, length)
    bias = layers.attention_bias(valid, valid, query_segments=segment_ids, key_segments=segment_ids) + bias
    x = layers.dropout(cfg, x, enable_dropout)
    layer = remat_layer(EncoderLayer, cfg.remat_policy, static_argnums=(3,))
    for i in range(cfg.num_encoder_layers):
      x = layer(cfg, name=f"layers_{i}")(x, bias, enable_dropout)
    x = layers.RMSNorm(cfg.layer_norm_epsilon, cfg.activation_dtype, name="encoder_norm")(x)
    return layers.dropout(cfg, x, enable_dropout), valid, segment_ids


class Decoder(nn.Module):
  """Causal stack with cross-attention; `decode=True` runs one cached step."""
  config: T5Config
  shared_embedding: nn.Module

  @nn.compact
  def __call__(self, encoded: Array, encoder_valid: Array, decoder_input_tokens: Array,
               decoder_target_tokens: Array | None = None, *, enable_dropout: bool = False,
               decode: bool = False, encoder_segment_ids: Array | None = None,
               decoder_segment_ids: Array | None = None) -> Array:
    """-> logits [B, T, V] float32."""
    cfg = self.config
    x = self.shared_embedding(decoder_input_tokens.astype(jnp.int32))
    x = layers.dropout(cfg, x, enable_dropout)
    relpos = layers.RelativePositionBias(
        cfg.num_heads, cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance,
        bidirectional=False, dtype=cfg.activation_dtype, name="relpos_bias")
    self_bias, query_valid = self._self_bias(relpos, decoder_input_tokens, decoder_target_tokens, decode,
                                             decoder_segment_ids)
    cross_bias = layers.attention_bias(query_valid, encoder_valid, query_segments=decoder_segment_ids,
                                       key_segments=encoder_segment_ids)
    # Decoding steps keep no residuals (no backprop), so they never rematerialise.
    layer = remat_layer(DecoderLayer, "none" if decode else cfg.remat_policy, static_argnums=(5, 6))
    for i in range(cfg.num_decoder_layers):
      x = layer(cfg, name=f"layers_{i}")(x, encoded, self_bias, cross_bias, enable_dropout, decode)
    x = layers.RMSNorm(cfg.layer_norm_epsilon, cfg.activation_dtype, name="decoder_norm")(x)
    x = layers.dropout(cfg, x, enable_dropout)
    if cfg.logits_via_embedding:
      logits = self.shared_embedding.attend(x) / jnp.sqrt(jnp.float32(cfg.emb_dim))
    else:
      logits = layers.Dense(features=(cfg.vocab_size,), kernel_axes=("embed", "vocab"),
                            kernel_init=nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal"),
                            dtype=jnp.float32, name="logits_dense")(x)
    return layers.constrain(logits, ("batch", "length", "vocab"))

  def _self_bias(self, relpos: nn.Module, inputs: Array, targets: Array | None, decode: bool,
                 segment_ids: Array | None) -> tuple[Array, Array]:
    """Causal + padding (+ segment) bias [B|1, 1, T, T] and the valid-query mask [B, T]."""
    if not decode:
      valid = targets > 0 if targets is not None else jnp.ones(inputs.shape, bool)
      mask = layers.attention_bias(valid, valid, causal=True, query_segments=segment_ids, key_segments=segment_ids)
      return mask + relpos(inputs.shape[1], inputs.shape[1]), valid
    # Decode: the cache holds `max_len` slots; take the relpos row of the current step.
    initialized = self.has_variable("cache", "decoder_index")
    index = self.variable("cache", "decoder_index", lambda: jnp.array(0, jnp.int32))
    slots = self.variable("cache", "slots", jnp.zeros, (inputs.shape[1],), jnp.int8)
    valid = jnp.ones(inputs.shape, bool)
    if not initialized:  # allocation pass: inputs are [B, max_len]
      return relpos(inputs.shape[1], inputs.shape[1]), valid
    max_len = slots.value.shape[0]
    full = relpos(max_len, max_len)  # [1, H, max_len, max_len]
    row = lax.dynamic_slice_in_dim(full, index.value, 1, axis=2)
    index.value = index.value + 1
    return row, valid


class Transformer(nn.Module):
  """T5 encoder-decoder; params: token_embedder, encoder, decoder (T5X names)."""
  config: T5Config
  input_wrapper: InputWrapperFactory | None = None
  interceptor: Interceptor | None = None

  def _hooks(self) -> contextlib.AbstractContextManager:
    return nn.intercept_methods(self.interceptor) if self.interceptor is not None else contextlib.nullcontext()

  def setup(self):
    cfg = self.config
    self.token_embedder = layers.Embed(cfg.vocab_size, cfg.emb_dim, cfg.activation_dtype)
    self.encoder = Encoder(cfg, self.token_embedder, self.input_wrapper)
    self.decoder = Decoder(cfg, self.token_embedder)

  def __call__(self, encoder_input_tokens: Array, decoder_input_tokens: Array,
               decoder_target_tokens: Array | None = None, *, enable_dropout: bool = False,
               prompt_ids: Array | None = None, encoder_segment_ids: Array | None = None,
               decoder_segment_ids: Array | None = None) -> Array:
    """Teacher-forced pass: [B, L], [B, T], [B, T] -> logits [B, T, V] float32.

    Packed batches pass 1-based segment ids for both sides (seqio's packing features).
    """
    with self._hooks():
      encoded, valid, segments = self.encoder(encoder_input_tokens, enable_dropout=enable_dropout,
                                              prompt_ids=prompt_ids, segment_ids=encoder_segment_ids)
      return self.decoder(encoded, valid, decoder_input_tokens, decoder_target_tokens,
                          enable_dropout=enable_dropout, encoder_segment_ids=segments,
                          decoder_segment_ids=decoder_segment_ids)

  def encode(self, encoder_input_tokens: Array, *, enable_dropout: bool = False,
             prompt_ids: Array | None = None) -> tuple[Array, Array]:
    """Unpacked encoding for decoding and scoring: -> (encoded [B, L', d], valid [B, L'])."""
    with self._hooks():
      encoded, valid, _ = self.encoder(encoder_input_tokens, enable_dropout=enable_dropout, prompt_ids=prompt_ids)
    return encoded, valid

  def decode(self, encoded: Array, encoder_valid: Array, decoder_input_tokens: Array,
             decoder_target_tokens: Array | None = None, *, enable_dropout: bool = False,
             decode: bool = False) -> Array:
    with self._hooks():
      return self.decoder(encoded, encoder_valid, decoder_input_tokens, decoder_target_tokens,
                          enable_dropout=enable_dropout, decode=decode)


def init_params(config: T5Config, rng: Array, *, input_wrapper: InputWrapperFactory | None = None,
                boxed: bool = False) -> Any:
  """Fresh parameters from tiny dummy shapes (shapes do not depend on lengths)."""
  model = Transformer(config, input_wrapper)
  tokens = jnp.ones((1, 2), jnp.int32)
  variables = model.init(rng, tokens, tokens, tokens)
  return variables["params"] if boxed else nn.unbox(variables["params"])


def param_shapes(config: T5Config, *, input_wrapper: InputWrapperFactory | None = None) -> Any:
  """Boxed abstract params (ShapeDtypeStruct leaves with logical axes), nothing allocated."""
  return jax.eval_shape(lambda r: init_params(config, r, input_wrapper=input_wrapper, boxed=True),
                        jax.random.PRNGKey(0))
