"""Prefix tuning (Li and Liang 2021): P learned key/value vectors prepended in every
attention (encoder self, decoder self and cross), trained through an MLP.

`sites` chooses the attentions (`encoder` self, `decoder` self, `cross`), and `positions`
what relative position the prefix slots take in self-attention: `none` (Li and Liang: no
position bias, as here by default) or `preceding` (the P positions just before the
sequence, which is where a Hugging Face KV cache puts them). `sites=("decoder",)` with
`positions="preceding"` is exactly the model PEFT builds from a T5 prefix-tuning adapter
(`gin/methods/prefix_peft.gin`), so `methods.files.save_peft_prefix` exports it.

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
from jax import lax

from prompt_tuning_jax.model.config import T5Config
from prompt_tuning_jax.methods import base
from prompt_tuning_jax.model import layers

_ACTIVE: list[tuple[tuple[str, ...], Any, Any]] = []  # trace-time: (attention path, key, value) being run
# trace-time, positions="preceding": stack ('encoder'|'decoder') -> the prefix slots' bias [1, H, q, P]
_PRECEDING: dict[str, Any] = {}
# Attention module name -> site; the encoder's self-attention is 'attention' (T5X names).
SITES = {"attention": "encoder", "self_attention": "decoder", "encoder_decoder_attention": "cross"}
POSITIONS = ("none", "preceding")


@dataclasses.dataclass(frozen=True)
class PrefixTuning(base.DeltaMethod):
  length: int = 10
  hidden: int = 64  # MLP width (and embedding width); 0 = plain per-layer prefixes
  sites: tuple[str, ...] = ("encoder", "decoder", "cross")
  positions: str = "none"  # self-attention prefix slots: no position bias, or the P positions before
  name: ClassVar[str] = "prefix"

  def __post_init__(self):
    if self.length < 1 or self.hidden < 0:
      raise ValueError(f"PrefixTuning: length must be >= 1 and hidden >= 0, got {self.length}, {self.hidden}")
    known = tuple(SITES.values())
    if not self.sites or any(site not in known for site in self.sites) or len(set(self.sites)) < len(self.sites):
      raise ValueError(f"PrefixTuning.sites: got {self.sites!r}; choose distinct names from {known}")
    if self.positions not in POSITIONS:
      raise ValueError(f"PrefixTuning.positions: got {self.positions!r}; choose from {POSITIONS}")

  def intercept(self, next_fun, args, kwargs, context) -> Any:
    if base.enter_stack(context, self._root_specs()):
      return next_fun(*args, **kwargs)
    if base.is_call(context, layers.Dense, ("key", "value")) and _ACTIVE:
      path, key, value = _ACTIVE[-1]
      y = next_fun(*args, **kwargs)
      if key is None or tuple(context.module.path[:-1]) != path:
        return y
      prefix = key if context.module.name == "key" else value  # [P, H, k]
      return jnp.concatenate([jnp.broadcast_to(prefix.astype(y.dtype), (y.shape[0],) + prefix.shape), y], axis=1)
    if self.positions == "preceding" and base.is_call(context, layers.RelativePositionBias):
      return self._position_bias(next_fun, args, kwargs, context.module)
    if not base.is_call(context, layers.Attention) or SITES.get(context.module.name) not in self.sites:
      return next_fun(*args, **kwargs)
    return self._attention(next_fun, args, kwargs, context.module)

  def _position_bias(self, next_fun, args, kwargs, m: layers.RelativePositionBias) -> Any:
    """Relative position bias as if P slots preceded the sequence: the usual [1, H, q, k]
    (relative positions are shift-invariant), the prefix slots' columns kept for attention."""
    stack = m.path[0]  # 'encoder' | 'decoder'
    if stack not in self.sites:
      return next_fun(*args, **kwargs)
    q_len, k_len = args
    p = self.length
    full = next_fun(q_len + p, k_len + p, **kwargs)  # [1, H, P + q, P + k]
    _PRECEDING[stack] = full[:, :, p:, :p]
    return full[:, :, p:, p:]

  def _attention(self, next_fun, args, kwargs, m: layers.Attention) -> Any:
    cfg = m.config
    key, value = self._prefixes(m)
    key, value = (v.reshape(self.length, cfg.num_heads, cfg.head_dim) for v in (key, value))
    x_q, x_kv, bias = args
    decode = kwargs.get("decode", False)
    cached = decode and m.has_variable("cache", "cached_key")
    if self.positions == "preceding" and SITES[m.name] != "cross":  # slots P..1 before position 0
      slots = _PRECEDING[m.path[0]]  # [1, H, q, P]
      if cached:  # this step's query row: its position is the cache index less the P prefix slots
        index = m.scope.get_variable("cache", "cache_index")
        slots = lax.dynamic_slice_in_dim(slots, jnp.maximum(index, self.length) - self.length, 1, axis=2)
      slots = jnp.broadcast_to(slots.astype(bias.dtype), bias.shape[:-1] + (self.length,))
      bias = jnp.concatenate([slots, bias], axis=-1)  # never masked
    else:
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
    emb, wi, bi = (base.shared_param(name) for name in ("prefix_embedding", "prefix_wi", "prefix_bi"))
    head = base.param(m, "prefix_head_kernel", nn.initializers.lecun_normal(), (h, 2 * joined),
                      ("prefix_hidden", "joined_kv"))
    head_bias = base.param(m, "prefix_head_bias", nn.initializers.zeros, (2 * joined,), ("joined_kv",))
    return _reparameterise(emb, wi, bi, head, head_bias)

  def _root_specs(self) -> dict[str, tuple[Any, tuple[int, ...], tuple[str, ...]]]:
    """The MLP's shared trunk (training form only): embedding [P, h], tanh layer [h, h], [h]."""
    if self.hidden == 0:
      return {}
    h = self.hidden
    return {"prefix_embedding": (nn.initializers.normal(1.0), (self.length, h), ("prefix", "prefix_embed")),
            "prefix_wi": (nn.initializers.lecun_normal(), (h, h), ("prefix_embed", "prefix_hidden")),
            "prefix_bi": (nn.initializers.zeros, (h,), ("prefix_hidden",))}

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
