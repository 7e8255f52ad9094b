"""SIGTERM (Cloud TPU maintenance, SLURM or Kubernetes eviction) -> stop after this step.

The COMMAND installs the handler, first thing at process start
(`install_sigterm_handler`); library code never does, so a `loop.train()` called from a
test or a notebook dies on SIGTERM like any program. With the handler:

* the handler only sets a flag (raising from it at an arbitrary point, e.g. inside an
  extension module's import, can crash the interpreter);
* before training starts, the command calls `stop_if_requested()` between its set-up
  phases and `PreemptionWatch` on entry: `StoppedBeforeTraining`, nothing trained, nothing
  to save (a SIGTERM during one long phase, e.g. reading the backbone, takes effect at its end);
* once the loop steps, it reads the flag after each step, saves a checkpoint and stops
  ("preempted at step N").

Several processes: every host must stop at the same step (the save is collective), so
JAX's preemption service, which takes over SIGTERM once `jax.distributed` is up, names
one safe step for all (`multihost_utils.reached_preemption_sync_point`).
"""
from __future__ import annotations

import logging
import signal
import threading
import types


class StoppedBeforeTraining(BaseException):
  """SIGTERM arrived before the first training step (a BaseException, as KeyboardInterrupt:
  no `except Exception` on the way swallows it)."""


def stop_if_requested() -> None:
  """Between set-up phases: raise `StoppedBeforeTraining` if SIGTERM has arrived."""
  if _state["received"] and not _state["stepping"]:
    raise StoppedBeforeTraining("SIGTERM before the first training step")


_state: dict = {"previous": None, "received": False, "stepping": False}


def install_sigterm_handler() -> bool:
  """Catch SIGTERM for this process (main thread only); returns whether it is installed."""
  if threading.current_thread() is not threading.main_thread():
    return False
  previous = signal.signal(signal.SIGTERM, _handle)
  _state.update(previous=previous, received=False, stepping=False)
  return True


def uninstall_sigterm_handler() -> None:
  """Put back the handler that was there before (a command called in-process, e.g. a test)."""
  if _state["previous"] is not None and threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, _state["previous"])
  _state.update(previous=None, received=False, stepping=False)


def sigterm_received() -> bool:
  return _state["received"]


def _handle(signum: int, frame: types.FrameType | None) -> None:  # pylint: disable=unused-argument
  _state["received"] = True
  logging.warning("SIGTERM received: %s", "finishing the current step, then saving a checkpoint"
                  if _state["stepping"] else "stopping before the first training step")


class PreemptionWatch:
  """Context manager around the training steps; `should_stop(step)` after every step
  (all processes, every step). Reads the command's handler; installs none."""

  def __init__(self):
    import jax  # pylint: disable=g-import-not-at-top
    self._multi = jax.process_count() > 1

  @property
  def received(self) -> bool:
    return _state["received"]

  def __enter__(self) -> "PreemptionWatch":
    stop_if_requested()  # a SIGTERM during the set-up: nothing trained yet
    _state["stepping"] = True
    return self

  def __exit__(self, *exc) -> None:
    _state["stepping"] = False

  def should_stop(self, step: int) -> bool:
    if self._multi:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      _state["received"] = _state["received"] or multihost_utils.reached_preemption_sync_point(step)
    return _state["received"]
