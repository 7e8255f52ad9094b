"""Target log-likelihoods for (inputs, targets) text pairs: the basis of rank
classification, and a way to check this model against any other implementation."""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import seqio

from prompt_tuning_jax import data
from prompt_tuning_jax.evaluators.config import ModelConfig
from prompt_tuning_jax.model import losses, t5


@dataclasses.dataclass(frozen=True)
class ScoreConfig:
  """The score command: which model (+ prompt) scores, with which vocabulary, how many at once."""
  model: ModelConfig = ModelConfig()
  vocabulary: str | None = None  # SentencePiece model; None: the bundled T5 vocabulary
  batch_size: int = 16

  def __post_init__(self):
    if self.batch_size < 1:
      raise ValueError(f"ScoreConfig.batch_size must be >= 1, got {self.batch_size}")
    if len(self.model.prompts) > 1:
      raise ValueError(f"score takes at most one --prompt, got {list(self.model.prompts)}")


_LENGTH_BUCKET = 16  # pad lengths up to a multiple of this to limit recompilations


def _bucket(n: int) -> int:
  return max(_LENGTH_BUCKET, -(-n // _LENGTH_BUCKET) * _LENGTH_BUCKET)


class Scorer:
  """Scores text pairs in batches with one jitted function per (input, target) length bucket."""

  def __init__(self, model: t5.Transformer, params: Any, vocab: seqio.Vocabulary, *, batch_size: int = 16):
    self.vocab = vocab
    self.params = params
    self.batch_size = batch_size
    self._score = jax.jit(lambda p, b: losses.score_fn(model, p, b))

  def score(self, pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """-> per pair: summed log-likelihood (EOS included), per-token log-probs and ids."""
    out = []
    for start in range(0, len(pairs), self.batch_size):
      chunk = pairs[start:start + self.batch_size]
      ids_in = [list(self.vocab.encode(i)) + [self.vocab.eos_id] for i, _ in chunk]
      ids_tg = [list(self.vocab.encode(t)) + [self.vocab.eos_id] for _, t in chunk]
      lengths = {"inputs": _bucket(max(map(len, ids_in))), "targets": _bucket(max(map(len, ids_tg)))}
      padded = chunk + [("", "")] * (self.batch_size - len(chunk))
      batch = data.tokenize_pairs(self.vocab, padded, lengths)
      total, per_token = jax.device_get(self._score(self.params, batch))
      for i, ids in enumerate(ids_tg):
        out.append({"score": float(total[i]), "token_log_probs": [float(x) for x in per_token[i, :len(ids)]],
                    "target_ids": ids})
    return out

