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

from prompt_tuning_jax.model import losses, t5
from prompt_tuning_jax.trainer import optim

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
  # Split each batch into this many pieces and sum their gradients (T5X's
  # num_microbatches): same update, a fraction of the activation memory.
  num_microbatches: int = struct.field(pytree_node=False, default=1)

  def __post_init__(self):
    if self.num_microbatches < 1:
      raise ValueError(f"LossConfig.num_microbatches must be >= 1, got {self.num_microbatches}")


def init_state(trainable: Any, optimizer: optax.GradientTransformation, rng: Array) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=trainable,
                    opt_state=optimizer.init(trainable), rng=rng)


def train_step(state: TrainState, frozen: Any, batch: dict[str, Array], *, model: t5.Transformer,
               optimizer: optax.GradientTransformation, loss_config: LossConfig) -> tuple[TrainState, dict]:
  """One update of the trainable params; returns the new state and scalar metrics."""
  dropout_rng = jax.random.fold_in(state.rng, state.step) if loss_config.enable_dropout else None

  def loss_of(trainable, piece, rng):
    params = optim.merge_params(trainable, frozen)
    return losses.loss_fn(model, params, piece, rng, z_loss=loss_config.z_loss,
                            loss_normalizing_factor=loss_config.loss_normalizing_factor)

  grad_fn = jax.value_and_grad(loss_of, has_aux=True)
  if loss_config.num_microbatches == 1:
    (_, metrics), grads = grad_fn(state.params, batch, dropout_rng)
  else:
    grads, metrics = _accumulate(grad_fn, state.params, batch, dropout_rng, loss_config.num_microbatches)
  updates, new_opt_state = optimizer.update(grads, state.opt_state, state.params)
  new_params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics, grad_norm=optax.global_norm(grads), update_norm=optax.global_norm(updates),
                 param_norm=optax.global_norm(new_params))
  # The guard looks at what would be committed: every logged scalar (loss and the three
  # norms included) and every leaf of the new params and optimizer state. A non-finite
  # update is never applied (selected away in-graph, no host round trip); the loop reads
  # `all_finite` to stop or to record a skip, `opt_state_finite` to name the culprit.
  opt_state_finite = all_finite(new_opt_state)
  ok = all_finite(metrics) & all_finite(new_params) & opt_state_finite
  params, opt_state = jax.tree.map(lambda new, old: jnp.where(ok, new, old),
                                   (new_params, new_opt_state), (state.params, state.opt_state))
  metrics = dict(metrics, all_finite=ok, opt_state_finite=opt_state_finite)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def all_finite(tree: Any) -> Array:
  """bool []: no NaN or Inf in any floating leaf of `tree` (integer leaves always are)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


_TOKEN_MEANS = ("cross_entropy", "z_loss", "token_accuracy")


def _accumulate(grad_fn, params: Any, batch: dict[str, Array], rng: Array | None, n: int) -> tuple[Any, dict]:
  """Sum gradients over n equal pieces of the batch in a scan; per-token means are
  re-weighted by each piece's token count, sums (loss, num_tokens) are added."""
  size = jax.tree.leaves(batch)[0].shape[0]
  if size % n:
    raise ValueError(f"batch size {size} is not divisible by LossConfig.num_microbatches={n}")
  pieces = jax.tree.map(lambda x: x.reshape((n, size // n) + x.shape[1:]), batch)

  def body(carry, xs):
    grads, sums = carry
    piece, i = xs
    (_, m), g = grad_fn(params, piece, None if rng is None else jax.random.fold_in(rng, i))
    m = {k: v * m["num_tokens"] if k in _TOKEN_MEANS else v for k, v in m.items()}
    return (jax.tree.map(jnp.add, grads, g), jax.tree.map(jnp.add, sums, m)), None

  zero_metrics = jax.eval_shape(lambda: grad_fn(params, jax.tree.map(lambda x: x[0], pieces), rng)[0][1])
  init = (jax.tree.map(jnp.zeros_like, params), jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zero_metrics))
  (grads, sums), _ = jax.lax.scan(body, init, (pieces, jnp.arange(n)))
  tokens = jnp.maximum(sums["num_tokens"], 1.0)
  return grads, {k: v / tokens if k in _TOKEN_MEANS else v for k, v in sums.items()}


def jit_train_step(model: t5.Transformer, optimizer: optax.GradientTransformation,
                   loss_config: LossConfig, *, in_shardings: Any = None, out_shardings: Any = None):
  """train_step compiled once, with the state donated (and shardings when given)."""
  fn = functools.partial(train_step, model=model, optimizer=optimizer, loss_config=loss_config)
  kwargs = {}
  if in_shardings is not None:
    kwargs = dict(in_shardings=in_shardings, out_shardings=out_shardings)
  return jax.jit(fn, donate_argnums=(0,), **kwargs)
