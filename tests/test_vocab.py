"""Tests for vocab.py, cross-checked against sentencepiece directly."""
from __future__ import annotations

import pytest
import sentencepiece as spm

from prompt_tuning_jax.text import vocab as vocab_lib

LABELS = ["entailment", "not_entailment", "True", "False"]


@pytest.fixture(scope="module")
def vocab():
  return vocab_lib.load_vocabulary()


@pytest.fixture(scope="module")
def sp():
  return spm.SentencePieceProcessor(
      model_file=str(vocab_lib.default_vocabulary_path()))


def test_default_vocabulary_is_t5(vocab, sp):
  assert vocab_lib.default_vocabulary_path().is_file()
  assert sp.get_piece_size() == 32000
  assert vocab.vocab_size == 32000 + 100  # 100 extra ids
  assert vocab.eos_id == 1 and vocab.pad_id == 0


def test_label_token_ids_match_sentencepiece(vocab, sp):
  ids = vocab_lib.label_token_ids(vocab, LABELS)
  assert ids == [sp.encode(label, out_type=int) for label in LABELS]
  assert all(isinstance(i, int) for row in ids for i in row)
  assert all(row and row[-1] != 1 for row in ids)  # no EOS appended


def test_label_pieces_round_trip(vocab, sp):
  ids = vocab_lib.label_token_ids(vocab, LABELS)
  # Independent reading of the pieces: they decode back to the label strings.
  assert [sp.decode(row) for row in ids] == LABELS
  assert [sp.id_to_piece(i) for i in ids[2]] == ["▁True"]


def test_encode_plain_ints(vocab, sp):
  text = "premise: The cat sat. hypothesis: A cat sat."
  assert vocab_lib.encode(vocab, text) == sp.encode(text, out_type=int)


@pytest.mark.parametrize("labels, match", [
    ([], "empty"),
    (["True", ""], r"labels\[1\]"),
    (["  "], r"labels\[0\]"),
    ("True", "single string"),
    ([3], r"labels\[0\] must be a str"),
])
def test_label_token_ids_errors(vocab, labels, match):
  with pytest.raises(ValueError, match=match):
    vocab_lib.label_token_ids(vocab, labels)


def test_missing_vocabulary_names_path(tmp_path):
  missing = tmp_path / "nope.model"
  with pytest.raises(FileNotFoundError, match="nope.model"):
    vocab_lib.load_vocabulary(missing)


def test_encode_batch_truncates_adds_eos_and_pads_like_sentencepiece(vocab, sp):
  texts = ["premise: The cat sat on the mat. hypothesis: A cat sat.", "yes", ""]
  got = vocab_lib.encode_batch(vocab, texts, 6)
  want = [(sp.encode(t, out_type=int)[:5] + [1] + [0] * 6)[:6] for t in texts]
  assert got.dtype == "int32" and got.tolist() == want
  assert got[0, -1] == 1  # a long text keeps its EOS
  untrimmed = vocab_lib.encode_batch(vocab, texts)  # no length: nothing cut, pad to the longest
  assert untrimmed.shape == (3, len(sp.encode(texts[0])) + 1) and untrimmed[0].tolist() == sp.encode(texts[0]) + [1]
  trimmed = vocab_lib.encode_batch(vocab, ["yes", ""], 6, trim=True)
  assert trimmed.tolist() == [sp.encode("yes", out_type=int) + [1], [1] + [0] * len(sp.encode("yes"))]
  with pytest.raises(ValueError, match="length must be >= 1"):
    vocab_lib.encode_batch(vocab, texts, 0)


def test_pad_ids_cuts_and_pads():
  assert vocab_lib.pad_ids([[5, 6, 7], [8]], 2).tolist() == [[5, 6], [8, 0]]
  assert vocab_lib.pad_ids([[5, 6, 7], [8]]).tolist() == [[5, 6, 7], [8, 0, 0]]
