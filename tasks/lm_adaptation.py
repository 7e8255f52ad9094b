"""C4 with T5's prefix-LM objective: the "LM adaptation" of Lester et al. (2021), section 2.2
and Figure 3(d) (continue a span-corruption T5.1.1 checkpoint on this task for N steps).

`prefix_lm` is T5's `prefix_lm` token preprocessing (Raffel et al. 2020, the "LM objective"
the paper's adapted checkpoints were trained on), written here over seqio's stateless seeds
in T5's order, so it draws the same random chunks and split points as t5==0.9.4's
`t5.data.preprocessors.prefix_lm` (tests/tasks/test_lm_adaptation.py checks token equality):

  1. one random chunk of at most 65,536 tokens per document (the whole document when shorter);
  2. the chunk cut into segments of `inputs length - 1` tokens (room for EOS);
  3. each segment split at a uniform point k in [1, n - 1]: tokens[:k] -> inputs, the rest -> targets.

Task `c4_v220_prefix_lm` reads TFDS `c4/en:2.2.0` (T5's c4_v220 tasks); `register_text_task`
registers the same pipeline over an in-memory list of texts (tests, offline smoke runs).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import seqio
import tensorflow as tf

from prompt_tuning_jax.tasks import sources, superglue
from prompt_tuning_jax.text import vocab as vocab_lib

C4_TFDS = "c4/en:2.2.0"
TASK = "c4_v220_prefix_lm"
MAX_CHUNK = 65536  # T5's prefix_lm: select_random_chunk(max_length=65536)


def _random_chunk(dataset: tf.data.Dataset, max_length: int) -> tf.data.Dataset:
  """Step 1: one chunk of <= max_length tokens, at a random multiple of max_length."""

  @seqio.map_over_dataset(num_seeds=1)
  def chunk(x, seed):
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed))
    tokens = x["targets"]
    n = tf.shape(tokens)[0]
    segments = tf.cast(tf.math.ceil(tf.cast(n, tf.float32) / float(max_length)), tf.int32)
    start = max_length * tf.random.stateless_uniform([], maxval=segments, dtype=tf.int32, seed=seeds[1])
    return {"targets": tokens[start:tf.minimum(start + max_length, n)]}

  return chunk(dataset.filter(lambda x: tf.size(x["targets"]) > 0))


def _segments(dataset: tf.data.Dataset, length: int) -> tf.data.Dataset:
  """Step 2: consecutive segments of `length` tokens (the last may be shorter)."""

  @seqio.map_over_dataset(num_seeds=1)  # the seed is unused, drawn to keep T5's seed order
  def split(x, seed):
    del seed
    tokens = x["targets"]
    starts = tf.range(0, tf.size(tokens), length)
    return tf.data.Dataset.from_tensor_slices(starts).map(lambda s: {"targets": tokens[s:s + length]})

  return split(dataset.filter(lambda x: tf.size(x["targets"]) > 0)).flat_map(lambda d: d)


def _split_prefix(dataset: tf.data.Dataset, noise_density: float) -> tf.data.Dataset:
  """Step 3: inputs = a random prefix (at least round((1 - 2 * density) * (n - 1)) tokens, at
  most n - 1), targets = the rest."""

  @seqio.map_over_dataset(num_seeds=1)
  def split(x, seed):
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 6))
    tokens = x["targets"]
    most = tf.size(tokens) - 1
    least = tf.minimum(most, tf.maximum(1, tf.cast(tf.math.round((1 - 2 * noise_density) *
                                                                 tf.cast(most, tf.float32)), tf.int32)))
    k = tf.random.stateless_uniform([], minval=least, maxval=most + 1, dtype=tf.int32, seed=seeds[0])
    return {"inputs": tokens[:k], "targets": tokens[k:]}

  return split(dataset)


def prefix_lm(dataset: tf.data.Dataset, sequence_length: Mapping[str, int],
              output_features: Mapping[str, seqio.Feature], noise_density: float = 0.5) -> tf.data.Dataset:
  """Tokenized documents {'targets': [n]} -> prefix-LM pairs {'inputs': [k], 'targets': [m - k]}."""
  if noise_density > 0.5:
    raise ValueError(f"prefix_lm: noise_density={noise_density} must not exceed 0.5")
  length = sequence_length["inputs"] - (1 if output_features["inputs"].add_eos else 0)
  return _split_prefix(_segments(_random_chunk(dataset, MAX_CHUNK), length), noise_density)


@seqio.map_over_dataset
def text_to_targets(x: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  """C4 row -> {'targets': its text} (T5's rekey to targets; inputs come from prefix_lm)."""
  return {"targets": x["text"]}


def _preprocessors() -> list:
  return [text_to_targets, seqio.preprocessors.tokenize, seqio.CacheDatasetPlaceholder(), prefix_lm,
          seqio.preprocessors.append_eos_after_trim]


def _add(name: str, source: seqio.DataSource, vocabulary: seqio.Vocabulary) -> None:
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(name, source=source, preprocessors=_preprocessors(),
                         output_features=superglue.output_features(vocabulary), metric_fns=[])


def _c4(split: str, shuffle_files: bool = False, seed: int | None = None) -> tf.data.Dataset:
  import tensorflow_datasets as tfds
  return tfds.load(C4_TFDS, split=split, shuffle_files=shuffle_files, data_dir=sources.get_tfds_data_dir(),
                   read_config=tfds.ReadConfig(shuffle_seed=seed))


def register_text_task(name: str, texts: Sequence[str], vocabulary: seqio.Vocabulary | None = None) -> str:
  """The prefix-LM pipeline over in-memory `texts` (split 'train'), e.g. for a run with no network."""
  texts = list(texts)

  def load(split: str, shuffle_files: bool = False, seed: int | None = None) -> tf.data.Dataset:
    del shuffle_files, seed
    if split != "train":
      raise ValueError(f"task {name!r} has only a 'train' split, not {split!r}")
    return tf.data.Dataset.from_tensor_slices({"text": tf.constant(texts, tf.string)})

  _add(name, seqio.FunctionDataSource(load, splits=("train",)), vocabulary or vocab_lib.load_vocabulary())
  return name


def register_lm_adaptation() -> None:
  """Registers `c4_v220_prefix_lm` (re-registering is safe)."""
  _add(TASK, seqio.FunctionDataSource(_c4, splits=("train", "validation")), vocab_lib.load_vocabulary())


register_lm_adaptation()
