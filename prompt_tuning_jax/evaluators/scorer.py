"""Target log-likelihoods for (inputs, targets) text pairs: the basis of rank
classification, and a way to check this model against any other implementation."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from prompt_tuning_jax import vocab as vocab_lib
from prompt_tuning_jax.evaluators.config import ModelConfig
from prompt_tuning_jax.model import decoding, t5

if TYPE_CHECKING:
  import seqio


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
  """Scores text pairs in batches with one jitted function per (input, target) length bucket,
  on rank classification's path: each pair's target is its example's one candidate."""

  def __init__(self, model: t5.Transformer, params: Any, vocab: seqio.Vocabulary, *, batch_size: int = 16):
    self.vocab = vocab
    self.params = params
    self.batch_size = batch_size

    def score(p, inputs, targets):  # [B, L], [B, T] -> (summed [B], per-token [B, T])
      per_token = decoding.candidate_log_probs(model, p, inputs, targets[:, None, :])[:, 0]
      return per_token.sum(-1), per_token
    self._score = jax.jit(score)

  def score(self, pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """-> per pair: summed log-likelihood (EOS included), per-token log-probs and ids."""
    out = []
    for start in range(0, len(pairs), self.batch_size):
      chunk = pairs[start:start + self.batch_size]
      padded = chunk + [("", "")] * (self.batch_size - len(chunk))
      inputs = vocab_lib.encode_batch(self.vocab, [i for i, _ in padded])
      targets = vocab_lib.encode_batch(self.vocab, [t for _, t in padded])
      inputs = vocab_lib.pad_ids(inputs, _bucket(inputs.shape[1]))
      targets = vocab_lib.pad_ids(targets, _bucket(targets.shape[1]))
      total, per_token = jax.device_get(self._score(self.params, inputs, targets))
      for i in range(len(chunk)):
        n = int(np.count_nonzero(targets[i]))
        out.append({"score": float(total[i]), "token_log_probs": [float(x) for x in per_token[i, :n]],
                    "target_ids": targets[i, :n].tolist()})
    return out
