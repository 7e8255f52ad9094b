"""Dynamic batching across prompts: one worker thread owns the device.

Requests become `Job`s of rows (one row per input, or per (input, target) pair). The worker
waits until `max_batch_rows` rows are queued or the oldest has waited `max_wait_ms`, then
takes the oldest job's shape bucket and fills one batch with rows of any prompt in that
bucket, in arrival order (policy 'mixed'). Two reference policies exist for the benchmark:
'per_prompt' (a batch holds one prompt only: how PEFT serves prompt-tuning adapters) and
'single' (one request per forward, no waiting). The event loop only enqueues and awaits; a
job's future is resolved from the worker with `call_soon_threadsafe`.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import threading
import time
from typing import Any, Callable

import numpy as np

POLICIES = ("mixed", "per_prompt", "single")


class QueueFull(Exception):
  """More rows than --max_queue_rows would be waiting: the caller answers 503."""


class Draining(Exception):
  """The server is shutting down and takes no new work."""


@dataclasses.dataclass(eq=False)
class Job:
  """One request: n rows for one prompt (bank row pinned), all in one shape bucket.

  inputs [n, L]; extra: targets [n, T] (score) or candidates [n, C, T] (classify), already
  padded to the bucket; key = (kind, L, T[, C]) the bucket.
  """
  kind: str
  prompt: str
  bank_row: int
  inputs: np.ndarray
  extra: np.ndarray | None
  key: tuple
  loop: asyncio.AbstractEventLoop
  future: asyncio.Future
  on_done: Callable[[], None] = lambda: None   # releases the pinned bank row
  enqueued: float = dataclasses.field(default_factory=time.perf_counter)
  cancelled: bool = False
  cursor: int = 0          # next row to put in a batch
  remaining: int = -1      # rows not yet computed
  outputs: list = dataclasses.field(default_factory=list)
  finished: bool = False

  def __post_init__(self):
    self.remaining = self.rows
    self.outputs = [None] * self.rows

  @property
  def rows(self) -> int:
    return self.inputs.shape[0]

  def finish(self, error: BaseException | None = None) -> None:
    """Resolve the future once (result, or error) and release the prompt row."""
    if self.finished:
      return
    self.finished = True
    self.on_done()

    def resolve():
      if self.future.done():
        return
      if error is not None:
        self.future.set_exception(error)
      else:
        self.future.set_result(self.outputs)
    try:
      self.loop.call_soon_threadsafe(resolve)
    except RuntimeError:  # the loop is closed (shutdown): nobody waits any more
      pass


@dataclasses.dataclass
class Batch:
  key: tuple
  parts: list[tuple[Job, int, int]]   # (job, first row, last row + 1)

  @property
  def rows(self) -> int:
    return sum(stop - start for _, start, stop in self.parts)


class Scheduler:
  """Collects rows of any prompt into batches and runs them in one worker thread.

  run_batch(key, inputs [B, L], prompt_rows [B], extra) -> per-row outputs (a list or an
  array indexed by row) is the engine; metrics (optional) observes batches and the queue.
  """

  def __init__(self, run_batch: Callable[..., Any], *, max_batch_rows: int, max_wait_ms: float,
               max_queue_rows: int, policy: str = "mixed", metrics: Any = None):
    if policy not in POLICIES:
      raise ValueError(f"batching policy {policy!r}; expected one of {POLICIES}")
    self.run_batch = run_batch
    self.max_batch_rows = max_batch_rows
    self.max_wait = max_wait_ms / 1000.0 if policy != "single" else 0.0
    self.max_queue_rows = max_queue_rows
    self.policy = policy
    self.metrics = metrics
    self._pending: collections.deque[Job] = collections.deque()
    self._queued_rows = 0     # rows not yet in a batch
    self._outstanding = 0     # rows queued or running: the bound of --max_queue_rows
    self._cond = threading.Condition()
    self._stopping = False
    self._thread = threading.Thread(target=self._work, name="ptj-serve-worker", daemon=True)
    self.batches = 0

  def start(self) -> None:
    self._thread.start()

  @property
  def outstanding_rows(self) -> int:
    return self._outstanding

  def submit(self, job: Job) -> None:
    """Queue a job; QueueFull past --max_queue_rows, Draining after `stop`."""
    with self._cond:
      if self._stopping:
        raise Draining("the server is shutting down")
      if self._outstanding + job.rows > self.max_queue_rows:
        raise QueueFull(f"{self._outstanding} rows queued; this request's {job.rows} would pass "
                        f"--max_queue_rows={self.max_queue_rows}")
      self._pending.append(job)
      self._queued_rows += job.rows
      self._outstanding += job.rows
      self._gauge()
      self._cond.notify()

  def cancel(self, job: Job) -> None:
    """Drop a job's rows not yet in a batch (its request timed out)."""
    with self._cond:
      job.cancelled = True

  def stop(self, timeout: float | None = None) -> None:
    """Refuse new jobs, finish every queued one, stop the worker."""
    with self._cond:
      self._stopping = True
      self._cond.notify_all()
    if self._thread.is_alive():
      self._thread.join(timeout)

  # ----- the worker
  def _work(self) -> None:
    while True:
      with self._cond:
        while not self._pending and not self._stopping:
          self._cond.wait()
        if not self._pending and self._stopping:
          return
        deadline = self._pending[0].enqueued + self.max_wait
        while (self._queued_rows < self.max_batch_rows and not self._stopping
               and (left := deadline - time.perf_counter()) > 0):
          self._cond.wait(left)
        batch = self._take()
      if batch is not None:
        self._run(batch)

  def _take(self) -> Batch | None:
    """The next batch (lock held): the oldest live job's bucket, filled in arrival order."""
    while self._pending and self._pending[0].cancelled:
      self._drop(self._pending.popleft())
    if not self._pending:
      return None
    head = self._pending[0]
    parts, room = [], self.max_batch_rows
    for job in list(self._pending):
      if room == 0 or (self.policy == "single" and job is not head):
        break
      if job.cancelled or job.key != head.key or (self.policy == "per_prompt" and job.bank_row != head.bank_row):
        continue
      take = min(room, job.rows - job.cursor)
      parts.append((job, job.cursor, job.cursor + take))
      job.cursor += take
      room -= take
      self._queued_rows -= take
      if job.cursor == job.rows:
        self._pending.remove(job)
    self._gauge()
    return Batch(head.key, parts)

  def _drop(self, job: Job) -> None:
    """A cancelled job leaves the queue; its rows already running finish it later."""
    left = job.rows - job.cursor
    self._queued_rows -= left
    self._outstanding -= left
    job.remaining -= left
    job.cursor = job.rows
    if job.remaining == 0:
      job.finish(TimeoutError("request timed out"))

  def _run(self, batch: Batch) -> None:
    inputs = np.concatenate([job.inputs[a:b] for job, a, b in batch.parts])
    rows = np.concatenate([np.full(b - a, job.bank_row, np.int32) for job, a, b in batch.parts])
    extras = [job.extra[a:b] for job, a, b in batch.parts if job.extra is not None]
    extra = np.concatenate(extras) if extras else None
    start = time.perf_counter()
    error = None
    try:
      outputs = self.run_batch(batch.key, inputs, rows, extra)
    except Exception as e:  # noqa: BLE001  (every job of the batch gets it)
      error = e
    seconds = time.perf_counter() - start
    self.batches += 1
    if self.metrics is not None:
      self.metrics.observe_batch(batch.key[0], batch.rows, seconds, [(j.prompt, b - a) for j, a, b in batch.parts])
    offset = 0
    with self._cond:
      for job, a, b in batch.parts:
        if error is None:
          job.outputs[a:b] = list(outputs[offset:offset + b - a])
        offset += b - a
        job.remaining -= b - a
        self._outstanding -= b - a
        if error is not None:
          job.finish(error)
        elif job.remaining == 0:
          job.finish(TimeoutError("request timed out") if job.cancelled else None)
      self._gauge()

  def _gauge(self) -> None:
    if self.metrics is not None:
      self.metrics.queue_rows.set(self._outstanding)
