"""The train state and the pure train/eval steps.

The state holds only what changes (trainable params, optimizer state, step, rng); the
frozen weights are a separate, non-donated argument. Gradients are taken with respect to
the trainable subtree alone, so XLA never builds the frozen weights' gradient matmuls.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from prompt_tuning_jax import optim, prompted, t5

Array = jax.Array


@struct.dataclass
class TrainState:
  step: Array  # int32 [], steps taken in this run
  params: Any  # trainable subtree (the prompt, or everything for model tuning)
  opt_state: optax.OptState
  rng: Array  # base dropout key; folded with the step each update


@struct.dataclass
class LossConfig:
  """Static loss settings (hashable, so they can close over the jitted step)."""
  z_loss: float = struct.field(pytree_node=False, default=1e-4)
  loss_normalizing_factor: float | None = struct.field(pytree_node=False, default=None)
  enable_dropout: bool = struct.field(pytree_node=False, default=False)


def init_state(trainable: Any, optimizer: optax.GradientTransformation, rng: Array) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=trainable,
                    opt_state=optimizer.init(trainable), rng=rng)


def train_step(state: TrainState, frozen: Any, batch: dict[str, Array], *, model: t5.Transformer,
               optimizer: optax.GradientTransformation, loss_config: LossConfig) -> tuple[TrainState, dict]:
  """One update of the trainable params; returns the new state and scalar metrics."""
  dropout_rng = jax.random.fold_in(state.rng, state.step) if loss_config.enable_dropout else None

  def loss_of(trainable):
    params = optim.merge_params(trainable, frozen)
    return prompted.loss_fn(model, params, batch, dropout_rng, z_loss=loss_config.z_loss,
                            loss_normalizing_factor=loss_config.loss_normalizing_factor)

  (_, metrics), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics, grad_norm=optax.global_norm(grads), update_norm=optax.global_norm(updates),
                 param_norm=optax.global_norm(params))
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(params: Any, batch: dict[str, Array], *, model: t5.Transformer,
              loss_config: LossConfig) -> dict:
  """Teacher-forced loss metrics on a batch (no dropout)."""
  _, metrics = prompted.loss_fn(model, params, batch, None, z_loss=loss_config.z_loss,
                                loss_normalizing_factor=loss_config.loss_normalizing_factor)
  return metrics


def jit_train_step(model: t5.Transformer, optimizer: optax.GradientTransformation,
                   loss_config: LossConfig, *, in_shardings: Any = None, out_shardings: Any = None):
  """train_step compiled once, with the state donated (and shardings when given)."""
  fn = functools.partial(train_step, model=model, optimizer=optimizer, loss_config=loss_config)
  kwargs = {}
  if in_shardings is not None:
    kwargs = dict(in_shardings=in_shardings, out_shardings=out_shardings)
  return jax.jit(fn, donate_argnums=(0,), **kwargs)
