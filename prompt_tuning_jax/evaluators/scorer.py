"""Target log-likelihoods for (inputs, targets) text pairs: the basis of rank
classification, and a way to check this model against any other implementation."""
from __future__ import annotations

from typing import Any

import jax
import seqio

from prompt_tuning_jax import data, sharding
from prompt_tuning_jax.evaluators import sharded
from prompt_tuning_jax.model import losses, t5

_LENGTH_BUCKET = 16  # pad lengths up to a multiple of this to limit recompilations


def _bucket(n: int) -> int:
  return max(_LENGTH_BUCKET, -(-n // _LENGTH_BUCKET) * _LENGTH_BUCKET)


class Scorer:
  """Scores text pairs in batches with one jitted function per (input, target) length bucket.

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
    kwargs = {} if placement is None else {"out_shardings": sharding.replicated(placement.mesh)}
    self._score = jax.jit(lambda p, b: losses.score_fn(model, p, b), **kwargs)

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

  def _dispatch(self, chunk: list[tuple[str, str]]) -> tuple[Any, list[list[int]]]:
    ids_in = [list(self.vocab.encode(i)) + [self.vocab.eos_id] for i, _ in chunk]
    ids_tg = [list(self.vocab.encode(t)) + [self.vocab.eos_id] for _, t in chunk]
    lengths = {"inputs": _bucket(max(map(len, ids_in))), "targets": _bucket(max(map(len, ids_tg)))}
    padded = chunk + [("", "")] * (self.batch_size - len(chunk))
    batch = data.tokenize_pairs(self.vocab, padded, lengths)
    if self.placement is None:
      return self._score(self.params, batch), ids_tg
    batch = {k: self.placement.place_rows(v) for k, v in batch.items()}
    with self.placement.active():
      return self._score(self.params, batch), ids_tg


def _records(result: Any, ids_tg: list[list[int]]) -> list[dict[str, Any]]:
  total, per_token = jax.device_get(result)
  return [{"score": float(total[i]), "token_log_probs": [float(x) for x in per_token[i, :len(ids)]],
           "target_ids": ids} for i, ids in enumerate(ids_tg)]
