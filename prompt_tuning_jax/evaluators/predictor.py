"""Run a model over token arrays: greedy or beam decoding and candidate scoring, in
fixed-size padded batches, and the decoded outputs as text.

`Predictor` compiles once per model (jits keyed by the Flax module's config and the
placement); `run_batched` feeds it zero-padded chunks so shapes never change, one
chunk ahead of the results it reads.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import queue
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import jax
import numpy as np

from prompt_tuning_jax.parallel import sharding
from prompt_tuning_jax.evaluators import sharded
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


_FUNCTIONS = {"greedy": (decoding.greedy_decode, dict(static_argnums=(0, 3))),
              "beam": (decoding.beam_search, dict(static_argnums=(0, 3), static_argnames=("num_beams", "alpha"))),
              "score": (decoding.score_candidates, dict(static_argnums=0))}


@functools.lru_cache(maxsize=None)
def _compiled(kind: str, placement: sharded.Placement | None) -> Callable[..., Any]:
  """One jit per (function, placement): equal models (Flax modules compare by config)
  share compilations; on a mesh the outputs come back replicated, readable on every host."""
  fn, kwargs = _FUNCTIONS[kind]
  if placement is not None:
    kwargs = dict(kwargs, out_shardings=sharding.replicated(placement.mesh))
  return jax.jit(fn, **kwargs)


class Predictor:
  """Compiled greedy / beam / candidate scoring for one model (arrays in, numpy out).

  With a `placement` (the training mesh and rules) each batch is split over the 'data'
  axis (padded to a multiple of its size) and the params are used where they lie, so
  data replicas decode different rows. `*_async` return device arrays without waiting,
  so the caller can prepare the next batch while this one runs.
  """

  def __init__(self, model: t5.Transformer, *, max_decode_length: int, num_beams: int = 4,
               alpha: float = 0.6, placement: sharded.Placement | None = None):
    self.model = model
    self.max_decode_length = max_decode_length
    self.num_beams = num_beams
    self.alpha = float(alpha)
    self.placement = placement

  def generate(self, params: Any, tokens: np.ndarray, prompt_ids: np.ndarray | None = None, *,
               mode: str = "greedy") -> tuple[np.ndarray, np.ndarray]:
    """[B, L] -> (tokens [B, K, T], scores [B, K]); K = 1 for greedy, beams best first."""
    return jax.device_get(self.generate_async(params, tokens, prompt_ids, mode=mode))

  def score(self, params: Any, tokens: np.ndarray, candidates: np.ndarray,
            prompt_ids: np.ndarray | None = None) -> np.ndarray:
    """[B, L], candidates [C, T] or [B, C, T] -> log-likelihoods [B, C]."""
    return jax.device_get(self.score_async(params, tokens, candidates, prompt_ids))

  def generate_async(self, params: Any, tokens: np.ndarray, prompt_ids: np.ndarray | None = None, *,
                     mode: str = "greedy") -> tuple[jax.Array, jax.Array]:
    """`generate` as device arrays, dispatched but not waited for."""
    n = tokens.shape[0]
    tokens, prompt_ids = self._rows(tokens), self._rows(prompt_ids)
    with self._context():
      if mode == "beam":
        out, scores = _compiled("beam", self.placement)(
            self.model, params, tokens, self.max_decode_length, num_beams=self.num_beams, alpha=self.alpha,
            prompt_ids=prompt_ids)
      else:
        out, scores = _compiled("greedy", self.placement)(self.model, params, tokens, self.max_decode_length,
                                                          prompt_ids=prompt_ids)
        out, scores = out[:, None], scores[:, None]
    return _first_rows((out, scores), n)

  def score_async(self, params: Any, tokens: np.ndarray, candidates: np.ndarray,
                  prompt_ids: np.ndarray | None = None) -> jax.Array:
    """`score` as a device array, dispatched but not waited for."""
    n = tokens.shape[0]
    tokens, prompt_ids = self._rows(tokens), self._rows(prompt_ids)
    if candidates.ndim == 3:
      candidates = self._rows(candidates)
    elif self.placement is not None:
      candidates = self.placement.place_replicated(np.asarray(candidates))
    with self._context():
      out = _compiled("score", self.placement)(self.model, params, tokens, candidates, prompt_ids=prompt_ids)
    return _first_rows(out, n)

  def _rows(self, x: np.ndarray | None) -> Any:
    """Per-example input [B, ...] -> as given, or split over the mesh's 'data' axis."""
    if x is None or self.placement is None:
      return x
    x = np.asarray(x)
    return self.placement.place_rows(pad_rows(x, self.placement.padded_rows(x.shape[0])))

  def _context(self) -> Any:
    return self.placement.active() if self.placement is not None else contextlib.nullcontext()


def _first_rows(tree: Any, n: int) -> Any:
  return jax.tree.map(lambda x: x if x.shape[0] == n else x[:n], tree)


def pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
  """Zero-pad [n, ...] to [rows, ...] (rows >= n)."""
  if x.shape[0] == rows:
    return x
  return np.concatenate([x, np.zeros((rows - x.shape[0],) + x.shape[1:], x.dtype)])


def run_batched(fn: Callable[..., Any], arrays: Sequence[np.ndarray | None], batch_size: int) -> Any:
  """Apply fn to fixed-size, zero-padded row chunks of `arrays` (None passes through);
  concatenates each output's first `n` rows (pytree of numpy arrays)."""
  n = next(a for a in arrays if a is not None).shape[0]
  chunks = (([None if a is None else pad_rows(a[start:start + batch_size], batch_size) for a in arrays],
             min(batch_size, n - start)) for start in range(0, n, batch_size))
  return run_stream(fn, chunks)


def run_stream(fn: Callable[..., Any], chunks: Iterable[tuple[Sequence[Any], int]]) -> Any:
  """fn(*arrays) over a stream of (arrays, valid rows) chunks; outputs' valid rows concatenated.

  Chunk i + 1 is taken from `chunks` and dispatched before chunk i's results are read,
  so with an `fn` that returns device arrays (`Predictor.*_async`) the host prepares and
  enqueues the next batch while the device runs this one. Pair with `prefetch` to move
  the host work (tokenising, candidate expansion) to a thread as well.
  """
  outs, pending = [], None
  for arrays, rows in chunks:
    result = (fn(*arrays), rows)
    if pending is not None:
      outs.append(_fetch(*pending))
    pending = result
  if pending is None:
    raise ValueError("run_stream: no chunks")
  outs.append(_fetch(*pending))
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


def prefetch(items: Iterable[Any], depth: int = 2) -> Iterator[Any]:
  """Iterate `items` in a background thread, up to `depth` ahead (its errors re-raised here)."""
  buffer: queue.Queue = queue.Queue(maxsize=depth)
  done = object()

  def produce():
    try:
      for item in items:
        buffer.put(item)
      buffer.put(done)
    except BaseException as e:  # noqa: BLE001  (handed to the consumer)
      buffer.put(_Failure(e))

  threading.Thread(target=produce, daemon=True).start()
  while (item := buffer.get()) is not done:
    if isinstance(item, _Failure):
      raise item.error
    yield item


@dataclasses.dataclass
class _Failure:
  error: BaseException


def _fetch(tree: Any, rows: int) -> Any:
  return jax.tree.map(lambda x: np.asarray(x)[:rows], jax.device_get(tree))


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
