"""T5 1.1 building blocks: RMS norm, attention, gated MLP, relative position bias.

Every parameter is born with T5X's logical axis names (`nn.with_logical_partitioning`)
so that `sharding.py` can place it without touching the model, and activations carry
logical constraints (`batch`, `length`, `embed`, ...), which are no-ops off a mesh.
Parameters are float32; activations use `T5Config.dtype`.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from prompt_tuning_jax.model.config import T5Config

Array = jax.Array
NEG_INF = -1e10  # attention bias for masked keys (finite, so fully masked rows stay finite)

constrain = nn.with_logical_constraint
# Flaxformer's `broadcast_dropout=True`: attention weights [B, H, q, k] share one dropout mask
# over the batch and head axes.
ATTENTION_DROPOUT_BROADCAST = (0, 1)


def _param(module: nn.Module, name: str, init: Any, shape: Sequence[int], axes: tuple[str, ...]) -> Array:
  """A float32 parameter annotated with logical axes (T5X's `param_with_axes`)."""
  return module.param(name, nn.with_logical_partitioning(init, axes), tuple(shape), jnp.float32)


class RMSNorm(nn.Module):
  """T5 layer norm: x / rms(x) * scale, no mean, no bias, computed in float32."""
  epsilon: float = 1e-6
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x32 = jnp.asarray(x, jnp.float32)
    var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    y = x32 * lax.rsqrt(var + self.epsilon)
    scale = _param(self, "scale", nn.initializers.ones, (x.shape[-1],), ("embed",))
    return jnp.asarray(y * scale, self.dtype)


class Dense(nn.Module):
  """Bias-free dense layer over the trailing `in_axes` dims with a 2-D kernel.

  T5X stores multi-head kernels flattened ([d, H*k]); we keep that layout so
  checkpoints load without reshaping, and reshape at run time.
  """
  features: tuple[int, ...]
  kernel_axes: tuple[str, str]
  in_axes: int = 1
  kernel_init: Any = nn.initializers.lecun_normal()
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    in_shape = x.shape[-self.in_axes:]
    kernel = _param(self, "kernel", self.kernel_init,
                    (int(np.prod(in_shape)), int(np.prod(self.features))), self.kernel_axes)
    kernel = jnp.asarray(kernel, self.dtype)
    x = jnp.asarray(x, self.dtype).reshape(x.shape[:-self.in_axes] + (-1,))
    y = jnp.dot(x, kernel)
    return y.reshape(y.shape[:-1] + tuple(self.features))


class Embed(nn.Module):
  """Token embedding table [V, d]; `attend` gives tied logits for T5 1.0."""
  num_embeddings: int
  features: int
  dtype: Any = jnp.float32

  def setup(self):
    self.embedding = _param(self, "embedding", nn.initializers.normal(stddev=1.0),
                            (self.num_embeddings, self.features), ("vocab", "embed"))

  def __call__(self, tokens: Array) -> Array:
    """[B, L] int -> [B, L, d]."""
    return jnp.asarray(jnp.take(self.embedding, tokens, axis=0), self.dtype)

  def attend(self, query: Array) -> Array:
    """[B, T, d] -> [B, T, V] (float32)."""
    return jnp.dot(jnp.asarray(query, jnp.float32), self.embedding.T)


def relative_position_bucket(relative_position: np.ndarray, *, bidirectional: bool,
                             num_buckets: int, max_distance: int) -> np.ndarray:
  """Map key-minus-query offsets to T5's log-spaced buckets (static, numpy)."""
  bucket = np.zeros_like(relative_position)
  n = relative_position
  if bidirectional:
    num_buckets //= 2
    bucket = bucket + (n > 0) * num_buckets
    n = np.abs(n)
  else:
    n = -np.minimum(n, 0)
  max_exact = num_buckets // 2
  is_small = n < max_exact
  with np.errstate(divide="ignore"):
    scaled = (np.log(n.astype(np.float32) / np.float32(max_exact))
              / np.float32(np.log(max_distance / max_exact)) * np.float32(num_buckets - max_exact))
  large = max_exact + np.where(is_small, 0, scaled).astype(np.int32)
  large = np.minimum(large, num_buckets - 1)
  return bucket + np.where(is_small, n, large)


class RelativePositionBias(nn.Module):
  """One [H, buckets] table per stack; returns the additive bias [1, H, q, k]."""
  num_heads: int
  num_buckets: int
  max_distance: int
  bidirectional: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, q_len: int, k_len: int) -> Array:
    context = np.arange(q_len, dtype=np.int32)[:, None]
    memory = np.arange(k_len, dtype=np.int32)[None, :]
    buckets = relative_position_bucket(memory - context, bidirectional=self.bidirectional,
                                       num_buckets=self.num_buckets, max_distance=self.max_distance)
    table = _param(self, "rel_embedding", nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"),
                   (self.num_heads, self.num_buckets), ("heads", "relpos_buckets"))
    bias = jnp.take(jnp.asarray(table, self.dtype), jnp.asarray(buckets), axis=1)  # [H, q, k]
    return bias[None]


