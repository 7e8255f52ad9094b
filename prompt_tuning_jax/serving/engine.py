"""The frozen model's three forwards over a prompt bank, at bucketed shapes.

Every batch is padded to a fixed set of shapes (rows to a row bucket, token lengths to a
length bucket), each compiled at start-up (`warm`), so serving never compiles. The prompt
bank [capacity, P, d] is an argument, not a constant: registering a prompt swaps the device
bank for one of the same shape and changes no compiled program. Each row carries its
prompt's bank index, so one forward serves any mix of prompts.

The functions are the ones the `score`, `eval` and `infer` commands run
(`decoding.candidate_log_probs`, `decoding.score_candidates`, `decoding.greedy_decode`).
"""
from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from typing import Any, Sequence

import jax
import numpy as np

from prompt_tuning_jax.evaluators import sharded
from prompt_tuning_jax.model import decoding, t5
from prompt_tuning_jax.parallel import sharding
from prompt_tuning_jax.prompt import wrapper

KINDS = ("score", "classify", "generate")


@dataclasses.dataclass(frozen=True)
class Buckets:
  """The compiled shapes. rows: batch sizes; inputs: input lengths (the last is the longest
  input accepted); targets: target / candidate / decode lengths; candidates: label counts."""
  rows: tuple[int, ...] = (8, 32)
  inputs: tuple[int, ...] = (32, 128)
  targets: tuple[int, ...] = (8, 32)
  candidates: tuple[int, ...] = (4, 16)

  def __post_init__(self):
    for field in dataclasses.fields(self):
      values = getattr(self, field.name)
      if not values or any(v < 1 for v in values) or list(values) != sorted(set(values)):
        raise ValueError(f"buckets.{field.name}={values}: give increasing positive sizes")

  @staticmethod
  def pick(sizes: Sequence[int], n: int) -> int | None:
    """The smallest bucket >= n (None: over the largest)."""
    return next((s for s in sizes if s >= n), None)

  def shapes(self, kind: str) -> list[tuple[int, ...]]:
    """Every (rows, input length[, target length[, candidates]]) compiled for `kind`."""
    if kind == "classify":
      return list(itertools.product(self.rows, self.inputs, self.targets, self.candidates))
    return list(itertools.product(self.rows, self.inputs, self.targets))


