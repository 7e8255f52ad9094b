"""SeqIO task or mixture -> fixed-shape numpy batches for the encoder-decoder.

Batches have the T5X feature names (`encoder_input_tokens`, `decoder_input_tokens`,
`decoder_target_tokens`, `decoder_loss_weights`). Training streams are deterministic for
a seed, so a resumed run skips exactly the batches it had consumed and sees the same data
as an uninterrupted one. On several hosts every host builds the same global stream and
keeps its own rows of each global batch (its own examples, before feature conversion,
when unpacked), so the batches do not depend on the number of hosts: a multi-host run
trains on exactly the data of a single-host one. The price is that each host reads and
tokenizes the whole stream (SeqIO tokenises before shuffling), which is small next to a
model step for prompt tuning's batch sizes (32 x 512 tokens).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Iterator, Mapping

import numpy as np

from prompt_tuning_jax.text import quiet

if TYPE_CHECKING:  # imported where a dataset is built (quiet.import_seqio): TensorFlow takes seconds
  import seqio
  import tensorflow as tf

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Which task, how long, how many per batch."""
  mixture_or_task_name: str = "demo_last_word_taskless"
  mixture_or_task_module: str | None = "prompt_tuning_jax.tasks"
  task_feature_lengths: Mapping[str, int] = dataclasses.field(
      default_factory=lambda: {"inputs": 512, "targets": 8})
  batch_size: int = 32
  train_split: str = "train"
  eval_split: str = "validation"
  seed: int = 0
  pack: bool = False
  # Evaluation as T5X's infer_eval (task_feature_lengths=None): None keeps eval inputs whole
  # and decodes up to the split's longest target; an int cuts / caps them instead.
  eval_inputs_length: int | None = None
  eval_targets_length: int | None = None

  def __post_init__(self):
    if self.batch_size <= 0:
      raise ValueError(f"DataConfig.batch_size must be > 0, got {self.batch_size}")
    for name in ("eval_inputs_length", "eval_targets_length"):
      value = getattr(self, name)
      if value is not None and (not isinstance(value, int) or value < 2):
        raise ValueError(f"DataConfig.{name} must be None (untruncated) or an int >= 2, got {value!r}")
    missing = {"inputs", "targets"} - set(self.task_feature_lengths)
    if missing:
      raise ValueError(f"DataConfig.task_feature_lengths={dict(self.task_feature_lengths)} lacks {sorted(missing)}")


def get_task(cfg: DataConfig) -> seqio.Task | seqio.Mixture:
  """Import the registering module, then look the name up with a helpful error."""
  seqio = quiet.import_seqio()
  if cfg.mixture_or_task_module:
    quiet.import_module(cfg.mixture_or_task_module)
  try:
    return seqio.get_mixture_or_task(cfg.mixture_or_task_name)
  except ValueError as e:
    known = sorted(seqio.TaskRegistry.names()) + sorted(seqio.MixtureRegistry.names())
    raise ValueError(f"MIXTURE_OR_TASK_NAME={cfg.mixture_or_task_name!r} is not registered "
                     f"(module {cfg.mixture_or_task_module!r}); known: {known[:40]}") from e


PROMPT_SLOT_ID = 1  # any non-padding id: the model overwrites these slots with the prompt


def reserve_prompt_slots(ds: tf.data.Dataset, prompt_length: int, input_length: int) -> tf.data.Dataset:
  """Packing with prompts: put P placeholder tokens in front of each example's inputs,
  so the packer budgets a prompt copy per segment inside the row (the prompt wrapper
  fills the first P slots of every segment). Inputs are cut to leave room for them."""
  tf = quiet.import_tensorflow()

  def add(ex):
    head = tf.fill([prompt_length], tf.constant(PROMPT_SLOT_ID, ex["inputs"].dtype))
    return {**ex, "inputs": tf.concat([head, ex["inputs"][: input_length - prompt_length]], 0)}
  return ds.map(add, num_parallel_calls=tf.data.AUTOTUNE)


def _converted(cfg: DataConfig, split: str, *, shuffle: bool, repeat: bool,
               prompt_slots: int = 0, keep_rows: tuple[int, int] | None = None) -> tf.data.Dataset:
  """The task's examples, converted to model features. `keep_rows=(start, stop)` keeps,
  before conversion, only example i with start <= i % batch_size < stop (unpacked only)."""
  task = get_task(cfg)  # imports seqio
  seqio = quiet.import_seqio()
  ds = task.get_dataset(dict(cfg.task_feature_lengths), split=split, shuffle=shuffle,
                        seed=cfg.seed if shuffle else None, num_epochs=None if repeat else 1,
                        use_cached=False)
  if keep_rows is not None:
    start, stop = keep_rows
    ds = ds.enumerate().filter(lambda i, _: (i % cfg.batch_size >= start) & (i % cfg.batch_size < stop))
    ds = ds.map(lambda _, ex: ex)
  if cfg.pack and prompt_slots:
    ds = reserve_prompt_slots(ds, prompt_slots, cfg.task_feature_lengths["inputs"])
  converter = seqio.EncDecFeatureConverter(pack=cfg.pack)
  return converter(ds, dict(cfg.task_feature_lengths))


