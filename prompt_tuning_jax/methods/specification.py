"""Specification-based methods: no new parameters, only which existing ones train."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from prompt_tuning_jax.model.config import T5Config
from prompt_tuning_jax.methods import base


@dataclasses.dataclass(frozen=True)
class LastLayers(base.DeltaMethod):
  """The last k layers of the encoder and of the decoder, with each stack's final norm."""
  k: int = 1
  name: ClassVar[str] = "last_layers"
  uses_hooks: ClassVar[bool] = False

  def patterns(self, config: T5Config) -> tuple[str, ...]:
    if not 1 <= self.k <= min(config.num_encoder_layers, config.num_decoder_layers):
      raise ValueError(f"LastLayers.k={self.k} must be in 1..{min(config.num_encoder_layers, config.num_decoder_layers)}")
    enc = "|".join(str(i) for i in range(config.num_encoder_layers - self.k, config.num_encoder_layers))
    dec = "|".join(str(i) for i in range(config.num_decoder_layers - self.k, config.num_decoder_layers))
    return (rf"encoder/layers_({enc})/.*", rf"decoder/layers_({dec})/.*", r"encoder/encoder_norm/.*",
            r"decoder/decoder_norm/.*")


@dataclasses.dataclass(frozen=True)
class LayerNormScales(base.DeltaMethod):
  """Every RMS-norm scale (pre-attention, pre-MLP and final norms)."""
  name: ClassVar[str] = "layer_norm"
  uses_hooks: ClassVar[bool] = False

  def patterns(self, config: T5Config) -> tuple[str, ...]:
    return (r".*_norm/scale",)
