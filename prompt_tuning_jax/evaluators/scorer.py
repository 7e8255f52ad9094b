"""Target log-likelihoods for (inputs, targets) text pairs: the basis of rank
classification, and a way to check this model against any other implementation."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from prompt_tuning_jax.parallel import sharding
from prompt_tuning_jax.text import vocab as vocab_lib
from prompt_tuning_jax.evaluators import sharded
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
  on rank classification's path: each pair's target is its example's one candidate.

  With a `placement` the batch is split over the mesh's 'data' axis (the batch size
  rounded up to a multiple of its size) and the params are used in their shards. Each
  batch is dispatched before the previous one's scores are read (host/device overlap).
  """

  def __init__(self, model: t5.Transformer, params: Any, vocab: seqio.Vocabulary, *, batch_size: int = 16,
               placement: sharded.Placement | None = None):
    self.vocab = vocab
    self.params = params
    self.placement = placement
    self.batch_size = placement.padded_rows(batch_size) if placement is not None else batch_size

    def score(p, inputs, targets):  # [B, L], [B, T] -> (summed [B], per-token [B, T])
      per_token = decoding.candidate_log_probs(model, p, inputs, targets[:, None, :])[:, 0]
      return per_token.sum(-1), per_token
    kwargs = {} if placement is None else {"out_shardings": sharding.replicated(placement.mesh)}
    self._score = jax.jit(score, **kwargs)

  def score(self, pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """-> per pair: summed log-likelihood (EOS included), per-token log-probs and ids."""
    out: list[dict[str, Any]] = []
    pending = None
    for start in range(0, len(pairs), self.batch_size):
      result = self._dispatch(pairs[start:start + self.batch_size])
      if pending is not None:
        out += _records(*pending)
      pending = result
    if pending is not None:
      out += _records(*pending)
    return out

  def _dispatch(self, chunk: list[tuple[str, str]]) -> tuple[Any, np.ndarray, int]:
    """Encode and launch one batch; -> (device result, target ids [B, T], real rows)."""
    padded = chunk + [("", "")] * (self.batch_size - len(chunk))
    inputs = vocab_lib.encode_batch(self.vocab, [i for i, _ in padded])
    targets = vocab_lib.encode_batch(self.vocab, [t for _, t in padded])
    inputs = vocab_lib.pad_ids(inputs, _bucket(inputs.shape[1]))
    targets = vocab_lib.pad_ids(targets, _bucket(targets.shape[1]))
    if self.placement is None:
      return self._score(self.params, inputs, targets), targets, len(chunk)
    with self.placement.active():
      result = self._score(self.params, self.placement.place_rows(inputs), self.placement.place_rows(targets))
    return result, targets, len(chunk)


def _records(result: Any, targets: np.ndarray, rows: int) -> list[dict[str, Any]]:
  total, per_token = jax.device_get(result)
  out = []
  for i in range(rows):
    n = int(np.count_nonzero(targets[i]))
    out.append({"score": float(total[i]), "token_log_probs": [float(x) for x in per_token[i, :n]],
                "target_ids": targets[i, :n].tolist()})
  return out
