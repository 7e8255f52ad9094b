"""Houlsby adapters (Houlsby et al. 2019): a bottleneck after every attention and MLP block.

y -> y + up(gelu(down(y) + b_down)) + b_up, inside the residual branch (before dropout
and the residual add). Both projections start small (normal, std `init_scale`), so the
model starts near the frozen one while gradients reach both at the first step.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_tuning_jax.model.config import T5Config
from prompt_tuning_jax.methods import base
from prompt_tuning_jax.model import layers


@dataclasses.dataclass(frozen=True)
class Adapters(base.DeltaMethod):
  width: int = 8  # bottleneck size
  init_scale: float = 1e-2
  name: ClassVar[str] = "adapters"

  def __post_init__(self):
    if self.width < 1:
      raise ValueError(f"Adapters.width must be >= 1, got {self.width}")

  def intercept(self, next_fun, args, kwargs, context) -> Any:
    y = next_fun(*args, **kwargs)
    if not base.is_call(context, (layers.Attention, layers.MlpBlock)):
      return y
    m = context.module
    d, init = y.shape[-1], nn.initializers.normal(self.init_scale)
    down = base.param(m, "adapter_down", init, (d, self.width), ("embed", "adapter"))
    b_down = base.param(m, "adapter_down_bias", nn.initializers.zeros, (self.width,), ("adapter",))
    up = base.param(m, "adapter_up", init, (self.width, d), ("adapter", "embed"))
    b_up = base.param(m, "adapter_up_bias", nn.initializers.zeros, (d,), ("embed",))
    h = jax.nn.gelu(jnp.dot(y, down.astype(y.dtype)) + b_down.astype(y.dtype), approximate=True)
    return y + jnp.dot(h, up.astype(y.dtype)) + b_up.astype(y.dtype)

  def patterns(self, config: T5Config) -> tuple[str, ...]:
    return (r".*/adapter_(down|up)(_bias)?",)
