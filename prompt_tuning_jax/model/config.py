"""Configuration as data: frozen dataclasses that gin binds, never gin in control flow.

`T5Config` carries every hyperparameter of the frozen network (T5X's field names), so
modules take one object instead of a dozen kwargs. `SIZES` holds the T5 1.1 presets of
the paper (FACTS.md); `tiny_*` presets match the bundled real T5X fixtures.
"""
from __future__ import annotations

import dataclasses
from typing import Any


_ACTIVATIONS = ("gelu", "relu", "linear")
REMAT_POLICIES = ("none", "full", "dots")
WEIGHT_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Hyperparameters of a T5 encoder-decoder (T5 1.1 by default, T5 1.0 via flags).

  T5 1.1: mlp_activations=('gelu', 'linear') (gated GELU), untied `logits_dense`.
  T5 1.0: mlp_activations=('relu',), logits_via_embedding=True (tied, scaled by
  1/sqrt(emb_dim)).
  """
  vocab_size: int = 32128
  emb_dim: int = 512
  num_heads: int = 6
  num_encoder_layers: int = 8
  num_decoder_layers: int = 8
  head_dim: int = 64
  mlp_dim: int = 1024
  mlp_activations: tuple[str, ...] = ("gelu", "linear")
  dropout_rate: float = 0.0
  # Flaxformer's broadcast_dropout: one attention-dropout mask per [q, k], shared over batch and heads.
  broadcast_attention_dropout: bool = True
  logits_via_embedding: bool = False
  dtype: str = "float32"  # activation dtype; params and logits stay float32
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  layer_norm_epsilon: float = 1e-6
  # Backprop memory of each encoder/decoder layer: 'none' keeps every residual, 'full'
  # only the layer input (recomputes the rest), 'dots' the input and matmul outputs.
  remat_policy: str = "none"
  # Storage dtype of the frozen weights: 'float32' (the paper) or 'bfloat16' (half the
  # memory; every matmul already runs in `dtype`). Trainable params stay float32.
  weight_dtype: str = "float32"

  def __post_init__(self):
    validate_t5_config(self)

  @property
  def activation_dtype(self) -> Any:
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top  (config stays jax-free to import)
    return jnp.dtype(self.dtype)

  def replace(self, **changes: Any) -> "T5Config":
    return dataclasses.replace(self, **changes)


def validate_t5_config(cfg: T5Config) -> None:
  """Raise ValueError naming the T5Config field at fault."""
  for name in ("vocab_size", "emb_dim", "num_heads", "num_encoder_layers",
               "num_decoder_layers", "head_dim", "mlp_dim",
               "relative_attention_num_buckets", "relative_attention_max_distance"):
    value = getattr(cfg, name)
    if not isinstance(value, int) or value <= 0:
      raise ValueError(f"T5Config.{name} must be a positive int, got {value!r}")
  if not 0.0 <= cfg.dropout_rate < 1.0:
    raise ValueError(f"T5Config.dropout_rate must be in [0, 1), got {cfg.dropout_rate}")
  bad = [a for a in cfg.mlp_activations if a not in _ACTIVATIONS]
  if not cfg.mlp_activations or bad:
    raise ValueError(f"T5Config.mlp_activations={cfg.mlp_activations!r}: each must be one of {_ACTIVATIONS}")
  if cfg.remat_policy not in REMAT_POLICIES:
    raise ValueError(f"T5Config.remat_policy must be one of {REMAT_POLICIES}, got {cfg.remat_policy!r}")
  if cfg.weight_dtype not in WEIGHT_DTYPES:
    raise ValueError(f"T5Config.weight_dtype must be one of {WEIGHT_DTYPES}, got {cfg.weight_dtype!r}")
  if cfg.dtype not in ("float32", "bfloat16", "float16"):
    raise ValueError(f"T5Config.dtype must be float32, bfloat16 or float16, got {cfg.dtype!r}")


def num_params(cfg: T5Config) -> int:
  """Parameter count of the frozen network, computed from shapes (no allocation)."""
  d, h, k, f = cfg.emb_dim, cfg.num_heads, cfg.head_dim, cfg.mlp_dim
  attn = 4 * d * h * k
  mlp = len(cfg.mlp_activations) * d * f + f * d
  enc = cfg.num_encoder_layers * (attn + mlp + 2 * d) + d
  dec = cfg.num_decoder_layers * (2 * attn + mlp + 3 * d) + d
  relpos = 2 * h * cfg.relative_attention_num_buckets
  embed = cfg.vocab_size * d
  logits = 0 if cfg.logits_via_embedding else d * cfg.vocab_size
  return embed + enc + dec + relpos + logits


# T5 1.1 sizes (heads / layers per stack / d_head / d_model / d_ff), FACTS.md.
SIZES: dict[str, T5Config] = {
    "small": T5Config(emb_dim=512, num_heads=6, num_encoder_layers=8, num_decoder_layers=8, head_dim=64, mlp_dim=1024),
    "base": T5Config(emb_dim=768, num_heads=12, num_encoder_layers=12, num_decoder_layers=12, head_dim=64, mlp_dim=2048),
    "large": T5Config(emb_dim=1024, num_heads=16, num_encoder_layers=24, num_decoder_layers=24, head_dim=64, mlp_dim=2816),
    "xl": T5Config(emb_dim=2048, num_heads=32, num_encoder_layers=24, num_decoder_layers=24, head_dim=64, mlp_dim=5120),
    "xxl": T5Config(emb_dim=4096, num_heads=64, num_encoder_layers=24, num_decoder_layers=24, head_dim=64, mlp_dim=10240),
    # The embedded demo's frozen model (prompt_tuning_jax/assets/demo_model/), made by
    # scripts/make_demo_model.py with this project's own model-tuning code.
    "demo": T5Config(emb_dim=64, num_heads=4, num_encoder_layers=2, num_decoder_layers=2, head_dim=16, mlp_dim=128),
    # The two real T5X fixtures bundled under tests/testdata/t5x_checkpoints/.
    "tiny_inline": T5Config(emb_dim=8, num_heads=4, num_encoder_layers=2, num_decoder_layers=2, head_dim=3, mlp_dim=16),
    "tiny_zarr": T5Config(emb_dim=4, num_heads=2, num_encoder_layers=2, num_decoder_layers=2, head_dim=2, mlp_dim=8,
                          relative_attention_num_buckets=4),
}

# Public LM-adapted T5X checkpoints used by the paper.
LM100K_CHECKPOINTS: dict[str, str] = {
    s: f"gs://t5-data/pretrained_models/t5x/t5_1_1_lm100k_{s}/checkpoint_1100000"
    for s in ("small", "base", "large", "xl", "xxl")
}
