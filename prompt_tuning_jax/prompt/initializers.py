"""Prompt initializers: small closures that return a float32 prompt `[P, d]`.

Every initializer has one signature (`Initializer`):

  init(rng, shape, embedding=None) -> jax.Array float32 [P, d]

`shape` is `(P, d)` and `embedding` is the frozen token embedding table `[V, d]`,
handed over by the caller at init time (so gin only binds the small settings,
never a table, and the checkpoint is read once). Initializers that do not need
the table ignore it, so they also work as plain Flax `(rng, shape)` initializers.

The constructors are plain functions with keyword arguments; gin registers them
from outside the library (`gin.external_configurable`), e.g.

  prompt_init = @class_labels()
  class_labels.label_token_ids = @label_token_ids()
  class_labels.fallback = @sampled_vocab()
  sampled_vocab.population_size = 5000
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning_jax.prompt import PROMPT_VARIABLE
from prompt_tuning_jax.prompt import files as prompt_files

ArrayLike = jax.Array | np.ndarray


class Initializer(Protocol):
  """`init(rng, (P, d), embedding [V, d] | None) -> float32 [P, d]`."""

  def __call__(self, rng: jax.Array, shape: Sequence[int],
               embedding: ArrayLike | None = None) -> jax.Array:
    ...


def _check_shape(name: str, shape: Sequence[int]) -> tuple[int, int]:
  shape = tuple(int(s) for s in shape)
  if len(shape) != 2 or min(shape) <= 0:
    raise ValueError(f"{name}: prompt shape must be (P, d) with P, d > 0, got {shape}")
  return shape  # type: ignore[return-value]


def _check_embedding(name: str, embedding: ArrayLike | None,
                     shape: tuple[int, int]) -> ArrayLike:
  """The embedding table must be given and have the prompt's width d."""
  if embedding is None:
    raise ValueError(
        f"{name} needs the frozen token embedding table [V, d]; got None. Pass it "
        "as the third argument: init(rng, shape, params['token_embedder']['embedding'])")
  if embedding.ndim != 2 or embedding.shape[1] != shape[1]:
    raise ValueError(
        f"{name}: embedding table has shape {tuple(embedding.shape)} but the prompt "
        f"shape is {shape}; expected [V, {shape[1]}]")
  return embedding


def _check_ids(name: str, ids: Sequence[int], vocab_rows: int) -> list[int]:
  ids = [int(i) for i in ids]
  if not ids:
    raise ValueError(f"{name}: token id list is empty")
  bad = [i for i in ids if not 0 <= i < vocab_rows]
  if bad:
    raise ValueError(
        f"{name}: token ids {bad} are outside the embedding table [0, {vocab_rows})")
  return ids


def _check_result(name: str, prompt: jax.Array, shape: tuple[int, int]) -> jax.Array:
  if tuple(prompt.shape) != shape:
    raise ValueError(f"{name} produced shape {tuple(prompt.shape)}, expected {shape}")
  return prompt.astype(jnp.float32)


# ----- random -----

def uniform_symmetric(scale: float = 0.5) -> Initializer:
  """Uniform in [-scale, scale): the paper's "random uniform" init (scale 0.5)."""
  if scale <= 0:
    raise ValueError(f"uniform_symmetric: scale must be > 0, got {scale}")

  def init(rng: jax.Array, shape: Sequence[int],
           embedding: ArrayLike | None = None) -> jax.Array:
    del embedding
    shape = _check_shape("uniform_symmetric", shape)
    return jax.random.uniform(rng, shape, jnp.float32, -scale, scale)

  return init


def uniform_zero_to_scale(scale: float = 0.5) -> Initializer:
  """Uniform in [0, scale): what the original code's `uniform(0.5)` really drew.

  The original configs used `flax.linen.initializers.uniform(scale=0.5)`, which
  samples [0, scale), not the paper's [-0.5, 0.5]; kept for exact replication.
  """
  if scale <= 0:
    raise ValueError(f"uniform_zero_to_scale: scale must be > 0, got {scale}")

  def init(rng: jax.Array, shape: Sequence[int],
           embedding: ArrayLike | None = None) -> jax.Array:
    del embedding
    shape = _check_shape("uniform_zero_to_scale", shape)
    return jax.random.uniform(rng, shape, jnp.float32, 0.0, scale)

  return init


def sampled_vocab(population_size: int = 5000) -> Initializer:
  """Rows of the embedding table drawn from its first `population_size` rows.

  SentencePiece ids are frequency ordered, so the first 5,000 rows are the most
  common pieces (the paper's "sampled vocabulary"). Like the original
  `from_sample_of_embeddings`, rows are drawn WITHOUT replacement when
  P <= population and WITH replacement (logged) otherwise. A population larger
  than the table is clipped to V (logged).
  """
  if population_size <= 0:
    raise ValueError(f"sampled_vocab: population_size must be > 0, got {population_size}")

  def init(rng: jax.Array, shape: Sequence[int],
           embedding: ArrayLike | None = None) -> jax.Array:
    shape = _check_shape("sampled_vocab", shape)
    embedding = _check_embedding("sampled_vocab", embedding, shape)
    population = population_size
    if population > embedding.shape[0]:
      logging.warning("sampled_vocab: population_size %d > %d embedding rows; "
                      "using all rows", population, embedding.shape[0])
      population = embedding.shape[0]
    replace = shape[0] > population
    if replace:
      logging.warning("sampled_vocab: prompt length %d > population %d; sampling "
                      "with replacement", shape[0], population)
    index = jax.random.choice(rng, population, (shape[0],), replace=replace)
    rows = jnp.take(jnp.asarray(embedding), index, axis=0)
    return _check_result("sampled_vocab", rows, shape)

  return init


