"""LoRA (Hu et al. 2022): y = W x + (alpha / r) B A x on chosen projections, W frozen.

A [in, r] starts as PEFT's kaiming-uniform, B [r, out] at zero, so training starts at the
frozen model; `merge` folds B A into the kernels for inference (same logits, no hooks).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from prompt_tuning_jax.model.config import T5Config
from prompt_tuning_jax.methods import base
from prompt_tuning_jax.model import layers

TARGETS = ("query", "key", "value", "out", "wi", "wi_0", "wi_1", "wo")


@dataclasses.dataclass(frozen=True)
class LoRA(base.DeltaMethod):
  rank: int = 4
  alpha: float = 8.0
  targets: tuple[str, ...] = ("query", "value")  # Dense names in attention/MLP blocks
  name: ClassVar[str] = "lora"

  def __post_init__(self):
    if self.rank < 1:
      raise ValueError(f"LoRA.rank must be >= 1, got {self.rank}")
    bad = [t for t in self.targets if t not in TARGETS]
    if bad or not self.targets:
      raise ValueError(f"LoRA.targets={self.targets}: each must be one of {TARGETS}")

  @property
  def scale(self) -> float:
    return self.alpha / self.rank

  def intercept(self, next_fun, args, kwargs, context) -> Any:
    y = next_fun(*args, **kwargs)
    if not base.is_call(context, layers.Dense, self.targets):
      return y
    m = context.module
    x = base.dense_input(m, args[0])
    a = base.param(m, "lora_a", nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
                   (x.shape[-1], self.rank), (m.kernel_axes[0], "lora_rank"))
    b = base.param(m, "lora_b", nn.initializers.zeros, (self.rank, int(np.prod(m.features))),
                   ("lora_rank", m.kernel_axes[1]))
    delta = jnp.dot(jnp.dot(x, jnp.asarray(a, m.dtype)), jnp.asarray(b, m.dtype)) * self.scale
    return y + delta.reshape(y.shape).astype(y.dtype)

  def patterns(self, config: T5Config) -> tuple[str, ...]:
    names = "|".join(re.escape(t) for t in self.targets)
    return (rf".*/({names})/lora_[ab]",)

  def merge(self, params: Any) -> dict:
    """Plain T5 params: kernel + scale * A B for every LoRA pair; the LoRA leaves removed."""
    flat = traverse_util.flatten_dict(params, sep="/")
    out = {k: v for k, v in flat.items() if not k.endswith(("/lora_a", "/lora_b"))}
    for key, a in flat.items():
      if key.endswith("/lora_a"):
        prefix = key[:-len("/lora_a")]
        b = flat[prefix + "/lora_b"]
        out[prefix + "/kernel"] = flat[prefix + "/kernel"] + self.scale * jnp.dot(a, b)
    return traverse_util.unflatten_dict(out, sep="/")
