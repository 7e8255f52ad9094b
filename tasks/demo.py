"""Synthetic multi-task data for the embedded demo (no download, deterministic).

Each input is a row of five words. Three tasks read the same rows and differ only in the
text prefix that names them: `first word:`, `middle word:`, `last word:`. A model trained
on the prefixed mixture knows all three; once the prefix is removed ("taskless", as in
the paper) it cannot tell which is asked and scores near chance (~1/3), until a learned
prompt takes the prefix's place.

Registered: demo_{first,middle,last}_word, demo_{...}_taskless, mixture demo_pretrain.

Two more tasks read the same rows but were never part of the demo model's training, with or
without a prefix, so no method can win by standing in for a learned task prefix (the fair
tasks of benchmarks/delta_methods.py): `demo_second_word` (the word at position 1, which no
training task asked for) and `demo_first_kind` (what kind of thing the first word is:
colour, animal, food or number; labels the model never produced).
"""
from __future__ import annotations

import functools

import numpy as np
import seqio
import tensorflow as tf

from prompt_tuning_jax.text import vocab as vocab_lib

WORDS = ("red blue green black white pink brown gold cat dog fish bird horse cow bear apple "
         "bread milk rice cake tea wine salt one two three four five six seven eight nine").split()
ROW_LENGTH = 5
POSITIONS = {"first": 0, "middle": ROW_LENGTH // 2, "last": ROW_LENGTH - 1}
SPLIT_SIZES = {"train": 20000, "validation": 256}
_SPLIT_SEEDS = {"train": 0, "validation": 1}
KINDS = {"colour": WORDS[0:8], "animal": WORDS[8:15], "food": WORDS[15:23], "number": WORDS[23:]}
KIND_OF = {w: kind for kind, words in KINDS.items() for w in words}
UNSEEN_TASKS = ("second_word", "first_kind")  # never trained, with or without a prefix


def rows(split: str) -> np.ndarray:
  """[N, 5] word indices, distinct words per row, fixed per split."""
  rng = np.random.RandomState(_SPLIT_SEEDS[split])
  return np.stack([rng.choice(len(WORDS), ROW_LENGTH, replace=False) for _ in range(SPLIT_SIZES[split])])


def examples(task: str, split: str, *, with_prefix: bool) -> dict[str, list[str]]:
  idx = rows(split)
  text = [" ".join(WORDS[i] for i in r) for r in idx]
  inputs = [f"{task} word: {t}" if with_prefix else t for t in text]
  targets = [WORDS[r[POSITIONS[task]]] for r in idx]
  return {"inputs": inputs, "targets": targets}


def unseen_examples(task: str, split: str) -> dict[str, list[str]]:
  """The rows as bare inputs, with a target no demo training task asked for."""
  idx = rows(split)
  target = {"second_word": lambda r: WORDS[r[1]], "first_kind": lambda r: KIND_OF[WORDS[r[0]]]}[task]
  return {"inputs": [" ".join(WORDS[i] for i in r) for r in idx], "targets": [target(r) for r in idx]}


def _unseen_dataset_fn(split: str, shuffle_files: bool, seed: int | None = None, *, task: str) -> tf.data.Dataset:
  del shuffle_files, seed
  return tf.data.Dataset.from_tensor_slices(unseen_examples(task, split))


def _dataset_fn(split: str, shuffle_files: bool, seed: int | None = None, *, task: str,
                with_prefix: bool) -> tf.data.Dataset:
  del shuffle_files, seed
  return tf.data.Dataset.from_tensor_slices(examples(task, split, with_prefix=with_prefix))


def _register() -> None:
  vocab = vocab_lib.load_vocabulary()
  features = {name: seqio.Feature(vocab, add_eos=True) for name in ("inputs", "targets")}
  for task in POSITIONS:
    for with_prefix, suffix in ((True, ""), (False, "_taskless")):
      name = f"demo_{task}_word{suffix}"
      if name in seqio.TaskRegistry.names():
        continue
      source = seqio.FunctionDataSource(
          functools.partial(_dataset_fn, task=task, with_prefix=with_prefix),
          splits=tuple(SPLIT_SIZES), num_input_examples=SPLIT_SIZES)
      seqio.TaskRegistry.add(name, source=source, output_features=features,
                             preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos],
                             metric_fns=[])
  for task in UNSEEN_TASKS:
    if f"demo_{task}" not in seqio.TaskRegistry.names():
      source = seqio.FunctionDataSource(functools.partial(_unseen_dataset_fn, task=task),
                                        splits=tuple(SPLIT_SIZES), num_input_examples=SPLIT_SIZES)
      seqio.TaskRegistry.add(f"demo_{task}", source=source, output_features=features,
                             preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos],
                             metric_fns=[])
  if "demo_pretrain" not in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.add("demo_pretrain", [f"demo_{t}_word" for t in POSITIONS], default_rate=1.0)


_register()
