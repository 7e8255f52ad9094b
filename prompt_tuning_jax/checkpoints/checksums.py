"""Per-array checksums for the checkpoints this project writes, and value checks on load.

Neither inline msgpack (T5X) nor safetensors carries a checksum, so one flipped byte
loads silently. Our T5X and Hugging Face exports therefore get a manifest beside the
weights file (`<file>.sha256.json`: {array name: sha256 of dtype, shape and bytes}),
and train-state checkpoints carry the same map in their metadata. A load verifies every
array the manifest lists and refuses a mismatch naming the array; a file without a
manifest (a public checkpoint) loads as before. `check_values` refuses NaN/Inf and
non-floating weights, naming the key, unless non-finite values are explicitly allowed.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

import ml_dtypes
import numpy as np

from prompt_tuning_jax.checkpoints import entries, fs
from prompt_tuning_jax.checkpoints.validation import CheckpointCorruptError

SUFFIX = ".sha256.json"
FORMAT = "prompt_tuning_jax.checksums"
MAX_MANIFEST_BYTES = 64 << 20  # ~100 bytes an array: room for 600k arrays


class ChecksumError(CheckpointCorruptError):
  """An array's bytes differ from the checksum recorded when it was written."""


class NonFiniteWeightsError(CheckpointCorruptError):
  """Loaded weights hold NaN or Inf (refused unless allow_nonfinite=True)."""


def digest(array: Any) -> str:
  """sha256 over dtype name, shape and C-order bytes (so a reshape or recast differs)."""
  arr = np.asarray(array)
  h = hashlib.sha256(f"{arr.dtype.name}{list(arr.shape)}".encode())
  h.update(np.ascontiguousarray(arr).tobytes())
  return h.hexdigest()


def manifest(arrays: Mapping[str, Any]) -> dict[str, str]:
  return {name: digest(value) for name, value in sorted(arrays.items())}


def write_manifest(weights_file: str, arrays: Mapping[str, Any]) -> str:
  """Write `<weights_file>.sha256.json` for `arrays` ({name: array}); return its path."""
  path = weights_file + SUFFIX
  fs.write_bytes(path, json.dumps({"format": FORMAT, "arrays": manifest(arrays)}, indent=1).encode())
  return path


def read_manifest(weights_file: str, root: str | None = None) -> dict[str, str] | None:
  """{name: sha256} from `<weights_file>.sha256.json`, or None when there is none.

  Locally the manifest must be a regular file inside `root` (default: the checkpoint
  root of the weights file's folder, see `entries.checkpoint_root`); a dangling link
  where it should be is refused, not read as "no manifest".
  """
  path = weights_file + SUFFIX
  if fs.is_remote(path):
    if not fs.exists(path):
      return None
    raw = fs.read_bytes(path)
  else:
    if not os.path.lexists(path):
      return None
    root = root or entries.checkpoint_root(os.path.dirname(os.path.abspath(path)))
    raw = entries.read_bytes(path, root, "checksum manifest", max_bytes=MAX_MANIFEST_BYTES)
  try:
    data = json.loads(raw)
    arrays = data["arrays"]
    if data.get("format") != FORMAT or not isinstance(arrays, dict):
      raise ValueError(f"format {data.get('format')!r}")
    return {str(k): str(v) for k, v in arrays.items()}
  except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
    raise CheckpointCorruptError(f"checksum manifest {path} is unreadable: {type(e).__name__}: {e}") from e


def verify(name: str, array: Any, recorded: Mapping[str, str] | None, source: str) -> None:
  """Raise ChecksumError naming `name` and `source` when the recorded sha256 differs."""
  if recorded is None or name not in recorded:
    return
  if digest(array) != recorded[name]:
    raise ChecksumError(f"array {name!r} in {source} does not match the checksum recorded when it was "
                        "written: the file is damaged")


def is_floating(dtype: Any) -> bool:
  dtype = np.dtype(dtype)
  return dtype.kind == "f" or dtype == ml_dtypes.bfloat16


def check_values(name: str, array: Any, source: str, *, allow_nonfinite: bool = False) -> np.ndarray:
  """A floating array without NaN/Inf (unless allowed); errors name the key and source."""
  arr = np.asarray(array)
  if not is_floating(arr.dtype):
    raise CheckpointCorruptError(f"{name!r} in {source} has dtype {arr.dtype}; expected a floating type "
                                 "(float32, bfloat16, float16)")
  if not allow_nonfinite:
    bad = ~np.isfinite(arr.astype(np.float32) if arr.dtype == ml_dtypes.bfloat16 else arr)
    if bad.any():
      first = tuple(int(i) for i in np.argwhere(bad)[0])
      raise NonFiniteWeightsError(f"{name!r} in {source} holds {int(bad.sum())} NaN/Inf values (first at "
                                  f"index {first}, value {arr[first]}); pass allow_nonfinite=True to load it anyway")
  return arr
