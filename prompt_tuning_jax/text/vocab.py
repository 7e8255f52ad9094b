"""SentencePiece vocabulary loading and label-string -> piece-id lookup.

The class-label prompt initializer needs the piece ids of each label string
(e.g. 'entailment' -> [3, 35, 5756, 297]); this module keeps SentencePiece and
seqio out of `prompts.py`, which works on ids only.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:  # imported in load_vocabulary only: seqio imports TensorFlow (seconds)
  import seqio

DEFAULT_EXTRA_IDS = 100


def default_vocabulary_path() -> Path:
  """The bundled T5 SentencePiece model (`cc_all.32000` pieces, pad 0, eos 1)."""
  return Path(__file__).parent.parent / "assets" / "t5_vocab" / "spiece.model"


def load_vocabulary(path: str | Path | None = None,
                    extra_ids: int = DEFAULT_EXTRA_IDS
                    ) -> seqio.SentencePieceVocabulary:
  """Loads a SentencePiece vocabulary; defaults to the bundled T5 one.

  With 100 extra ids this is the vocabulary of T5 1.1 and the LM-adapted
  checkpoints (32,100 ids; the embedding table is padded to 32,128 rows).
  """
  path = Path(path) if path is not None else default_vocabulary_path()
  if not path.is_file():
    raise FileNotFoundError(f"SentencePiece model not found: {path}")
  from prompt_tuning_jax.text import quiet  # pylint: disable=g-import-not-at-top
  return quiet.import_seqio().SentencePieceVocabulary(str(path), extra_ids=extra_ids)


def encode(vocab: seqio.Vocabulary, text: str) -> list[int]:
  """Piece ids of `text`, without EOS, as a plain list of Python ints."""
  return [int(i) for i in vocab.encode(text)]


def pad_ids(rows: Sequence[Sequence[int]], width: int | None = None) -> np.ndarray:
  """Id lists -> int32 [N, width], 0-padded; longer rows are cut (width None: the longest row)."""
  width = max((len(r) for r in rows), default=0) if width is None else width
  out = np.zeros((len(rows), width), np.int32)
  for i, row in enumerate(rows):
    row = list(row)[:width]
    out[i, :len(row)] = row
  return out


def encode_batch(vocab: seqio.Vocabulary, texts: Sequence[str], length: int | None = None, *,
                 trim: bool = False) -> np.ndarray:
  """Texts -> EOS-terminated, 0-padded ids [N, length]: the one encode/truncate/EOS/pad.

  Each text's pieces are cut to `length - 1` so its EOS always fits (T5X/SeqIO keep the
  head of a long input). `length=None` cuts nothing; it, or `trim`, pads to the longest row.
  """
  if length is not None and length < 1:
    raise ValueError(f"encode_batch length must be >= 1 (room for EOS), got {length}")
  keep = None if length is None else length - 1
  return pad_ids([encode(vocab, text)[:keep] + [vocab.eos_id] for text in texts], None if trim else length)


def label_token_ids(vocab: seqio.Vocabulary,
                    labels: Sequence[str]) -> list[list[int]]:
  """Piece ids of each label string (no EOS), one list per label.

  Note that SentencePiece may start a label with the lone word-boundary piece
  '▁' (id 3), e.g. 'entailment' -> ['▁', 'en', 'tail', 'ment']; the ids are
  returned exactly as the vocabulary encodes the string, as the original
  class-label initialization did.

  Raises:
    ValueError: if `labels` is a bare string or empty, or a label is empty or
      encodes to no pieces.
  """
  if isinstance(labels, (str, bytes)):
    raise ValueError(
        f"labels must be a sequence of strings, got the single string {labels!r}")
  if not labels:
    raise ValueError("labels is empty: give at least one class label string")
  out = []
  for i, label in enumerate(labels):
    if not isinstance(label, str):
      raise ValueError(f"labels[{i}] must be a str, got {type(label).__name__}")
    if not label.strip():
      raise ValueError(f"labels[{i}] is empty or whitespace only: {label!r}")
    ids = encode(vocab, label)
    if not ids:
      raise ValueError(f"labels[{i}]={label!r} encodes to no vocabulary pieces")
    out.append(ids)
  return out
