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
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from prompt_tuning_jax.config import T5Config


class CheckpointFingerprintError(ValueError):
  """A training checkpoint belongs to another backbone or another prompt shape."""


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
  """Save and resume a TrainState (+ JSON metadata) under `<model_dir>/train_state/`."""

  def __init__(self, model_dir: str, *, keep: int, fingerprint: dict[str, Any]):
    self.directory = os.path.join(os.path.abspath(model_dir), "train_state")
    self.fingerprint = fingerprint
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    meta = dict(meta, fingerprint=self.fingerprint)
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     meta=ocp.args.JsonSave(meta)), force=True)
    self._manager.wait_until_finished()

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict] | None:
    """Newest (or given) checkpoint restored into `abstract_state`'s shapes and shardings,
    or None when there is none yet. Fingerprints are compared before arrays are read."""
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    self._check(meta, step)
    target = jax.tree.map(_abstract, abstract_state)
    restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    return restored["state"], meta

  def _check(self, meta: dict[str, Any], step: int) -> None:
    found = meta.get("fingerprint", {})
    where = os.path.join(self.directory, str(step))
    for key, expected in self.fingerprint.items():
      if found.get(key) != expected:
        raise CheckpointFingerprintError(
            f"training checkpoint {where} has {key}={found.get(key)!r} but this run has "
            f"{key}={expected!r}: it belongs to another backbone or prompt shape. Use another "
            f"MODEL_DIR or delete {self.directory} to start afresh.")


def _abstract(x: Any) -> Any:
  sharding = getattr(x, "sharding", None)
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