class Engine:
  """Runs padded batches: `run(kind, arrays, prompt_rows)` -> numpy outputs for all rows."""

  def __init__(self, model_config: Any, frozen: dict, bank: np.ndarray, placement: sharded.Placement,
               prompt_config: wrapper.PromptConfig | None = None, buckets: Buckets = Buckets()):
    self.t5_config = model_config
    self.placement = placement
    rows = tuple(sorted({placement.padded_rows(r) for r in buckets.rows}))  # whole rows per data replica
    self.buckets = dataclasses.replace(buckets, rows=rows)
    self._models: dict[tuple[int, ...], t5.Transformer] = {}
    self.prompt_config = prompt_config or wrapper.PromptConfig()
    self._frozen = frozen
    self._lock = threading.Lock()
    self._fns: dict[tuple[str, int], Any] = {}
    self.compile_seconds = 0.0
    self.compiled = 0
    self.set_bank(bank)

  # ----- the bank
  def set_bank(self, bank: np.ndarray) -> None:
    """Swap in a host bank [C, P, d]; same shape: no recompilation (rows padded by the
    data-parallel size are not involved: the bank is replicated)."""
    bank = np.asarray(bank, np.float32)
    device_bank = self.placement.place_replicated(bank)
    model = self._model(bank.shape)
    params = wrapper.set_prompt(self._frozen, device_bank)
    with self._lock:
      self._params, self._model_now = params, model

  def _model(self, shape: tuple[int, ...]) -> t5.Transformer:
    """One model object per bank shape (jit caches key on it)."""
    if tuple(shape) not in self._models:
      cfg = dataclasses.replace(self.prompt_config, length=shape[1], num_prompts=shape[0])
      self._models[tuple(shape)] = wrapper.make_model(self.t5_config, cfg)
    return self._models[tuple(shape)]

  def _fn(self, kind: str, model: t5.Transformer, decode_length: int = 0):
    key = (kind, model, decode_length)
    fn = self._fns.get(key)
    if fn is None:
      out = {"out_shardings": sharding.replicated(self.placement.mesh)}
      if kind == "score":
        def fn(p, inputs, targets, ids):  # as scorer.Scorer: summed per-token log p, EOS included
          return decoding.candidate_log_probs(model, p, inputs, targets[:, None, :], prompt_ids=ids)[:, 0].sum(-1)
      elif kind == "classify":
        def fn(p, inputs, candidates, ids):  # as rank classification: [B, C] summed log p
          return decoding.score_candidates(model, p, inputs, candidates, prompt_ids=ids)
      else:
        def fn(p, inputs, ids):  # greedy decoding as infer: tokens [B, T], score [B]
          return decoding.greedy_decode(model, p, inputs, decode_length, prompt_ids=ids)
      fn = self._fns[key] = jax.jit(fn, **out)
    return fn

  # ----- running
  def run(self, kind: str, inputs: np.ndarray, prompt_rows: np.ndarray, extra: np.ndarray | None = None,
          decode_length: int = 0, bank_state: tuple[Any, t5.Transformer] | None = None) -> Any:
    """One padded batch: inputs [B, L] int32, prompt_rows [B], extra = targets [B, T] (score)
    or candidates [B, C, T] (classify); decode_length = T (generate). -> numpy outputs.
    bank_state: (params, model) to run instead of the current bank's (warming a grown bank)."""
    with self._lock:
      params, model = (self._params, self._model_now) if bank_state is None else bank_state
    p = self.placement
    ids = p.place_rows(np.asarray(prompt_rows, np.int32))
    with p.active():
      fn = self._fn(kind, model, decode_length if kind == "generate" else 0)
      if kind == "generate":
        result = fn(params, p.place_rows(inputs), ids)
      else:
        result = fn(params, p.place_rows(inputs), p.place_rows(extra), ids)
    return jax.device_get(result)

  def warm(self, capacity: int | None = None, log: Any = None, kinds: Sequence[str] = KINDS) -> int:
    """Compile every bucketed shape (for a bank of `capacity` rows; default the current
    one) by running it on zeros; -> programs compiled. Thread-safe: serving continues on
    the current bank while a grown one compiles."""
    with self._lock:
      params, model = self._params, self._model_now
    if capacity is not None and capacity != params["encoder"]["prompt"]["prompt"]["prompt"].shape[0]:
      shape = params["encoder"]["prompt"]["prompt"]["prompt"].shape
      bank = np.zeros((capacity,) + tuple(shape[1:]), np.float32)
      params = wrapper.set_prompt(self._frozen, self.placement.place_replicated(bank))
      model = self._model(bank.shape)
    start, count = time.perf_counter(), 0
    for kind in kinds:
      for shape in self.buckets.shapes(kind):
        rows, length, target = shape[:3]
        inputs = np.ones((rows, length), np.int32)
        ids = np.zeros((rows,), np.int32)
        if kind == "score":
          self.run(kind, inputs, ids, np.ones((rows, target), np.int32), bank_state=(params, model))
        elif kind == "classify":
          self.run(kind, inputs, ids, np.ones((rows, shape[3], target), np.int32), bank_state=(params, model))
        else:
          self.run(kind, inputs, ids, decode_length=target, bank_state=(params, model))
        count += 1
      if log is not None:
        log(f"  warmed {kind}: {len(self.buckets.shapes(kind))} shapes")
    self.compile_seconds += time.perf_counter() - start
    self.compiled += count
    return count

  def padded_rows(self, n: int) -> int:
    return self.placement.padded_rows(n)
