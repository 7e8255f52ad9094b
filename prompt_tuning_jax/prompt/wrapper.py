"""A frozen T5 with a soft prompt: the prompt wrapper, the model factory, loss and scores.

The prompt is a [P, d] float32 parameter at `encoder/prompt/prompt/prompt` (the original
release's path), or a bank [T, P, d] of one prompt per task selected per example by
`prompt_ids` (mixed-task batches, ensembles). It is combined with the embedded encoder
inputs, and the attention mask grows to cover it. The T5 itself is untouched: the wrapper
reaches it only through `t5.Transformer(input_wrapper=...)`.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from prompt_tuning_jax.model.config import T5Config
from prompt_tuning_jax.model import t5
from prompt_tuning_jax.prompt import PROMPT_PATH

Array = jax.Array
COMBINATIONS = ("prefix", "prefix_after_first", "suffix_before_eos")


@dataclasses.dataclass(frozen=True)
class PromptConfig:
  """Shape and placement of the soft prompt. length=0 gives the plain model."""
  length: int = 100
  combination: str = "prefix"
  num_prompts: int = 1  # >1: a bank [T, P, d] indexed by per-example prompt_ids

  def __post_init__(self):
    if self.length < 0:
      raise ValueError(f"PromptConfig.length must be >= 0, got {self.length}")
    if self.combination not in COMBINATIONS:
      raise ValueError(f"PromptConfig.combination={self.combination!r}; expected one of {COMBINATIONS}")
    if self.num_prompts < 1:
      raise ValueError(f"PromptConfig.num_prompts must be >= 1, got {self.num_prompts}")

  def shape(self, emb_dim: int) -> tuple[int, ...]:
    lead = () if self.num_prompts == 1 else (self.num_prompts,)
    return lead + (self.length, emb_dim)


class Prompt(nn.Module):
  """Holds the prompt parameter. Its value is set by the trainer (see prompts.py), so
  the init here only fixes shape, dtype and the replicated logical axes."""
  shape: tuple[int, ...]

  @nn.compact
  def __call__(self) -> Array:
    axes = ("prompt_bank",) * (len(self.shape) - 2) + ("prompt", "prompt_embed")
    return self.param("prompt", nn.with_logical_partitioning(nn.initializers.zeros, axes),
                      self.shape, jnp.float32)


class PromptWrapper(nn.Module):
  """Combines the prompt with embedded inputs [B, L, d] -> [B, L + P, d], mask likewise.

  Packed rows (segment ids given) hold a copy of the prompt at the start of every
  segment, in P slots the data pipeline reserved there, so the row length is unchanged.
  """
  config: PromptConfig
  emb_dim: int

  @nn.compact
  def __call__(self, embedded: Array, valid: Array, prompt_ids: Array | None,
               segment_ids: Array | None = None) -> tuple[Array, Array, Array | None]:
    cfg = self.config
    prompt = Prompt(cfg.shape(self.emb_dim), name="prompt")()
    batch = embedded.shape[0]
    if cfg.num_prompts == 1:
      prompt = jnp.broadcast_to(prompt, (batch,) + prompt.shape)
    else:
      if prompt_ids is None:
        raise ValueError(f"PromptConfig.num_prompts={cfg.num_prompts} needs per-example prompt_ids")
      prompt = jnp.take(prompt, prompt_ids, axis=0)
    prompt = prompt.astype(embedded.dtype)
    if segment_ids is not None:
      if cfg.combination != "prefix" or cfg.num_prompts != 1:
        raise ValueError("packed inputs take PromptConfig.combination='prefix' and num_prompts=1")
      return _fill_segment_prompts(embedded, segment_ids, prompt), valid, segment_ids
    prompt_valid = jnp.ones(prompt.shape[:2], bool)
    if cfg.combination == "prefix":  # the default and hot path: a plain concatenation
      return (jnp.concatenate([prompt, embedded], axis=1), jnp.concatenate([prompt_valid, valid], axis=1), None)
    if cfg.combination == "prefix_after_first":
      insert_at = jnp.ones((batch,), jnp.int32)
    else:  # suffix_before_eos: the last valid input token is EOS
      insert_at = jnp.maximum(jnp.sum(valid, axis=1).astype(jnp.int32) - 1, 0)
    return _insert(embedded, prompt, insert_at), _insert(valid, prompt_valid, insert_at), None


def _insert(x: Array, block: Array, at: Array) -> Array:
  """Insert block [B, P, ...] into x [B, L, ...] before position at[b], per example."""
  length, p = x.shape[1], block.shape[1]
  if p == 0:
    return x
  pos = jnp.arange(length + p)[None, :]
  start = at[:, None]
  in_block = (pos >= start) & (pos < start + p)
  x_index = jnp.where(pos < start, pos, pos - p).clip(0, length - 1)
  b_index = (pos - start).clip(0, p - 1)
  take = lambda arr, idx: jnp.take_along_axis(arr, idx.reshape(idx.shape + (1,) * (arr.ndim - 2)), axis=1)
  mask = in_block.reshape(in_block.shape + (1,) * (x.ndim - 2))
  return jnp.where(mask, take(block, b_index), take(x, x_index))


def _fill_segment_prompts(x: Array, segments: Array, prompt: Array) -> Array:
  """Packed rows: each segment's first P slots (placeholders reserved by the data
  pipeline, `data.reserve_prompt_slots`) take the prompt's rows 0..P-1; shapes are kept."""
  length, p = x.shape[1], prompt.shape[1]
  t = jnp.arange(length)[None, :]
  starts = jnp.concatenate([jnp.ones_like(segments[:, :1], bool), segments[:, 1:] != segments[:, :-1]], axis=1)
  position = t - jax.lax.cummax(jnp.where(starts, t, 0), axis=1)  # index within the segment
  slot = (position < p) & (segments > 0)
  rows = jnp.take_along_axis(prompt, jnp.clip(position, 0, p - 1)[..., None], axis=1)
  return jnp.where(slot[..., None], rows, x)


def make_model(t5_config: T5Config, prompt_config: PromptConfig | None) -> t5.Transformer:
  """The frozen T5 with a prompt wrapper (or the plain T5 when prompt_config is None)."""
  if prompt_config is None:
    return t5.Transformer(t5_config)
  wrapper = functools.partial(PromptWrapper, prompt_config, t5_config.emb_dim)
  return t5.Transformer(t5_config, input_wrapper=wrapper)


def get_prompt(params: Any) -> Array:
  node = params
  for key in PROMPT_PATH:
    node = node[key]
  return node


def set_prompt(params: dict, prompt: Array) -> dict:
  """A copy of params with the prompt leaf replaced (other leaves shared, not copied)."""
  enc = dict(params["encoder"])
  enc["prompt"] = {"prompt": {"prompt": prompt}}
  return {**params, "encoder": enc}
