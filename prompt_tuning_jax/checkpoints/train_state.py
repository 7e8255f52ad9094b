"""Checkpoints of what a run changes (trainable params, optimizer state, step, rng, data
position), separate from the frozen model, through orbax.

Saves are atomic (orbax writes a temporary directory and renames it), keep the newest N,
and are collective on multi-host meshes. Each one carries a fingerprint of the backbone
(its T5Config and a sample of the embedding table) and of the trainable shapes; restoring
into a run whose fingerprint differs is refused before any array is read.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from prompt_tuning_jax.parallel import distributed
from prompt_tuning_jax.checkpoints import checksums, fs
from prompt_tuning_jax.checkpoints.validation import CheckpointCorruptError
from prompt_tuning_jax.model.config import T5Config

_TMP_MARK = ".orbax-checkpoint-tmp"


class CheckpointFingerprintError(ValueError):
  """A training checkpoint belongs to another backbone or another prompt shape."""


class DamagedCheckpointError(CheckpointCorruptError):
  """A training checkpoint step cannot be read back (names its directory)."""


class NonFiniteStateError(DamagedCheckpointError):
  """A train state holds NaN or Inf: never saved, and refused (as damage) when loaded."""


def backbone_fingerprint(cfg: T5Config, embedding: Any) -> str:
  """Hash of the config and of 64 spread-out embedding rows (cheap even when sharded)."""
  rows = np.linspace(0, embedding.shape[0] - 1, num=min(64, embedding.shape[0])).astype(np.int64)
  sample = np.asarray(jax.device_get(embedding[rows]), np.float32)
  # remat changes memory, not numbers; float32 storage hashes as before these fields existed.
  fields = {k: v for k, v in dataclasses.asdict(cfg).items()
            if k != "remat_policy" and not (k == "weight_dtype" and v == "float32")}
  h = hashlib.sha256(json.dumps(fields, sort_keys=True).encode())
  h.update(sample.tobytes())
  return h.hexdigest()[:16]


def trainable_signature(trainable: Any) -> dict[str, list[int]]:
  flat = traverse_util.flatten_dict(trainable, sep="/")
  return {k: list(v.shape) for k, v in sorted(flat.items())}


class TrainCheckpointer:
  """Save and resume a TrainState (+ JSON metadata) under `<model_dir>/train_state/`.

  Each save records a sha256 per state array in its metadata. Restoring walks from the
  newest step down: a damaged step (missing or unreadable item, bad metadata, checksum
  mismatch) is named in a warning and the next older step is tried; once an intact one
  is found the damaged ones are moved aside by `tidy` as `<step>.damaged-<time>`. A step
  holding NaN/Inf counts as damaged; a non-finite state is never saved. Nothing is changed on
  disk until `tidy` (called once every resume check has passed, under the run lock), which
  also removes the temporary directories of an interrupted save; a failed save (e.g. a
  full disk) removes its own.
  """

  def __init__(self, model_dir: str, *, keep: int, fingerprint: dict[str, Any]):
    self.directory = fs.join(fs.abspath(model_dir), "train_state")  # local or gs://
    self.fingerprint = fingerprint
    self._keep = keep
    self._damaged: list[str] = []  # found by restore, moved aside by tidy
    self._manager = self._new_manager()

  def _new_manager(self) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=False,  # made at the first save
                                           enable_async_checkpointing=False)
    return ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    leaves = _host_leaves(state)
    bad = nonfinite_keys(leaves)
    if bad:  # the step never commits such a state; this is the last line of defence
      raise NonFiniteStateError(f"refusing to save training checkpoint step {step} under {self.directory}: "
                                f"{bad} hold NaN or Inf")
    meta = dict(meta, fingerprint=self.fingerprint, checksums={k: checksums.digest(v) for k, v in leaves.items()})
    attempt = lambda: self._save_attempt(step, state, meta)
    if jax.process_count() > 1:  # a collective save: one process retrying alone would leave the others waiting
      attempt()
    else:  # transient storage errors (gs://): the failed try cleaned up after itself, try again
      fs.retrying("saving training checkpoint", fs.join(self.directory, str(step)), attempt)

  def _save_attempt(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    """One try at `save`; on failure its partial files are removed before it raises."""
    before = set(threading.enumerate())
    try:
      self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                       meta=ocp.args.JsonSave(meta)), force=True)
      self._manager.wait_until_finished()
    except Exception as e:
      # One item failed; orbax's writer threads for the others may still be running:
      # let them stop before their partial files are removed.
      _join_new_threads(before)
      self._manager.close()
      _join_new_threads(before)
      self._remove_tmp()
      self._manager = self._new_manager()
      raise OSError(getattr(e, "errno", None), f"saving training checkpoint step {step} under {self.directory} "
                    f"failed ({type(e).__name__}: {e}); its partial files were removed and the older steps "
                    "are intact. Free space (or fix the cause) and rerun: training resumes from the newest "
                    "intact step.") from e

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict] | None:
    """Newest intact (or the given) checkpoint restored into `abstract_state`'s shapes and
    shardings, or None when there is none yet. Fingerprints are compared before arrays are
    read; a fingerprint mismatch is refused, never skipped."""
    steps = sorted(self._manager.all_steps(), reverse=True) if step is None else [step]
    damaged = []
    for candidate in steps:
      try:
        restored = self._restore_step(abstract_state, candidate)
      except CheckpointFingerprintError:
        raise
      except Exception as e:  # orbax raises KeyError, ValueError, JSONDecodeError, ... for damage
        where = fs.join(self.directory, str(candidate))
        if step is not None:
          raise DamagedCheckpointError(f"training checkpoint {where} is damaged: {type(e).__name__}: {e}") from e
        damaged.append(where)
        logging.warning("training checkpoint %s is damaged (%s: %s); falling back to an older step",
                        where, type(e).__name__, e)
        continue
      self._damaged = damaged  # moved aside by tidy(), once every check has passed
      return restored
    if damaged:
      raise DamagedCheckpointError(f"every training checkpoint under {self.directory} is damaged "
                                   f"({', '.join(damaged)}); nothing was changed. Delete {self.directory} "
                                   "to start afresh.")
    return None

  def _restore_step(self, abstract_state: Any, step: int) -> tuple[Any, dict]:
    meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    if not isinstance(meta, dict):
      raise ValueError(f"meta is {type(meta).__name__}, not a JSON object")
    self._check(meta, step)
    target = jax.tree.map(_abstract, abstract_state)
    restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    leaves = _host_leaves(restored["state"])
    recorded = meta.get("checksums")
    if recorded is not None:
      bad = sorted(k for k, v in leaves.items() if k in recorded and checksums.digest(v) != recorded[k])
      if bad:
        raise checksums.ChecksumError(f"arrays {bad} do not match the checksums recorded when step {step} was "
                                      "saved")
    bad = nonfinite_keys(leaves)
    if bad:
      raise NonFiniteStateError(f"step {step} holds NaN or Inf in {bad}")
    return restored["state"], meta

  def tidy(self) -> None:
    """The changes resuming implies, made once every check passed: damaged steps found by
    `restore` moved aside (kept for inspection), leftover temporary directories removed."""
    for where in self._damaged:
      self._move_aside(where)
    self._damaged = []
    self._remove_tmp()

  def _move_aside(self, where: str) -> None:
    if distributed.is_primary():
      fs.rename(where, f"{where}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    distributed.sync("train_state_move_aside")
    self._manager.reload()

  def _remove_tmp(self) -> None:
    """Drop `*.orbax-checkpoint-tmp*` folders an interrupted or failed save left behind."""
    if not distributed.is_primary() or not fs.isdir(self.directory):
      return
    for name in fs.listdir(self.directory):
      if _TMP_MARK in name:
        logging.warning("removing %s, left by an interrupted checkpoint save", fs.join(self.directory, name))
        fs.rmtree(fs.join(self.directory, name))

  def _check(self, meta: dict[str, Any], step: int) -> None:
    found = meta.get("fingerprint", {})
    where = fs.join(self.directory, str(step))
    for key, expected in self.fingerprint.items():
      if found.get(key) != expected:
        raise CheckpointFingerprintError(
            f"training checkpoint {where} has {key}={found.get(key)!r} but this run has "
            f"{key}={expected!r}: it belongs to another backbone or prompt shape. Use another "
            f"MODEL_DIR or delete {self.directory} to start afresh.")


def _join_new_threads(before: set[threading.Thread], timeout_s: float = 60.0) -> None:
  deadline = time.time() + timeout_s
  for thread in set(threading.enumerate()) - before:
    if thread.ident is not None and thread is not threading.current_thread():
      thread.join(timeout=max(0.0, deadline - time.time()))


def _host_leaves(state: Any) -> dict[str, np.ndarray]:
  """{key path: host array} of every state array this host can see whole (all of them on
  one host; sharded arrays on a multi-host mesh are left to orbax)."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    if isinstance(leaf, jax.Array) and not (leaf.is_fully_addressable or leaf.is_fully_replicated):
      continue
    value = leaf.addressable_data(0) if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable else leaf
    out[jax.tree_util.keystr(path)] = np.asarray(jax.device_get(value))
  return out


def state_checksums(state: Any) -> dict[str, str]:
  """{key path: sha256} of every state array this host can see whole."""
  return {k: checksums.digest(v) for k, v in _host_leaves(state).items()}


def nonfinite_keys(leaves: dict[str, np.ndarray]) -> list[str]:
  """The key paths whose floating-point values include NaN or Inf."""
  return sorted(k for k, v in leaves.items()
                if jax.numpy.issubdtype(v.dtype, jax.numpy.inexact) and not np.isfinite(v).all())


def _abstract(x: Any) -> Any:
  sharding = getattr(x, "sharding", None)
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
