"""Run a model over token arrays: greedy or beam decoding and candidate scoring, in
fixed-size padded batches, and the decoded outputs as text.

`Predictor` compiles once per model (module-level jits, keyed by the Flax module's
config); `run_batched` feeds it zero-padded chunks so shapes never change.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Sequence

import jax
import numpy as np

from prompt_tuning_jax.model import decoding, t5

if TYPE_CHECKING:
  import seqio

MODES = ("greedy", "beam", "rank")


def check_mode(mode: str) -> str:
  if mode not in MODES:
    raise ValueError(f"evaluation mode={mode!r}; expected one of {MODES}")
  return mode


def strip_after_eos(row: Sequence[int]) -> list[int]:
  """Token ids before the first EOS or pad."""
  ids = []
  for t in np.asarray(row).tolist():
    if t in (decoding.EOS_ID, 0):
      break
    ids.append(t)
  return ids


# Module-level so that equal models (Flax modules compare by config) share compilations.
_greedy = jax.jit(decoding.greedy_decode, static_argnums=(0, 3))
_beam = jax.jit(decoding.beam_search, static_argnums=(0, 3), static_argnames=("num_beams", "alpha"))
_score = jax.jit(decoding.score_candidates, static_argnums=0)


class Predictor:
  """Compiled greedy / beam / candidate scoring for one model (arrays in, numpy out)."""

  def __init__(self, model: t5.Transformer, *, max_decode_length: int, num_beams: int = 4,
               alpha: float = 0.6):
    self.model = model
    self.max_decode_length = max_decode_length
    self.num_beams = num_beams
    self.alpha = float(alpha)

  def generate(self, params: Any, tokens: np.ndarray, prompt_ids: np.ndarray | None = None, *,
               mode: str = "greedy") -> tuple[np.ndarray, np.ndarray]:
    """[B, L] -> (tokens [B, K, T], scores [B, K]); K = 1 for greedy, beams best first."""
    if mode == "beam":
      out, scores = _beam(self.model, params, tokens, self.max_decode_length, num_beams=self.num_beams,
                          alpha=self.alpha, prompt_ids=prompt_ids)
      return np.asarray(out), np.asarray(scores)
    out, scores = _greedy(self.model, params, tokens, self.max_decode_length, prompt_ids=prompt_ids)
    return np.asarray(out)[:, None], np.asarray(scores)[:, None]

  def score(self, params: Any, tokens: np.ndarray, candidates: np.ndarray,
            prompt_ids: np.ndarray | None = None) -> np.ndarray:
    """[B, L], candidates [C, T] or [B, C, T] -> log-likelihoods [B, C]."""
    return np.asarray(_score(self.model, params, tokens, candidates, prompt_ids=prompt_ids))


def run_batched(fn: Callable[..., Any], arrays: Sequence[np.ndarray | None], batch_size: int) -> Any:
  """Apply fn to fixed-size, zero-padded row chunks of `arrays` (None passes through);
  concatenates each output's first `n` rows (pytree of numpy arrays)."""
  n = next(a for a in arrays if a is not None).shape[0]
  outs = []
  for start in range(0, n, batch_size):
    chunk = []
    for a in arrays:
      if a is None:
        chunk.append(None)
        continue
      part = a[start:start + batch_size]
      pad = np.zeros((batch_size - len(part),) + part.shape[1:], part.dtype)
      chunk.append(np.concatenate([part, pad]))
    outs.append(jax.tree.map(lambda x, m=min(batch_size, n - start): np.asarray(x)[:m], fn(*chunk)))
  return jax.tree.map(lambda *xs: np.concatenate(xs), *outs)


def bucket_length(n: int, minimum: int = 16) -> int:
  """The next power of two >= n (at least `minimum`): few distinct shapes, few compilations."""
  return max(minimum, 1 << max(0, int(n) - 1).bit_length())


def token_lengths(tokens: np.ndarray) -> np.ndarray:
  """[N, L] zero-padded ids -> [N] lengths (up to the last non-zero id)."""
  nonzero = tokens > 0
  return np.where(nonzero.any(1), tokens.shape[1] - np.argmax(nonzero[:, ::-1], axis=1), 0)


def run_by_length(fn: Callable[..., Any], arrays: Sequence[np.ndarray | None], batch_size: int) -> Any:
  """`run_batched` over rows sorted by the length of `arrays[0]` (the [N, L] input ids), each
  batch's inputs cut to its bucketed longest row: untruncated inputs cost memory per batch,
  not per split. Outputs come back in the original row order."""
  tokens = arrays[0]
  lengths = token_lengths(tokens)
  order = np.argsort(-lengths, kind="stable")
  outs = []
  for start in range(0, len(order), batch_size):
    rows = order[start:start + batch_size]
    width = min(tokens.shape[1], bucket_length(lengths[rows].max()))
    chunk = [tokens[rows, :width]] + [None if a is None else a[rows] for a in arrays[1:]]
    outs.append(run_batched(fn, chunk, batch_size))
  inverse = np.argsort(order)
  return jax.tree.map(lambda *xs: np.concatenate(xs)[inverse], *outs)


@dataclasses.dataclass
class Outputs:
  """Model outputs for N examples: best text and score, plus mode-specific detail."""
  texts: list[str]
  scores: np.ndarray                       # [N]
  beams: list[list[tuple[str, float]]] | None = None
  candidate_scores: np.ndarray | None = None  # [N, C]


def outputs_from_tokens(vocab: seqio.Vocabulary, tokens: np.ndarray, scores: np.ndarray) -> Outputs:
  """tokens [N, K, T], scores [N, K] -> Outputs (beams kept when K > 1)."""
  texts = [[vocab.decode(strip_after_eos(row)) for row in rows] for rows in tokens]
  beams = None
  if tokens.shape[1] > 1:
    beams = [[(t, float(s)) for t, s in zip(ts, ss)] for ts, ss in zip(texts, scores)]
  return Outputs([ts[0] for ts in texts], np.asarray(scores[:, 0], np.float64), beams)


def outputs_from_scores(labels: Sequence[str], candidate_scores: np.ndarray) -> Outputs:
  """candidate scores [N, C] -> the argmax label per example."""
  best = np.argmax(candidate_scores, axis=1)
  return Outputs([labels[i] for i in best], candidate_scores[np.arange(len(best)), best].astype(np.float64),
                 candidate_scores=candidate_scores)
