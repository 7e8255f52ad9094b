"""Read and write T5X checkpoints without t5x (FACTS.md 'T5X checkpoints').

`checkpoint_<step>/checkpoint` is a flax msgpack file:
`{'version': 3, 'optimizer': {'target': params, 'state': {'step', 'param_states'}}}`.
A leaf is either an inline array (msgpack ext type 1 holding (shape, dtype name, raw
bytes)) or a tensorstore spec pointing at a gzip zarr v2 directory beside the file,
named by the dotted path ('target.encoder.layers_0.attention.query.kernel').

Reading is lazy: `open_t5x_checkpoint` parses the msgpack once (cached) and each leaf,
or an index-slice of it, is read on demand, which is what a sharded loader needs.
Locally, every file read (msgpack, manifest, `.zarray`, chunks) must be a regular file
inside the checkpoint folder (`entries`: no link leaving it, no dangling link, FIFO or
device), every chunk must be there, and the `.zarray` may only use what T5X writes
and this reader implements (`check_zarray`).
Writing is atomic: everything goes to a temporary sibling directory that is renamed
to `checkpoint_<step>` only once it is complete and synced.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import posixpath
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import ml_dtypes
import msgpack
import numpy as np
import tensorstore as ts

from prompt_tuning_jax.checkpoints import checksums, entries, fs, tree
from prompt_tuning_jax.checkpoints.validation import (
  CheckpointCorruptError,
  CheckpointMismatchError,
  ShapeDtype,
  infer_t5_config,
  param_shapes,
  validate_params,
)

__all__ = ["T5XCheckpoint", "T5XCheckpointIndex", "CheckpointCorruptError", "CheckpointMismatchError", "ShapeDtype",
           "open_t5x_checkpoint", "read_t5x_checkpoint", "read_t5x_variable", "read_t5x_array", "read_t5x_shapes",
           "write_t5x_checkpoint", "cast_params", "validate_params", "infer_t5_config", "param_shapes"]

_EXT_NDARRAY, _EXT_COMPLEX, _EXT_NPSCALAR = 1, 2, 3
_CHUNKED = "__msgpack_chunked_array__"
DEFAULT_INLINE_MAX_BYTES = 1 << 14  # norms, relpos tables and the step stay inline
DEFAULT_CHUNK_MAX_BYTES = 64 << 20
# What a `.zarray` may say. T5X writes gzip (its own specs) or, through jax's array
# serialization, zstd; null (raw chunks) is plain zarr. All three are decoded by
# tensorstore and tested against it; anything else is refused by name.
ZARR_COMPRESSORS = (None, "gzip", "zstd")
ZARR_DTYPES = ("bfloat16", "<f2", "<f4", "<f8", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "|b1")
MAX_ZARRAY_BYTES = 1 << 20


# ----------------------------------------------------------------------------- reading
def _exists(path: str) -> bool:
  """fs.exists, but a dangling local link exists (so that it is refused naming it)."""
  return fs.exists(path) if fs.is_remote(path) else os.path.lexists(path)


def _resolve(path: str) -> tuple[str, str]:
  """(msgpack file, directory holding the zarr arrays) for any accepted path form."""
  path = path.rstrip("/")
  if fs.isdir(path):
    file = f"{path}/checkpoint"
    if not _exists(file):
      raise FileNotFoundError(f"T5X checkpoint directory {path} has no 'checkpoint' msgpack file")
    return file, path
  if not _exists(path):
    raise FileNotFoundError(f"no T5X checkpoint at {path} (expected a checkpoint_<N> directory or its "
                            "'checkpoint' file)")
  return path, path.rsplit("/", 1)[0] if "/" in path else "."


def _np_dtype(name: Any) -> np.dtype:
  """numpy dtype from a name ('float32', '<f4', 'bfloat16') or a type."""
  return np.dtype(ml_dtypes.bfloat16) if str(name) == "bfloat16" else np.dtype(name)


def _ext_hook(code: int, data: bytes) -> Any:
  """flax msgpack extension types -> numpy (zero-copy, read-only views)."""
  if code in (_EXT_NDARRAY, _EXT_NPSCALAR):
    shape, dtype, buf = msgpack.unpackb(data, raw=False)
    return np.frombuffer(buf, dtype=_np_dtype(dtype)).reshape(shape)
  if code == _EXT_COMPLEX:
    real, imag = msgpack.unpackb(data, raw=False)
    return complex(real, imag)
  raise ValueError(f"unknown msgpack extension type {code}")


def _is_spec(node: Any) -> bool:
  return isinstance(node, dict) and "driver" in node and ("kvstore" in node or "path" in node)


def _unchunk(node: dict[str, Any]) -> np.ndarray:
  """flax splits arrays over ~1 GiB into flat chunks: {'shape': {'0': n..}, 'chunks': {'0': a..}}."""
  shape = [node["shape"][str(i)] for i in range(len(node["shape"]))]
  chunks = [node["chunks"][str(i)] for i in range(len(node["chunks"]))]
  return np.concatenate(chunks).reshape(shape)


def _flatten_leaves(node: Any, prefix: str, out: dict[str, Any]) -> dict[str, Any]:
  """Like tree.flatten, but tensorstore specs and chunked arrays are leaves."""
  if isinstance(node, dict) and _CHUNKED in node:
    out[prefix] = _unchunk(node)
  elif isinstance(node, dict) and not _is_spec(node):
    for key, value in node.items():
      _flatten_leaves(value, f"{prefix}/{key}" if prefix else str(key), out)
  else:
    out[prefix] = node if _is_spec(node) else np.asarray(node)
  return out


@dataclasses.dataclass(frozen=True)
class T5XCheckpoint:
  """A loaded checkpoint. params: nested dict of np.ndarray in T5X names (no 'target')."""
  params: dict[str, Any]
  step: int
  path: str  # the msgpack file
  param_states: dict[str, Any] | None = None


class T5XCheckpointIndex:
  """A parsed msgpack file: leaf locations and shapes; arrays read on demand."""

  def __init__(self, file: str, directory: str):
    self.file, self.directory = file, directory
    self.root = entries.checkpoint_root(directory)
    self._stores: dict[tuple[str, bool], tuple[ts.TensorStore, str, dict[str, Any]]] = {}
    self.checksums = checksums.read_manifest(file, self.root)  # None for checkpoints we did not write
    self._verified: set[str] = set()
    data = fs.read_bytes(file)
    try:
      raw = msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)
      optimizer = raw["optimizer"] if "optimizer" in raw else raw
      self.target = _flatten_leaves(optimizer["target"], "", {})
      state = optimizer.get("state", {}) or {}
      self.states = _flatten_leaves(state.get("param_states", {}) or {}, "", {})
      step = state.get("step")
      if step is None:
        match = re.search(r"checkpoint_(\d+)", file)
        step = match.group(1) if match else 0
      self.step = int(np.asarray(step))
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, msgpack.UnpackException) as e:
      raise CheckpointCorruptError(f"cannot decode T5X checkpoint file {file}: {type(e).__name__}: {e}."
                                   f"{entries.lfs_pointer_hint(data[:64])}") from e

  def _leaf(self, name: str, states: bool) -> Any:
    leaves = self.states if states else self.target
    name = name.strip("/").removeprefix("target/")
    if name not in leaves:
      prefix = name.rsplit("/", 1)[0]
      near = sorted(k for k in leaves if k.startswith(prefix))[:10] or sorted(leaves)[:10]
      raise CheckpointMismatchError(f"variable {name!r} not in T5X checkpoint {self.file}; "
                                    f"nearby keys: {near}")
    return leaves[name]

  def shape(self, name: str, *, states: bool = False) -> ShapeDtype:
    leaf = self._leaf(name, states)
    if not _is_spec(leaf):
      return ShapeDtype(tuple(leaf.shape), leaf.dtype)
    meta = leaf.get("metadata") or {}
    if "shape" in meta and "dtype" in meta:
      return ShapeDtype(tuple(meta["shape"]), _np_dtype(meta["dtype"]))
    store, _, _ = self._store(name, leaf, states)
    return ShapeDtype(tuple(store.shape), np.dtype(store.dtype.numpy_dtype))

  def shapes(self, *, states: bool = False) -> dict[str, ShapeDtype]:
    """Flat {slash key: ShapeDtype} without reading array data."""
    leaves = self.states if states else self.target
    return {k: self.shape(k, states=states) for k in leaves}

  def _store(self, name: str, spec: dict[str, Any], states: bool) -> tuple[ts.TensorStore, str, dict[str, Any]]:
    """(open zarr array, its location, its checked .zarray), opened once per index."""
    if (name, states) not in self._stores:
      self._stores[(name, states)] = self._open_zarr(name, spec)
    return self._stores[(name, states)]

  def _open_zarr(self, name: str, spec: dict[str, Any]) -> tuple[ts.TensorStore, str, dict[str, Any]]:
    kvstore = spec.get("kvstore") or {}
    rel = kvstore.get("path") or spec.get("path")
    if not isinstance(rel, str) or not rel:
      raise CheckpointCorruptError(f"tensorstore spec for {name!r} in {self.file} has no kvstore path: {spec}")
    # Like T5X: the path is relative to the checkpoint directory whatever the driver
    # ('file', 'gfile', or 'gcs' with a placeholder bucket); the directory decides where,
    # and nothing outside it is ever opened.
    norm = posixpath.normpath(rel)
    if "://" in rel or norm.startswith(("/", "..")) or norm == ".":
      raise CheckpointCorruptError(f"tensorstore path {rel!r} for {name!r} in {self.file} leaves the "
                                   f"checkpoint directory {self.directory}; only relative paths inside it are read")
    location = f"{self.directory}/{norm}"
    if not fs.is_remote(location):
      entries.check(location, self.root, f"zarr array folder for {name!r} (listed in {self.file})", folder=True)
    zarray = check_zarray(location, name, self.root)
    try:
      store = ts.open({"driver": "zarr", "kvstore": fs.kvstore_spec(location)}, open=True, read=True).result()
    except ValueError as e:
      raise CheckpointCorruptError(f"cannot open zarr array {location} for {name!r} "
                                   f"(listed in {self.file}): {e}") from e
    meta = spec.get("metadata") or {}
    want = meta.get("shape")
    if want is not None and tuple(want) != tuple(store.shape):
      raise CheckpointCorruptError(f"zarr array {location} has shape {tuple(store.shape)} but {self.file} "
                                   f"records {tuple(want)} for {name!r}")
    stored = store.spec().to_json().get("metadata", {}).get("dtype")
    if meta.get("dtype") is not None and stored != meta["dtype"]:
      raise CheckpointCorruptError(f"zarr array {location}/.zarray has dtype {stored!r} but {self.file} "
                                   f"records {meta['dtype']!r} for {name!r}")
    return store, location, zarray

  def read(self, name: str, index: Any = None, *, states: bool = False, allow_nonfinite: bool = False) -> np.ndarray:
    """One leaf (or `leaf[index]`) as a writable np.ndarray, checked: a target leaf must
    be floating and finite (unless allow_nonfinite); a leaf listed in our checksum
    manifest must match it (inline leaves always, zarr leaves on whole reads; a slice of
    a gzip zarr chunk is covered by gzip's own CRC)."""
    leaf = self._leaf(name, states)
    key = f"{'param_states' if states else 'target'}/{name.strip('/').removeprefix('target/')}"
    if not _is_spec(leaf):
      self._verify(key, leaf)
      arr = np.array(leaf if index is None else leaf[index])
    else:
      store, location, zarray = self._store(name, leaf, states)
      _check_chunks(zarray, location, self.root)
      try:
        arr = np.asarray(store[index].read().result() if index is not None else store.read().result())
      except ValueError as e:
        raise CheckpointCorruptError(f"cannot read zarr array {location} for {name!r} "
                                     f"(listed in {self.file}): {e}.{_lfs_chunk_hint(location)}") from e
      if index is None or arr.shape == tuple(store.shape):
        self._verify(key, arr)
    if not states:
      checksums.check_values(name, arr, self.file, allow_nonfinite=allow_nonfinite)
    return arr

  def _verify(self, key: str, arr: np.ndarray) -> None:
    if self.checksums is not None and key not in self._verified:
      checksums.verify(key, arr, self.checksums, self.file)
      self._verified.add(key)


def _fail_zarray(location: str, name: str, what: str) -> CheckpointCorruptError:
  return CheckpointCorruptError(f"zarr array {location} (for {name!r}): {location}/.zarray {what}")


def check_zarray(location: str, name: str, root: str) -> dict[str, Any]:
  """The `.zarray` of a zarr v2 array as a dict, refused by name when it uses anything
  this reader does not implement: an order other than C, filters, a compressor outside
  ZARR_COMPRESSORS, a dtype outside ZARR_DTYPES, shapes and chunks that are not lists
  of counts of equal length, a dimension_separator other than '.' or '/'."""
  path = f"{location}/.zarray"
  try:
    if fs.is_remote(path):
      raw = fs.read_bytes(path)
    else:
      raw = entries.read_bytes(path, root, f"zarr metadata for {name!r}", max_bytes=MAX_ZARRAY_BYTES)
    meta = json.loads(raw)
  except FileNotFoundError:
    raise CheckpointCorruptError(f"zarr array {location} (for {name!r}) has no .zarray file") from None
  except (ValueError, UnicodeDecodeError) as e:
    if isinstance(e, CheckpointCorruptError):
      raise
    raise _fail_zarray(location, name, f"is not valid JSON: {e}") from None
  if not isinstance(meta, dict):
    raise _fail_zarray(location, name, f"must be a JSON object, found {type(meta).__name__}")
  if meta.get("zarr_format") != 2:
    raise _fail_zarray(location, name, f"has zarr_format {meta.get('zarr_format')!r}; only zarr v2 (2) is read")
  if meta.get("order", "C") != "C":
    raise _fail_zarray(location, name, f"has order {meta.get('order')!r}; only C order (what T5X writes) is read")
  if meta.get("filters") is not None:
    raise _fail_zarray(location, name, f"has filters {meta['filters']!r}; filters are not read (T5X writes none)")
  compressor = meta.get("compressor")
  cid = compressor.get("id") if isinstance(compressor, dict) else compressor
  if (compressor is not None and not isinstance(compressor, dict)) or cid not in ZARR_COMPRESSORS:
    raise _fail_zarray(location, name, f"has compressor {cid!r}; read are {list(ZARR_COMPRESSORS)}")
  if meta.get("dtype") not in ZARR_DTYPES:
    raise _fail_zarray(location, name, f"has dtype {meta.get('dtype')!r}; read are {list(ZARR_DTYPES)}")
  shape, chunks = meta.get("shape"), meta.get("chunks")
  counts = lambda v, low: isinstance(v, list) and all(isinstance(n, int) and not isinstance(n, bool) and n >= low
                                                      for n in v)
  if not counts(shape, 0):
    raise _fail_zarray(location, name, f"has shape {shape!r}; expected a list of sizes")
  if not counts(chunks, 1) or len(chunks) != len(shape):
    raise _fail_zarray(location, name, f"has chunks {chunks!r}; expected {len(shape)} positive chunk sizes")
  if meta.get("dimension_separator", ".") not in (".", "/"):
    raise _fail_zarray(location, name, f"has dimension_separator {meta['dimension_separator']!r}; expected '.' "
                                       "or '/'")
  return meta


def _chunk_index(name: str, sep: str, grid: list[int]) -> tuple[int, ...] | None:
  """The grid index a chunk file name stands for, or None when it names no chunk."""
  if not grid:  # a 0-d array has one chunk, "0"
    return (0,) if name == "0" else None
  parts = name.split(sep)
  if len(parts) != len(grid) or not all(p.isdigit() and (p == "0" or not p.startswith("0")) for p in parts):
    return None
  index = tuple(int(p) for p in parts)
  return index if all(i < n for i, n in zip(index, grid)) else None


def _lfs_chunk_hint(location: str) -> str:
  """The Git LFS hint when one chunk of a local zarr folder is a pointer file, else ''."""
  if fs.is_remote(location):
    return ""
  for name in os.listdir(location):
    path = os.path.join(location, name)
    if not name.startswith(".") and os.path.isfile(path) and os.path.getsize(path) < 1024:
      with open(path, "rb") as f:
        hint = entries.lfs_pointer_hint(f.read(64))
      if hint:
        return f" {path}:{hint}"
  return ""


def _grid_indices(grid: list[int]) -> Iterator[tuple[int, ...]]:
  """Chunk indices in C order, lazily (itertools.product would first list each range)."""
  for flat in range(math.prod(grid)):
    index = []
    for n in reversed(grid):
      flat, i = divmod(flat, n)
      index.append(i)
    yield tuple(reversed(index))


def _check_chunks(zarray: dict[str, Any], location: str, root: str) -> None:
  """Every chunk must be a readable regular file inside the checkpoint: tensorstore
  reads a missing chunk (or a dangling link, or /dev/zero) as the fill value, zeros.
  Counts without listing the whole grid, so a .zarray declaring 2^40 chunks is cheap."""
  sep = zarray.get("dimension_separator", ".")
  grid = [-(-n // c) for n, c in zip(zarray["shape"], zarray["chunks"])]
  want = math.prod(grid)
  if fs.is_remote(location):
    names = {n: None for n in fs.list_files(location)}
  else:
    try:  # checked again at each read: the folder may have changed since it was opened
      entries.check(location, root, "zarr array folder", folder=True)
    except FileNotFoundError:
      raise CheckpointCorruptError(f"zarr array folder {location} does not exist (any more)") from None
    names = {n: entries.problem(p, root) for n, p in entries.walk(location, root)}
  present, broken = set(), {}
  for name, found in names.items():
    index = _chunk_index(name, sep, grid)
    if index is None:
      continue
    if found is None:
      present.add(index)
    elif found[1]:  # no content: a dangling link, unreadable
      broken[name] = found[0]
    else:
      raise entries.CheckpointEntryError(f"zarr chunk {location}/{name} {found[0]}")
  if len(present) == want:
    return
  shown = []
  for index in _grid_indices(grid) if grid else [(0,)]:
    if index not in present:
      name = sep.join(map(str, index))
      shown.append(f"{location}/{name} {broken[name]}" if name in broken else name)
      if len(shown) == 5:
        break
  raise CheckpointCorruptError(f"zarr array {location} is missing chunk files {shown} "
                               f"({want - len(present)} of {want}); a missing chunk would read as zeros")


@functools.lru_cache(maxsize=4)
def _cached_index(file: str, directory: str, stamp: tuple[int, int]) -> T5XCheckpointIndex:
  del stamp  # part of the cache key only
  return T5XCheckpointIndex(file, directory)


def open_t5x_checkpoint(path: str) -> T5XCheckpointIndex:
  """Parse (once, cached by file size and mtime) the msgpack file of a checkpoint."""
  file, directory = _resolve(path)
  if not fs.is_remote(file):
    entries.check(file, entries.checkpoint_root(directory), "T5X checkpoint file")
  return _cached_index(file, directory, fs.stamp(file))


def read_t5x_shapes(path: str) -> dict[str, Any]:
  """Nested dict of ShapeDtype for every target leaf; no array data is read."""
  return tree.unflatten(open_t5x_checkpoint(path).shapes())


def read_t5x_array(path: str, name: str, index: Any = None, *, allow_nonfinite: bool = False) -> np.ndarray:
  """One target leaf by slash name ('encoder/layers_0/attention/query/kernel'), or a
  slice of it (`index`, e.g. `(slice(0, 1024), slice(None))`), without the rest."""
  return open_t5x_checkpoint(path).read(name, index, allow_nonfinite=allow_nonfinite)


def read_t5x_variable(path: str, name: str, *, allow_nonfinite: bool = False) -> np.ndarray:
  """One whole variable, e.g. the prompt 'encoder/prompt/prompt/prompt' [P, d]."""
  return read_t5x_array(path, name, allow_nonfinite=allow_nonfinite)


def _cast(arr: np.ndarray, dtype: Any) -> np.ndarray:
  """Cast floating arrays only (the step and integer states keep their dtype)."""
  if dtype is None or not (arr.dtype.kind == "f" or arr.dtype == ml_dtypes.bfloat16):
    return arr
  return arr.astype(_np_dtype(dtype))


def cast_params(params: Mapping[str, Any], dtype: Any) -> dict[str, Any]:
  """Cast the floating leaves of a nested dict (e.g. to 'bfloat16' for saving)."""
  return tree.unflatten({k: _cast(np.asarray(v), dtype) for k, v in tree.flatten(params).items()})


def read_t5x_checkpoint(path: str, *, restore_optimizer_state: bool = False, dtype: Any = None,
                        expected: Mapping[str, Any] | None = None, allow_nonfinite: bool = False) -> T5XCheckpoint:
  """Load every target array (and optionally the optimizer's param_states).

  Args:
    path: a `checkpoint_<N>` directory, its `checkpoint` file, or a single-file
      checkpoint; local or gs://.
    allow_nonfinite: load NaN/Inf weights instead of refusing them.
    dtype: cast floating arrays to this dtype (e.g. 'float32', 'bfloat16').
    expected: nested dict of objects with `.shape` (e.g. `jax.eval_shape` of the
      model's init); checked against the stored shapes before any array is read.
  """
  index = open_t5x_checkpoint(path)
  if expected is not None:
    validate_params(tree.unflatten(index.shapes()), expected, source=index.file)
  params = tree.unflatten({k: _cast(index.read(k, allow_nonfinite=allow_nonfinite), dtype) for k in index.target})
  states = None
  if restore_optimizer_state:
    states = tree.unflatten({k: index.read(k, states=True) for k in index.states})
  return T5XCheckpoint(params=params, step=index.step, path=index.file, param_states=states)


# ----------------------------------------------------------------------------- writing
def _ext_default(obj: Any) -> Any:
  if isinstance(obj, (np.ndarray, np.generic)):
    arr = np.asarray(obj)  # tobytes() is C order; ascontiguousarray would make 0-d arrays 1-d
    return msgpack.ExtType(_EXT_NDARRAY, msgpack.packb((list(arr.shape), arr.dtype.name, arr.tobytes()),
                                                       use_bin_type=True))
  raise TypeError(f"cannot serialize {type(obj).__name__} into a T5X checkpoint")


def _zarr_dtype(dtype: np.dtype) -> str:
  return "bfloat16" if dtype == ml_dtypes.bfloat16 else dtype.str


def _chunk_shape(shape: tuple[int, ...], itemsize: int, max_bytes: int) -> list[int]:
  """Full shape, halving the largest dimension until a chunk fits in max_bytes."""
  chunks = list(shape)
  while int(np.prod(chunks)) * itemsize > max_bytes and max(chunks) > 1:
    i = int(np.argmax(chunks))
    chunks[i] = -(-chunks[i] // 2)
  return chunks


def _write_zarr(directory: str, dotted: str, arr: np.ndarray, chunk_max_bytes: int) -> dict[str, Any]:
  """Write `arr` as a gzip zarr v2 array under directory/dotted; return its T5X spec."""
  metadata = {"shape": list(arr.shape), "chunks": _chunk_shape(arr.shape, arr.dtype.itemsize, chunk_max_bytes),
              "dtype": _zarr_dtype(arr.dtype), "compressor": {"id": "gzip", "level": 1}}
  spec = {"driver": "zarr", "kvstore": fs.kvstore_spec(f"{directory}/{dotted}"), "metadata": metadata}
  store = ts.open(spec, create=True, open=False).result()
  store.write(arr).result()
  return {"driver": "zarr", "kvstore": {"driver": "file", "path": dotted}, "metadata": metadata}


def _leaves_to_write(prefix: str, params: Mapping[str, Any], directory: str, inline_max_bytes: int,
                     chunk_max_bytes: int) -> dict[str, Any]:
  flat = {}
  for key, value in tree.flatten(params).items():
    arr = np.asarray(value)
    if arr.ndim == 0 or arr.nbytes <= inline_max_bytes:
      flat[key] = arr
    else:
      dotted = ".".join([prefix] + key.split("/"))
      flat[key] = _write_zarr(directory, dotted, arr, chunk_max_bytes)
  return tree.unflatten(flat)


def write_t5x_checkpoint(model_dir: str, params: Mapping[str, Any], step: int, *,
                         inline_max_bytes: int = DEFAULT_INLINE_MAX_BYTES,
                         param_states: Mapping[str, Any] | None = None,
                         chunk_max_bytes: int = DEFAULT_CHUNK_MAX_BYTES, overwrite: bool = False) -> str:
  """Write `model_dir/checkpoint_<step>/` (msgpack + zarr) atomically; return its path.

  Arrays larger than `inline_max_bytes` become zarr directories named by their dotted
  path ('target.encoder.layers_0.mlp.wo.kernel'); smaller ones are stored inline.
  A failure at any point leaves no `checkpoint_<step>` directory behind. On gs:// the
  final rename is a copy, so atomicity is only as good as tf.io.gfile.rename.
  """
  if inline_max_bytes >= 1 << 30:
    raise ValueError(f"inline_max_bytes={inline_max_bytes} must stay below 1 GiB (msgpack limit)")
  model_dir = model_dir.rstrip("/")
  final = f"{model_dir}/checkpoint_{int(step)}"
  if fs.exists(final) and not overwrite:
    raise FileExistsError(f"T5X checkpoint {final} already exists (pass overwrite=True to replace it)")
  tmp = f"{final}.tmp-{int(time.time())}-{uuid.uuid4().hex[:8]}"
  try:
    fs.makedirs(tmp)
    target = _leaves_to_write("target", params, tmp, inline_max_bytes, chunk_max_bytes)
    states = _leaves_to_write("state.param_states", param_states or {}, tmp, inline_max_bytes, chunk_max_bytes)
    payload = {"version": 3, "optimizer": {"target": target, "state": {"step": np.asarray(step, np.int32),
                                                                       "param_states": states}}}
    fs.write_bytes(f"{tmp}/checkpoint", msgpack.packb(payload, default=_ext_default, use_bin_type=True))
    arrays = {f"target/{k}": v for k, v in tree.flatten(params).items()}
    arrays.update({f"param_states/{k}": v for k, v in tree.flatten(param_states or {}).items()})
    checksums.write_manifest(f"{tmp}/checkpoint", {k: np.asarray(v) for k, v in arrays.items()})
    fs.fsync_tree(tmp)
    if fs.exists(final):  # overwrite=True: move the old one aside, then drop it
      fs.rename(final, f"{tmp}.old")
      fs.rename(tmp, final)
      fs.rmtree(f"{tmp}.old")
    else:
      fs.rename(tmp, final)
    fs.fsync_path(model_dir)
  except BaseException:
    fs.rmtree(tmp)
    raise
  return final
