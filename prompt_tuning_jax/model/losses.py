"""Cross-entropy with T5X's z-loss, and per-token log-likelihoods (scoring: `decoding.score_candidates`)."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def token_log_likelihood(logits: Array, targets: Array) -> Array:
  """logits [B, T, V] float32, targets [B, T] -> log p(target) [B, T]."""
  logits = logits.astype(jnp.float32)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return target_logit - log_z


def loss_and_metrics(logits: Array, targets: Array, weights: Array, *, z_loss: float = 1e-4,
                     loss_normalizing_factor: float | None = None) -> tuple[Array, dict[str, Array]]:
  """Weighted token cross-entropy plus z_loss * log(Z)^2 (T5X's auxiliary loss).

  With `loss_normalizing_factor=None` the loss is summed over tokens, as T5X's finetuning
  configs do; pass a number (e.g. batch * target length) to divide by it instead.
  Metrics always include the per-token mean cross-entropy so runs compare across batch sizes.
  """
  logits = logits.astype(jnp.float32)
  weights = weights.astype(jnp.float32)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  cross_entropy = (log_z - target_logit) * weights
  z_term = z_loss * jnp.square(log_z) * weights
  total = jnp.sum(cross_entropy + z_term)
  if loss_normalizing_factor is not None:
    total = total / loss_normalizing_factor
  num_tokens = jnp.maximum(jnp.sum(weights), 1.0)
  correct = (jnp.argmax(logits, axis=-1) == targets) * weights
  metrics = {
      "loss": total,
      "cross_entropy": jnp.sum(cross_entropy) / num_tokens,
      "z_loss": jnp.sum(z_term) / num_tokens,
      "token_accuracy": jnp.sum(correct) / num_tokens,
      "num_tokens": jnp.sum(weights),
  }
  return total, metrics


def loss_fn(model: nn.Module, params: Any, batch: dict[str, Array], dropout_rng: Array | None,
            *, z_loss: float = 1e-4, loss_normalizing_factor: float | None = None) -> tuple[Array, dict]:
  """Teacher-forced cross-entropy + z-loss; returns (loss, aux metrics)."""
  logits = model.apply({"params": params}, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
                       batch["decoder_target_tokens"], enable_dropout=dropout_rng is not None,
                       prompt_ids=batch.get("prompt_ids"), encoder_segment_ids=batch.get("encoder_segment_ids"),
                       decoder_segment_ids=batch.get("decoder_segment_ids"),
                       rngs={"dropout": dropout_rng} if dropout_rng is not None else None)
  weights = batch.get("decoder_loss_weights", batch["decoder_target_tokens"] > 0)
  return loss_and_metrics(logits, batch["decoder_target_tokens"], weights, z_loss=z_loss,
                                 loss_normalizing_factor=loss_normalizing_factor)