# ----- from the vocabulary -----

def class_labels(label_token_ids: Sequence[Sequence[int]],
                 fallback: Initializer | None = None) -> Initializer:
  """One row per class label (mean of its pieces' embeddings) at the START.

  Row i is `mean(embedding[label_token_ids[i]], axis=0)`; rows after the labels
  come from `fallback` (default: `sampled_vocab(5000)`, as in the paper). Get the
  ids with `vocab.label_token_ids(vocab, ['entailment', 'not_entailment'])`.
  """
  labels = [list(ids) for ids in label_token_ids]
  if not labels:
    raise ValueError("class_labels: label_token_ids is empty")
  fallback = fallback if fallback is not None else sampled_vocab()

  def init(rng: jax.Array, shape: Sequence[int],
           embedding: ArrayLike | None = None) -> jax.Array:
    shape = _check_shape("class_labels", shape)
    embedding = _check_embedding("class_labels", embedding, shape)
    if len(labels) > shape[0]:
      raise ValueError(f"class_labels: {len(labels)} labels do not fit in a prompt "
                       f"of length {shape[0]}")
    table = jnp.asarray(embedding)
    rows = []
    for i, ids in enumerate(labels):
      ids = _check_ids(f"class_labels label {i}", ids, table.shape[0])
      rows.append(jnp.mean(table[jnp.asarray(ids)].astype(jnp.float32), axis=0))
    prompt = _check_result("class_labels fallback", fallback(rng, shape, embedding),
                           shape)
    return prompt.at[:len(rows)].set(jnp.stack(rows))

  return init


def from_string(token_ids: Sequence[int],
                fallback: Initializer | None = None) -> Initializer:
  """The embeddings of a tokenized string, one piece per row, at the START.

  Rows after the string come from `fallback` (default `sampled_vocab(5000)`).
  A string with more pieces than P is an error rather than silently cut.
  """
  ids_list = [int(i) for i in token_ids]
  if not ids_list:
    raise ValueError("from_string: token_ids is empty")
  fallback = fallback if fallback is not None else sampled_vocab()

  def init(rng: jax.Array, shape: Sequence[int],
           embedding: ArrayLike | None = None) -> jax.Array:
    shape = _check_shape("from_string", shape)
    embedding = _check_embedding("from_string", embedding, shape)
    if len(ids_list) > shape[0]:
      raise ValueError(f"from_string: {len(ids_list)} pieces do not fit in a prompt "
                       f"of length {shape[0]}")
    table = jnp.asarray(embedding)
    ids = _check_ids("from_string", ids_list, table.shape[0])
    rows = table[jnp.asarray(ids)].astype(jnp.float32)
    prompt = _check_result("from_string fallback", fallback(rng, shape, embedding),
                           shape)
    return prompt.at[:len(ids)].set(rows)

  return init


# ----- from saved prompts -----

def from_array(array: ArrayLike, source: str = "array") -> Initializer:
  """A fixed prompt; `source` names where it came from in shape errors."""
  array = np.asarray(array)

  def init(rng: jax.Array, shape: Sequence[int],
           embedding: ArrayLike | None = None) -> jax.Array:
    del rng, embedding
    shape = _check_shape("from_array", shape)
    if tuple(array.shape) != shape:
      raise ValueError(f"prompt from {source} has shape {tuple(array.shape)}, "
                       f"expected {shape} (prompt length, model width)")
    return jnp.asarray(array, dtype=jnp.float32)

  return init


def _from_loader(load: Callable[[tuple[int, int]], np.ndarray]) -> Initializer:
  """Reads the prompt only when the initializer is called (at init time)."""

  def init(rng: jax.Array, shape: Sequence[int],
           embedding: ArrayLike | None = None) -> jax.Array:
    del rng, embedding
    shape = _check_shape("prompt loader", shape)
    return jnp.asarray(load(shape), dtype=jnp.float32)

  return init


def from_file(path: str | Path) -> Initializer:
  """A prompt saved in any supported format; see `prompt_files.load_prompt`."""
  return _from_loader(lambda shape: prompt_files.load_prompt(path, expected_shape=shape))


def from_npy(path: str | Path) -> Initializer:
  """A prompt `[P, d]` from a `.npy`-format file (any name, e.g. the original
  `numpy_checkpoints/checkpoint_<step>/encoder.prompt.prompt.prompt`)."""

  def load(shape):
    return prompt_files.check_shape(prompt_files.load_npy(path), shape, path)

  return _from_loader(load)


def from_peft_adapter(directory: str | Path) -> Initializer:
  """A prompt from a Hugging Face PEFT prompt-tuning adapter directory."""

  def load(shape):
    return prompt_files.check_shape(prompt_files.load_peft_adapter(directory), shape,
                                 directory)

  return _from_loader(load)


def from_t5x_checkpoint(path: str | Path,
                        variable: str = PROMPT_VARIABLE) -> Initializer:
  """A prompt stored as `variable` inside a T5X checkpoint directory."""

  def load(shape):
    return prompt_files.load_t5x_prompt(path, variable, expected_shape=shape)

  return _from_loader(load)


def class_label_words(labels: Sequence[str], fallback: Initializer | None = None,
                      vocabulary_path: str | None = None) -> Initializer:
  """Class-label init from label strings, tokenized with the model's SentencePiece."""
  from prompt_tuning_jax.text import vocab  # pylint: disable=g-import-not-at-top  (SentencePiece/SeqIO)
  ids = vocab.label_token_ids(vocab.load_vocabulary(vocabulary_path), list(labels))
  return class_labels(ids, fallback=fallback)