class _ExactResumeFilter(logging.Filter):
  """SeqIO warns that an uncached FunctionDataSource "results in insufficient shuffling on
  restarts"; `train_batches` resumes by skipping the consumed batches of the same seeded
  stream, so that warning does not apply here and is dropped (all others pass)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "uncached FunctionDataset for training" not in record.getMessage()


_EXACT_RESUME_FILTER = _ExactResumeFilter()


def train_batches(cfg: DataConfig, *, skip_batches: int = 0, shard_id: int = 0,
                  num_shards: int = 1, prompt_slots: int = 0) -> Iterator[Batch]:
  """Endless, shuffled batches: rows [shard_id * b, (shard_id + 1) * b) of each global
  [batch_size, ...] batch, b = batch_size / num_shards (`sharding.data_layout` gives
  this host's shard); `skip_batches` resumes a stream mid-way. With `cfg.pack`, rows of
  `inputs` length hold several examples, each with `prompt_slots` reserved up front.

  Unpacked, example i of the shuffled stream is row i % batch_size of global batch
  i // batch_size, so a host keeps its examples before feature conversion and batching
  (same rows as slicing the global batch). SeqIO tokenises before its shuffle buffer,
  so every host still reads and tokenises the whole stream: skipping that would change
  the order. Packed rows depend on their neighbours, so packing slices whole batches.
  """
  if cfg.batch_size % num_shards:
    raise ValueError(f"DataConfig.batch_size={cfg.batch_size} is not divisible by {num_shards} data shards")
  if not 0 <= shard_id < num_shards:
    raise ValueError(f"data shard_id must be in [0, {num_shards}), got {shard_id}")
  per_host = cfg.batch_size // num_shards
  logging.getLogger("absl").addFilter(_EXACT_RESUME_FILTER)  # adding the same filter twice is a no-op
  rows = slice(shard_id * per_host, (shard_id + 1) * per_host)
  split_examples = num_shards > 1 and not cfg.pack
  ds = _converted(cfg, cfg.train_split, shuffle=True, repeat=True, prompt_slots=prompt_slots,
                  keep_rows=(rows.start, rows.stop) if split_examples else None)
  ds = ds.batch(per_host if split_examples else cfg.batch_size, drop_remainder=True).skip(skip_batches)
  if num_shards > 1 and not split_examples:
    ds = ds.map(lambda batch: {k: v[rows] for k, v in batch.items()})
  for batch in ds.prefetch(2).as_numpy_iterator():
    yield {k: np.asarray(v) for k, v in batch.items()}


def eval_examples(cfg: DataConfig, split: str | None = None) -> list[dict]:
  """Every example of the eval split once, untruncated (EOS-terminated), with its raw text
  fields, in order; `cut_eval_inputs` applies DataConfig.eval_inputs_length."""
  task = get_task(cfg)
  ds = task.get_dataset(None, split=split or cfg.eval_split, shuffle=False, num_epochs=1, use_cached=False)
  return list(ds.as_numpy_iterator())


def cut_eval_inputs(ids: np.ndarray, length: int | None, eos_id: int = 1) -> np.ndarray:
  """Eval input ids, whole (length None) or cut to `length` keeping the final EOS (seqio's trim)."""
  ids = np.asarray(ids)
  if length is None or len(ids) <= length:
    return ids
  return np.concatenate([ids[: length - 1], np.asarray([eos_id], ids.dtype)])


def eval_decode_length(cfg: DataConfig, examples: list[dict]) -> int:
  """Decoding budget: DataConfig.eval_targets_length, else the split's longest target (EOS included)."""
  if cfg.eval_targets_length is not None:
    return cfg.eval_targets_length
  return max([len(ex["targets"]) for ex in examples if "targets" in ex] or [cfg.task_feature_lengths["targets"]])


def encdec_features(inputs: np.ndarray, targets: np.ndarray) -> Batch:
  """Token arrays [B, L], [B, T] -> the model's features (teacher forcing, shift right)."""
  decoder_inputs = np.zeros_like(targets)
  decoder_inputs[:, 1:] = targets[:, :-1]
  return {"encoder_input_tokens": inputs.astype(np.int32), "decoder_input_tokens": decoder_inputs.astype(np.int32),
          "decoder_target_tokens": targets.astype(np.int32),
          "decoder_loss_weights": (targets > 0).astype(np.int32)}
