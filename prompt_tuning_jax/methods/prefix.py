"""Prefix tuning (Li and Liang 2021): P learned key/value vectors prepended in every
attention (encoder self, decoder self and cross), trained through an MLP.

Training form (`hidden > 0`): a shared [P, hidden] embedding and a tanh layer at the root
(`prefix_embedding`, `prefix_wi`, `prefix_bi`), then per attention an output head
(`prefix_head_kernel` [hidden, 2 H k], `prefix_head_bias`): exactly Li and Liang's MLP
whose output layer is split by layer. `export_params` evaluates it into the plain form
(`hidden == 0`): `prefix_key`/`prefix_value` [P, H k] per attention. Prefix slots carry
no relative position bias and are never masked. With the KV cache, the cache is allocated
P slots longer, each step writes the prefix into slots 0..P-1 and decoding starts at slot P
(the cache arrives zeroed from `decoding.init_cache`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from prompt_tuning_jax.config import T5Config
from prompt_tuning_jax.methods import base
from prompt_tuning_jax.model import layers

_ACTIVE: list[tuple[tuple[str, ...], Any, Any]] = []  # trace-time: (attention path, key, value) being run


@dataclasses.dataclass(frozen=True)
class PrefixTuning(base.DeltaMethod):
  length: int = 10
  hidden: int = 64  # MLP width (and embedding width); 0 = plain per-layer prefixes
  name: ClassVar[str] = "prefix"

  def __post_init__(self):
    if self.length < 1 or self.hidden < 0:
      raise ValueError(f"PrefixTuning: length must be >= 1 and hidden >= 0, got {self.length}, {self.hidden}")

  def intercept(self, next_fun, args, kwargs, context) -> Any:
    if base.is_call(context, layers.Dense, ("key", "value")) and _ACTIVE:
      path, key, value = _ACTIVE[-1]
      y = next_fun(*args, **kwargs)
      if key is None or tuple(context.module.path[:-1]) != path:
        return y
      prefix = key if context.module.name == "key" else value  # [P, H, k]
      return jnp.concatenate([jnp.broadcast_to(prefix.astype(y.dtype), (y.shape[0],) + prefix.shape), y], axis=1)
    if not base.is_call(context, layers.Attention):
      return next_fun(*args, **kwargs)
    return self._attention(next_fun, args, kwargs, context.module)

  def _attention(self, next_fun, args, kwargs, m: layers.Attention) -> Any:
    cfg = m.config
    key, value = self._prefixes(m)
    key, value = (v.reshape(self.length, cfg.num_heads, cfg.head_dim) for v in (key, value))
    x_q, x_kv, bias = args
    decode = kwargs.get("decode", False)
    cached = decode and m.has_variable("cache", "cached_key")
    bias = jnp.pad(bias, [(0, 0)] * (bias.ndim - 1) + [(self.length, 0)])  # prefix slots: always visible
    if cached:  # the cache is [B, P + max_len] (allocated with the prefix): keep it in slots 0..P-1
      for name, prefix in (("cached_key", key), ("cached_value", value)):
        cache = m.scope.get_variable("cache", name)
        m.scope.put_variable("cache", name, cache.at[:, :self.length].set(prefix.astype(cache.dtype)))
      index = m.scope.get_variable("cache", "cache_index")
      m.scope.put_variable("cache", "cache_index", jnp.maximum(index, self.length))
    _ACTIVE.append((tuple(m.path), None if cached else key, value))
    try:
      return next_fun(x_q, x_kv, bias, **kwargs)
    finally:
      _ACTIVE.pop()

  def _prefixes(self, m: layers.Attention) -> tuple[Any, Any]:
    """-> (key, value) [P, H k] float32 for this attention."""
    cfg = m.config
    joined = cfg.num_heads * cfg.head_dim
    if self.hidden == 0:
      init = nn.initializers.normal(1.0)
      return (base.param(m, "prefix_key", init, (self.length, joined), ("prefix", "joined_kv")),
              base.param(m, "prefix_value", init, (self.length, joined), ("prefix", "joined_kv")))
    h = self.hidden
    emb = base.shared_param(m, "prefix_embedding", nn.initializers.normal(1.0), (self.length, h),
                            ("prefix", "prefix_embed"))
    wi = base.shared_param(m, "prefix_wi", nn.initializers.lecun_normal(), (h, h), ("prefix_embed", "prefix_hidden"))
    bi = base.shared_param(m, "prefix_bi", nn.initializers.zeros, (h,), ("prefix_hidden",))
    head = base.param(m, "prefix_head_kernel", nn.initializers.lecun_normal(), (h, 2 * joined),
                      ("prefix_hidden", "joined_kv"))
    head_bias = base.param(m, "prefix_head_bias", nn.initializers.zeros, (2 * joined,), ("joined_kv",))
    return _reparameterise(emb, wi, bi, head, head_bias)

  def patterns(self, config: T5Config) -> tuple[str, ...]:
    if self.hidden == 0:
      return (r".*/prefix_(key|value)",)
    return (r"prefix_(embedding|wi|bi)", r".*/prefix_head_(kernel|bias)")

  def export_params(self, delta: dict, config: T5Config) -> dict:
    """Flat {path: array} training form -> the plain per-attention prefixes."""
    if self.hidden == 0:
      return delta
    flat, out = dict(delta), {}
    for k, head in flat.items():
      if k.endswith("/prefix_head_kernel"):
        path = k[:-len("/prefix_head_kernel")]
        key, value = _reparameterise(flat["prefix_embedding"], flat["prefix_wi"], flat["prefix_bi"], head,
                                     flat[path + "/prefix_head_bias"])
        out[path + "/prefix_key"], out[path + "/prefix_value"] = np.asarray(key), np.asarray(value)
    return out

  def plain(self) -> "PrefixTuning":
    """The inference form that `export_params` output plugs into."""
    return dataclasses.replace(self, hidden=0)


def _reparameterise(emb, wi, bi, head, head_bias) -> tuple[Any, Any]:
  """Li and Liang's MLP: tanh(E W1 + b1) W2 + b2, split into key and value [P, H k]."""
  kv = jnp.dot(jnp.tanh(jnp.dot(emb, wi) + bi), head) + head_bias
  return jnp.split(kv, 2, axis=-1)
