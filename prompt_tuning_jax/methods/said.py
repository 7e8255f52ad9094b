"""Intrinsic-dimension tuning, SAID (Aghajanyan et al. 2021): theta = theta_0 + lambda_l P_l v.

One trained vector v [d] at the root (`said_vector`, zero-initialised) reaches every target
kernel through a fixed Fastfood transform P_l (Le et al. 2013, as Li et al. 2018 use it),
scaled by a trained per-layer scalar lambda_l (`<dense>/said_scale`, init 1). The delta is
added on the fly (x W0 + x (lambda P v)), so the frozen kernels are never written.
"""
from __future__ import annotations

import dataclasses
import zlib
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning_jax.model.config import T5Config
from prompt_tuning_jax.methods import base, lora
from prompt_tuning_jax.model import layers


@dataclasses.dataclass(frozen=True)
class IntrinsicSAID(base.DeltaMethod):
  dim: int = 64  # intrinsic dimension d
  targets: tuple[str, ...] = lora.TARGETS  # Dense names; the logits projection is left out
  seed: int = 0  # fixes the random Fastfood factors (they are recomputed, never stored)
  name: ClassVar[str] = "said"

  def __post_init__(self):
    if self.dim < 1:
      raise ValueError(f"IntrinsicSAID.dim must be >= 1, got {self.dim}")

  def intercept(self, next_fun, args, kwargs, context) -> Any:
    if base.enter_stack(context, {"said_vector": (nn.initializers.zeros, (self.dim,), ("intrinsic",))}):
      return next_fun(*args, **kwargs)
    y = next_fun(*args, **kwargs)
    if not base.is_call(context, layers.Dense, self.targets):
      return y
    m = context.module
    x = base.dense_input(m, args[0])
    vector = base.shared_param("said_vector")
    scale = base.param(m, "said_scale", nn.initializers.ones, (), ())
    shape = (x.shape[-1], int(np.prod(m.features)))
    key = jax.random.fold_in(jax.random.PRNGKey(self.seed), zlib.crc32("/".join(m.path).encode()))
    delta = (scale * fastfood(vector, int(np.prod(shape)), key)).reshape(shape)
    return y + jnp.dot(x, delta.astype(m.dtype)).reshape(y.shape).astype(y.dtype)

  def patterns(self, config: T5Config) -> tuple[str, ...]:
    return (r"said_vector", r".*/said_scale")


def hadamard_transform(x: jax.Array) -> jax.Array:
  """Unnormalised Walsh-Hadamard transform over the last axis (a power of two), O(n log n)."""
  n, h, y = x.shape[-1], 1, x
  if n & (n - 1):
    raise ValueError(f"hadamard_transform needs a power-of-two length, got {n}")
  while h < n:
    y = y.reshape(x.shape[:-1] + (n // (2 * h), 2, h))
    y = jnp.stack([y[..., 0, :] + y[..., 1, :], y[..., 0, :] - y[..., 1, :]], axis=-2).reshape(x.shape)
    h *= 2
  return y


def fastfood(v: jax.Array, out_dim: int, key: jax.Array) -> jax.Array:
  """v [d] -> [out_dim]: stacked blocks H G Pi H B v (padded to n = 2^ceil(log2 d)),
  each divided by sqrt(n * |G|^2) so a block keeps v's norm."""
  n = 1 << max(int(v.shape[0] - 1).bit_length(), 0)
  blocks = -(-out_dim // n)
  kb, kp, kg = jax.random.split(key, 3)
  signs = jax.random.rademacher(kb, (blocks, n), jnp.float32)
  perms = jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(kp, blocks))
  gauss = jax.random.normal(kg, (blocks, n), jnp.float32)
  x = jnp.pad(v.astype(jnp.float32), (0, n - v.shape[0]))
  h = hadamard_transform(signs * x[None])
  h = jnp.take_along_axis(h, perms, axis=-1)
  h = hadamard_transform(gauss * h)
  h = h / jnp.sqrt(n * jnp.sum(jnp.square(gauss), axis=-1, keepdims=True))
  return h.reshape(-1)[:out_dim]
