"""Local-or-remote file operations for checkpoints.

Local paths use `os` directly (fast, and fsync is possible); anything with '://'
(gs://...) goes through `tf.io.gfile`, imported only then because importing
TensorFlow takes seconds.
"""
from __future__ import annotations

import os
import shutil
from typing import Any


def is_remote(path: str) -> bool:
  return "://" in path


def _gfile():
  from prompt_tuning_jax import quiet  # pylint: disable=g-import-not-at-top
  return quiet.import_tensorflow().io.gfile


def join(*parts: str) -> str:
  """Join with '/', for local paths and gs://bucket/... alike (os.path.join would keep an
  absolute later part and drop the bucket)."""
  return "/".join([parts[0].rstrip("/")] + [p.strip("/") for p in parts[1:]])


def absolute(path: str) -> str:
  return path if is_remote(path) else os.path.abspath(path)


def isdir(path: str) -> bool:
  return _gfile().isdir(path) if is_remote(path) else os.path.isdir(path)


def exists(path: str) -> bool:
  return _gfile().exists(path) if is_remote(path) else os.path.exists(path)


def makedirs(path: str) -> None:
  _gfile().makedirs(path) if is_remote(path) else os.makedirs(path)


def read_bytes(path: str) -> bytes:
  opener = _gfile().GFile if is_remote(path) else open
  with opener(path, "rb") as f:
    return f.read()


def write_bytes(path: str, data: bytes) -> None:
  """Write (and, locally, fsync) a file."""
  if is_remote(path):
    with _gfile().GFile(path, "wb") as f:
      f.write(data)
    return
  with open(path, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def stamp(path: str) -> tuple[int, int]:
  """(size, mtime) of a file, so caches notice a rewritten file."""
  if is_remote(path):
    st = _gfile().stat(path)
    return st.length, st.mtime_nsec
  st = os.stat(path)
  return st.st_size, st.st_mtime_ns


def rename(src: str, dst: str) -> None:
  """Atomic locally (same filesystem); on gs:// a copy then delete."""
  _gfile().rename(src, dst) if is_remote(src) else os.rename(src, dst)


def rmtree(path: str) -> None:
  if not is_remote(path):
    shutil.rmtree(path, ignore_errors=True)
  elif _gfile().exists(path):
    _gfile().rmtree(path)


def fsync_path(path: str) -> None:
  """fsync a local file or directory (no-op for remote paths)."""
  if is_remote(path):
    return
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def fsync_tree(directory: str) -> None:
  """fsync every file, then every directory (bottom-up), under a local directory."""
  if is_remote(directory):
    return
  for root, _, files in os.walk(directory, topdown=False):
    for name in files:
      fsync_path(os.path.join(root, name))
    fsync_path(root)


def kvstore_spec(directory: str) -> dict[str, Any]:
  """Tensorstore kvstore spec for a local (or file://) directory or a gs://bucket/path one."""
  if directory.startswith("gs://"):
    bucket, _, rest = directory[len("gs://"):].partition("/")
    return {"driver": "gcs", "bucket": bucket, "path": rest.rstrip("/") + "/"}
  if directory.startswith("file://"):
    directory = directory[len("file://"):]
  elif is_remote(directory):
    raise ValueError(f"unsupported checkpoint location {directory!r}: use a local path or gs://")
  return {"driver": "file", "path": os.path.abspath(directory) + "/"}
