"""BitFit (Zaken et al. 2022) on T5 1.1, which has no biases: a zero-initialised bias
added after every dense layer (attention q/k/v/o, MLP, and the logits projection) is
all that trains, so step 0 is the frozen model exactly."""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import numpy as np

from prompt_tuning_jax.model.config import T5Config
from prompt_tuning_jax.methods import base
from prompt_tuning_jax.model import layers


@dataclasses.dataclass(frozen=True)
class BitFit(base.DeltaMethod):
  name: ClassVar[str] = "bitfit"

  def intercept(self, next_fun, args, kwargs, context) -> Any:
    y = next_fun(*args, **kwargs)
    if not base.is_call(context, layers.Dense):
      return y
    m = context.module
    bias = base.param(m, "bias", nn.initializers.zeros, (int(np.prod(m.features)),), (m.kernel_axes[1],))
    return y + bias.reshape(tuple(m.features)).astype(y.dtype)

  def patterns(self, config: T5Config) -> tuple[str, ...]:
    return (r".*/bias",)
