"""The demo tasks the delta comparison uses (benchmarks/delta_methods.py): their targets are
what their names say, read back through SeqIO, and the demo model never trained on them."""
from __future__ import annotations

import collections

import seqio

from prompt_tuning_jax.tasks import demo

# Written out by hand, not taken from demo.KINDS: a wrong entry there must fail here.
KIND_BY_HAND = {"red": "colour", "gold": "colour", "pink": "colour", "cat": "animal", "cow": "animal",
                "bear": "animal", "apple": "food", "tea": "food", "salt": "food", "one": "number",
                "seven": "number", "nine": "number"}


def _decoded(task: str, split: str = "validation") -> list[tuple[str, str]]:
  ds = seqio.get_mixture_or_task(task).get_dataset({"inputs": 64, "targets": 8}, split=split, shuffle=False)
  vocab = seqio.get_mixture_or_task(task).output_features["targets"].vocabulary
  return [(vocab.decode(ex["inputs"].tolist()), vocab.decode(ex["targets"].tolist())) for ex in ds.as_numpy_iterator()]


def test_second_word_target_is_the_inputs_second_word():
  rows = _decoded("demo_second_word")
  assert len(rows) == demo.SPLIT_SIZES["validation"]
  for inputs, target in rows:
    words = inputs.split()
    assert len(words) == demo.ROW_LENGTH and target == words[1], (inputs, target)
    assert target not in (words[0], words[2], words[4])  # no trained position (first, middle, last) gives it


def test_first_kind_target_is_the_first_words_kind():
  rows = _decoded("demo_first_kind")
  checked = 0
  for inputs, target in rows:
    first = inputs.split()[0]
    assert target in ("colour", "animal", "food", "number"), target
    if first in KIND_BY_HAND:
      assert target == KIND_BY_HAND[first], (inputs, target)
      checked += 1
  assert checked > 50
  assert set(t for _, t in rows) == {"colour", "animal", "food", "number"}


def test_unseen_tasks_are_not_in_the_demo_models_training_mixture():
  trained = {t.name for t in seqio.get_mixture_or_task("demo_pretrain").tasks}
  assert trained == {"demo_first_word", "demo_middle_word", "demo_last_word"}
  # The demo model only ever emitted row words: no kind label is one of them.
  assert not {"colour", "animal", "food", "number"} & set(demo.WORDS)
  # The taskless variants read the same rows with the prefix removed; the unseen tasks never had one.
  for inputs, _ in _decoded("demo_second_word")[:20] + _decoded("demo_first_kind")[:20]:
    assert "word:" not in inputs


def test_majority_shares_are_the_documented_ones():
  """docs/DELTA.md states the majority class of each demo dev split."""
  for task, documented in (("demo_first_kind", 28.5), ("demo_second_word", 4.7)):
    counts = collections.Counter(t for _, t in _decoded(task))
    share = 100.0 * max(counts.values()) / sum(counts.values())
    assert round(share, 1) == documented, (task, share)