class Attention(nn.Module):
  """Multi-head dot-product attention without the 1/sqrt(d_head) scale (folded into query init).

  With `decode=True` keys and values are appended to a 'cache' collection one step at
  a time; the first call (cache absent) only allocates it from the input shape.
  """
  config: T5Config

  @nn.compact
  def __call__(self, x_q: Array, x_kv: Array, bias: Array, *, enable_dropout: bool,
               decode: bool = False) -> Array:
    cfg = self.config
    dt = cfg.activation_dtype
    h, k = cfg.num_heads, cfg.head_dim
    depth_scaling = (cfg.emb_dim * k) ** -0.5
    qkv = functools.partial(Dense, features=(h, k), kernel_axes=("embed", "joined_kv"), dtype=dt)
    query = qkv(kernel_init=nn.initializers.normal(depth_scaling), name="query")(x_q)
    key = qkv(kernel_init=nn.initializers.variance_scaling(1.0, "fan_in", "normal"), name="key")(x_kv)
    value = qkv(kernel_init=nn.initializers.variance_scaling(1.0, "fan_in", "normal"), name="value")(x_kv)
    query = constrain(query, ("batch", "length", "heads", "kv"))
    key = constrain(key, ("batch", "length", "heads", "kv"))
    value = constrain(value, ("batch", "length", "heads", "kv"))
    if decode:
      key, value, bias = self._update_cache(key, value, bias)
    logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
    weights = jax.nn.softmax(logits + bias.astype(jnp.float32), axis=-1).astype(dt)
    if enable_dropout and cfg.dropout_rate > 0:  # one mask [q, k] shared by batch and heads, as Flaxformer
      dims = ATTENTION_DROPOUT_BROADCAST if cfg.broadcast_attention_dropout else ()
      weights = nn.Dropout(cfg.dropout_rate, broadcast_dims=dims)(weights, deterministic=False)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, value)
    out = Dense(features=(cfg.emb_dim,), kernel_axes=("joined_kv", "embed"), in_axes=2,
                kernel_init=nn.initializers.variance_scaling(1.0, "fan_in", "normal"), dtype=dt,
                name="out")(out)
    return constrain(out, ("batch", "length", "embed"))

  def _update_cache(self, key: Array, value: Array, bias: Array) -> tuple[Array, Array, Array]:
    """Write this step's [B, 1, H, k] key/value at the cache index; mask unwritten slots."""
    initialized = self.has_variable("cache", "cached_key")
    cached_key = self.variable("cache", "cached_key", jnp.zeros, key.shape, key.dtype)
    cached_value = self.variable("cache", "cached_value", jnp.zeros, value.shape, value.dtype)
    index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
    if not initialized:
      return key, value, bias
    if key.shape[1] != 1:
      raise ValueError(f"decode=True takes one token per step, got query length {key.shape[1]}")
    i = index.value
    cached_key.value = lax.dynamic_update_slice(cached_key.value, key, (0, i, 0, 0))
    cached_value.value = lax.dynamic_update_slice(cached_value.value, value, (0, i, 0, 0))
    index.value = i + 1
    max_len = cached_key.value.shape[1]
    valid = jnp.arange(max_len) <= i
    bias = bias + jnp.where(valid, 0.0, NEG_INF)[None, None, None, :]
    return cached_key.value, cached_value.value, bias


class MlpBlock(nn.Module):
  """Gated MLP: product of `activations(wi_j x)`, then `wo` (T5 1.1: gelu x linear)."""
  config: T5Config

  @nn.compact
  def __call__(self, x: Array, *, enable_dropout: bool) -> Array:
    cfg = self.config
    dt = cfg.activation_dtype
    init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
    acts = cfg.mlp_activations
    hidden = None
    for i, act in enumerate(acts):
      name = "wi" if len(acts) == 1 else f"wi_{i}"
      y = Dense(features=(cfg.mlp_dim,), kernel_axes=("embed", "mlp"), kernel_init=init, dtype=dt, name=name)(x)
      y = _ACTIVATION_FNS[act](y)
      hidden = y if hidden is None else hidden * y
    hidden = constrain(hidden, ("batch", "length", "mlp"))
    if enable_dropout and cfg.dropout_rate > 0:
      hidden = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(hidden, deterministic=False)
    return Dense(features=(cfg.emb_dim,), kernel_axes=("mlp", "embed"), kernel_init=init, dtype=dt, name="wo")(hidden)


_ACTIVATION_FNS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "linear": lambda x: x,
}


def dropout(cfg: T5Config, x: Array, enable_dropout: bool) -> Array:
  """Dropout shared over the length axis, as T5X applies it to residual branches."""
  if not enable_dropout or cfg.dropout_rate == 0:
    return x
  return nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic=False)


def attention_bias(query_valid: Array, key_valid: Array, causal: bool = False,
                   query_segments: Array | None = None, key_segments: Array | None = None) -> Array:
  """[B, q], [B, k] bool -> additive bias [B, 1, q, k] (0 where allowed, NEG_INF elsewhere).

  With segment ids (packed examples), a query sees only keys of its own segment.
  """
  allowed = query_valid[:, None, :, None] & key_valid[:, None, None, :]
  if query_segments is not None and key_segments is not None:
    allowed = allowed & (query_segments[:, None, :, None] == key_segments[:, None, None, :])
  if causal:
    q, k = query_valid.shape[1], key_valid.shape[1]
    allowed = allowed & (jnp.arange(q)[:, None] >= jnp.arange(k)[None, :])[None, None]
  return jnp.where(allowed, 0.0, NEG_INF).astype(jnp.float32)
