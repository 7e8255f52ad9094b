"""SIGTERM (Cloud TPU maintenance, SLURM or Kubernetes eviction) -> stop after this step.

One process: a Python handler sets a flag that the loop reads after each step. Several
processes: every host must stop at the same step (the save is collective), so JAX's
preemption service, which receives SIGTERM itself once `jax.distributed` is up, names
one safe step for all (`multihost_utils.reached_preemption_sync_point`).
"""
from __future__ import annotations

import logging
import signal
import threading

import jax
from jax.experimental import multihost_utils


class PreemptionWatch:
  """Context manager; `should_stop(step)` after every step (all processes, every step)."""

  def __init__(self):
    self.received = False
    self._previous = None
    self._multi = jax.process_count() > 1

  def _handle(self, signum, frame) -> None:  # pylint: disable=unused-argument
    self.received = True
    logging.warning("SIGTERM received: finishing the current step, then saving a checkpoint")

  def __enter__(self) -> "PreemptionWatch":
    if not self._multi and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def should_stop(self, step: int) -> bool:
    if self._multi:
      self.received = self.received or multihost_utils.reached_preemption_sync_point(step)
    return self.received
