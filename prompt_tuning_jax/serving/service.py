"""The serving core without HTTP: requests in (already validated), results out.

Turns a request into one `Job` (tokenize, check limits, pin the prompt's bank row, pad
to its bucket), queues it with the scheduler and waits for it with a timeout. Errors are
`ServeError`s carrying the HTTP status that says what went wrong.
"""
from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, Sequence

import numpy as np

from prompt_tuning_jax.evaluators import predictor
from prompt_tuning_jax.serving import engine as engine_lib
from prompt_tuning_jax.serving import registry as registry_lib
from prompt_tuning_jax.serving import scheduler as scheduler_lib
from prompt_tuning_jax.text import vocab as vocab_lib


class ServeError(Exception):
  """An answer other than 200: `status` and one line saying why (and what to do)."""

  def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
    super().__init__(message)
    self.status = status
    self.message = message
    self.headers = headers or {}


@dataclasses.dataclass(frozen=True)
class Limits:
  """What one server accepts and how it batches (the serve command's flags)."""
  max_batch_rows: int = 32
  max_wait_ms: float = 5.0
  max_queue_rows: int = 1024
  request_timeout_s: float = 30.0
  default_decode_length: int = 8
  policy: str = "mixed"


class Service:
  """Registry + engine + scheduler + vocabulary; `async score/classify/generate`."""

  def __init__(self, registry: registry_lib.PromptRegistry, engine: engine_lib.Engine, vocab: Any,
               limits: Limits = Limits(), metrics: Any = None):
    self.registry = registry
    self.engine = engine
    self.vocab = vocab
    self.limits = limits
    self.metrics = metrics
    self.buckets = engine.buckets
    top = self.buckets.rows[-1]
    if limits.max_batch_rows > top:
      raise ValueError(f"--max_batch_rows={limits.max_batch_rows} exceeds the largest row bucket {top} "
                       "(add it to --row_buckets)")
    self.scheduler = scheduler_lib.Scheduler(self._run_batch, max_batch_rows=limits.max_batch_rows,
                                             max_wait_ms=limits.max_wait_ms, max_queue_rows=limits.max_queue_rows,
                                             policy=limits.policy, metrics=metrics)
    self.draining = False
    registry.on_bank_change = engine.set_bank

  # ----- lifecycle
  def start(self) -> None:
    self.scheduler.start()

  def stop(self) -> None:
    """Finish every queued request, then stop the worker (SIGTERM's drain)."""
    self.draining = True
    self.scheduler.stop()

  # ----- requests
  async def score(self, prompt: str, inputs: Sequence[str], targets: Sequence[str]) -> list[float]:
    if len(inputs) != len(targets):
      raise ServeError(400, f"field 'targets': {len(targets)} targets for {len(inputs)} inputs; give one per input")
    ids = self._encode(inputs, "inputs", self.buckets.inputs)
    tgt = self._encode(targets, "targets", self.buckets.targets)
    key = ("score", ids.shape[1], tgt.shape[1])
    out = await self._submit("score", prompt, ids, tgt, key)
    return [float(x) for x in out]

  async def classify(self, prompt: str, inputs: Sequence[str], candidates: Sequence[str],
                     ) -> tuple[list[str], list[list[float]]]:
    top = self.buckets.candidates[-1]
    if len(candidates) > top:
      raise ServeError(413, f"field 'candidates': {len(candidates)} candidates; the limit is {top} "
                            "(--candidate_buckets)")
    ids = self._encode(inputs, "inputs", self.buckets.inputs)
    cands = self._encode(candidates, "candidates", self.buckets.targets)
    count = engine_lib.Buckets.pick(self.buckets.candidates, len(candidates))
    padded = np.zeros((len(inputs), count, cands.shape[1]), np.int32)
    padded[:, :len(candidates)] = cands
    out = await self._submit("classify", prompt, ids, padded, ("classify", ids.shape[1], cands.shape[1], count))
    scores = [[float(x) for x in row[:len(candidates)]] for row in out]
    return [candidates[int(np.argmax(s))] for s in scores], scores

  async def generate(self, prompt: str, inputs: Sequence[str], max_decode_length: int | None) -> list[str]:
    length = self.limits.default_decode_length if max_decode_length is None else max_decode_length
    top = self.buckets.targets[-1]
    if length > top:
      raise ServeError(413, f"field 'max_decode_length': {length}; the limit is {top} (--target_buckets)")
    ids = self._encode(inputs, "inputs", self.buckets.inputs)
    bucket = engine_lib.Buckets.pick(self.buckets.targets, length)
    out = await self._submit("generate", prompt, ids, None, ("generate", ids.shape[1], bucket))
    return [self.vocab.decode(predictor.strip_after_eos(row[:length])) for row in out]

  # ----- internals
  def _encode(self, texts: Sequence[str], field: str, buckets: Sequence[int]) -> np.ndarray:
    """Texts -> EOS-terminated ids [n, bucket] (no truncation: longer than the largest
    bucket is a 413 naming the limit)."""
    ids = vocab_lib.encode_batch(self.vocab, list(texts))
    lengths = predictor.token_lengths(ids)
    longest = int(lengths.max())
    width = engine_lib.Buckets.pick(buckets, longest)
    if width is None:
      which = int(np.argmax(lengths))
      flag = "--input_buckets" if field == "inputs" else "--target_buckets"
      raise ServeError(413, f"field '{field}'[{which}] has {longest} tokens (EOS included); the limit is "
                            f"{buckets[-1]} tokens ({flag})")
    return vocab_lib.pad_ids(ids, width)

  async def _submit(self, kind: str, prompt: str, inputs: np.ndarray, extra: np.ndarray | None,
                    key: tuple) -> list:
    if self.draining:
      raise ServeError(503, "the server is shutting down", {"Retry-After": "1"})
    if inputs.shape[0] > self.limits.max_queue_rows:
      raise ServeError(413, f"field 'inputs': {inputs.shape[0]} rows; the limit is "
                            f"{self.limits.max_queue_rows} per request (--max_queue_rows)")
    try:
      row = self.registry.pin(prompt)
    except registry_lib.RegistryError as e:
      raise ServeError(e.status, f"field 'prompt': {e}") from None
    loop = asyncio.get_running_loop()
    job = scheduler_lib.Job(kind, prompt, row, inputs, extra, key, loop, loop.create_future(),
                            on_done=lambda: self.registry.unpin(row))
    try:
      self.scheduler.submit(job)
    except scheduler_lib.QueueFull as e:
      self.registry.unpin(row)
      raise ServeError(503, f"server busy: {e}; retry later", {"Retry-After": "1"}) from None
    except scheduler_lib.Draining as e:
      self.registry.unpin(row)
      raise ServeError(503, str(e), {"Retry-After": "1"}) from None
    try:
      return await asyncio.wait_for(asyncio.shield(job.future), self.limits.request_timeout_s)
    except (asyncio.TimeoutError, TimeoutError):
      self.scheduler.cancel(job)
      raise ServeError(504, f"request not served within {self.limits.request_timeout_s:g} s "
                            "(--request_timeout_s); the server is overloaded") from None

  def _run_batch(self, key: tuple, inputs: np.ndarray, prompt_rows: np.ndarray, extra: np.ndarray | None):
    """The worker's forward: pad rows to their bucket, run, return the real rows."""
    n = inputs.shape[0]
    rows = engine_lib.Buckets.pick(self.buckets.rows, n)
    inputs = predictor.pad_rows(inputs, rows)
    prompt_rows = predictor.pad_rows(prompt_rows, rows)
    if extra is not None:
      extra = predictor.pad_rows(extra, rows)
    if key[0] == "generate":
      tokens, _ = self.engine.run("generate", inputs, prompt_rows, decode_length=key[2])
      return tokens[:n]
    return self.engine.run(key[0], inputs, prompt_rows, extra)[:n]

  # ----- admin
  def register(self, path: str, name: str | None) -> dict:
    """POST /v1/prompts (blocking: call from a thread). A full bank is grown and its new
    shapes compiled first, in this thread, while serving goes on at the old shapes."""
    try:
      location = registry_lib.resolve_entry(self.registry.inside(path))
      name = registry_lib.check_name(name if name is not None else registry_lib.entry_name(path))
      prompt = self.registry.load(location)
    except registry_lib.RegistryError as e:
      raise ServeError(e.status, f"field 'path': {e}") from None
    except FileNotFoundError as e:
      raise ServeError(404, f"field 'path': {e}") from None
    except ValueError as e:
      raise ServeError(400, f"field 'path': {e}") from None
    if self.registry.full():
      self.engine.warm(capacity=self.registry.capacity * 2)
    entry = self.registry.add(name, location, prompt)
    if self.metrics is not None:
      self.metrics.prompts.set(len(self.registry.names()))
    return entry

  def unregister(self, name: str) -> None:
    try:
      self.registry.remove(name)
    except registry_lib.RegistryError as e:
      raise ServeError(e.status, str(e)) from None
    if self.metrics is not None:
      self.metrics.prompts.set(len(self.registry.names()))
