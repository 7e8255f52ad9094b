"""The one filesystem layer: every read and write under MODEL_DIR and every checkpoint.

Local paths use `os` directly (fast, atomic renames, fsync). `gs://` paths go through
fsspec/gcsfs, and orbax (through etils.epath) and tensorstore are pointed at the same
Cloud Storage: `STORAGE_EMULATOR_HOST=http://host:port` (the standard variable) sends
all three to an emulator. TensorFlow's GFile is never used for gs:// (it ignores
emulators). On Cloud Storage a single-object write is atomic, so `atomic_write` is one
upload there; directories are prefixes, so `makedirs` is a no-op.
"""
from __future__ import annotations

import builtins
import contextlib
import os
import shutil
import tempfile
from typing import IO, Any, Iterator

os.environ.setdefault("EPATH_USE_TF", "false")  # orbax's epath -> fsspec/gcsfs, as here


def emulator_host() -> str | None:
  """`STORAGE_EMULATOR_HOST` as a URL (scheme added when missing), or None."""
  host = os.environ.get("STORAGE_EMULATOR_HOST", "").strip()
  if not host:
    return None
  return host if "://" in host else f"http://{host}"


def configure_emulator() -> None:
  """Point tensorstore and gcsfs at `STORAGE_EMULATOR_HOST` (no-op without it)."""
  host = emulator_host()
  if host is None:
    return
  os.environ["STORAGE_EMULATOR_HOST"] = host
  os.environ.setdefault("TENSORSTORE_GCS_HTTP_URL", host)  # tensorstore's own endpoint setting
  os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")  # no gRPC control plane there
  import fsspec  # pylint: disable=g-import-not-at-top
  for cls in fsspec.registry.values():  # instances made before keep the old endpoint
    cls.clear_instance_cache()


configure_emulator()


def is_remote(path: str) -> bool:
  return "://" in str(path)


def _check_scheme(path: str) -> None:
  if is_remote(path) and not str(path).startswith(("gs://", "file://")):
    raise ValueError(f"unsupported location {path!r}: use a local path or gs://bucket/...")


def _gcs():
  try:
    import gcsfs  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("gs:// paths need gcsfs: pip install 'prompt_tuning_jax[gcs]'") from e
  token = "anon" if emulator_host() else None
  return gcsfs.GCSFileSystem(token=token, use_listings_cache=False)  # other writers: orbax, peers


def _remote(path: str):
  """The fsspec filesystem of a URL: gcsfs for gs://, fsspec's local one for file:// (tests)."""
  _check_scheme(path)
  if str(path).startswith("file://"):
    import fsspec  # pylint: disable=g-import-not-at-top
    return fsspec.filesystem("file")
  return _gcs()


def join(*parts: Any) -> str:
  """Path join that keeps `gs://bucket/...` intact (pathlib would collapse the '//')."""
  parts = [os.fspath(p) for p in parts]
  if is_remote(parts[0]):
    head = parts[0].rstrip("/")
    return "/".join([head] + [p.strip("/") for p in parts[1:] if p])
  return os.path.join(*parts)


def abspath(path: Any) -> str:
  path = os.fspath(path)
  return path if is_remote(path) else os.path.abspath(path)


def dirname(path: str) -> str:
  return path.rstrip("/").rsplit("/", 1)[0] if is_remote(path) else os.path.dirname(path)


def isdir(path: Any) -> bool:
  path = os.fspath(path)
  return _remote(path).isdir(path) if is_remote(path) else os.path.isdir(path)


def isfile(path: Any) -> bool:
  path = os.fspath(path)
  return _remote(path).isfile(path) if is_remote(path) else os.path.isfile(path)


def exists(path: Any) -> bool:
  path = os.fspath(path)
  return _remote(path).exists(path) if is_remote(path) else os.path.exists(path)


def makedirs(path: Any, exist_ok: bool = True) -> None:
  """Local: os.makedirs. gs://: nothing to do (a folder is a name prefix)."""
  path = os.fspath(path)
  if is_remote(path):
    if path.startswith("file://"):
      _remote(path).makedirs(path, exist_ok=True)
  else:
    os.makedirs(path, exist_ok=exist_ok)


def listdir(path: Any) -> list[str]:
  """Names (not paths) directly under a directory, sorted."""
  path = os.fspath(path)
  if not is_remote(path):
    return sorted(os.listdir(path))
  return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in _remote(path).ls(path, detail=False))


def list_files(directory: Any) -> list[str]:
  """Every file under `directory`, as '/'-joined paths relative to it, sorted."""
  directory = os.fspath(directory).rstrip("/")
  if is_remote(directory):
    bare = directory.split("://", 1)[1]
    return sorted(p[len(bare) + 1:] for p in _remote(directory).find(directory))
  out = []
  for root, _, files in os.walk(directory):
    out += [os.path.relpath(os.path.join(root, f), directory).replace(os.sep, "/") for f in files]
  return sorted(out)


def open(path: Any, mode: str = "r", **kwargs) -> IO:  # pylint: disable=redefined-builtin
  """Open a local or gs:// file; remote writes become visible on close."""
  path = os.fspath(path)
  if is_remote(path):
    return _remote(path).open(path, mode, **kwargs)
  return builtins.open(path, mode, **kwargs)


def read_bytes(path: Any) -> bytes:
  with open(path, "rb") as f:
    return f.read()


def read_text(path: Any) -> str:
  return read_bytes(path).decode("utf-8")


def atomic_write(path: Any, data: bytes | str) -> str:
  """Write a whole file so a reader sees the old or the new content, never half.

  Local: a temporary file in the same folder, fsync, rename. gs://: one upload
  (objects appear whole when the upload completes).
  """
  path = os.fspath(path)
  data = data.encode("utf-8") if isinstance(data, str) else data
  if is_remote(path):
    makedirs(dirname(path))
    with _remote(path).open(path, "wb") as f:
      f.write(data)
    return path
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.tmp-")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  return path


def write_bytes(path: Any, data: bytes) -> None:
  """Write (and, locally, fsync) a file."""
  path = os.fspath(path)
  if is_remote(path):
    atomic_write(path, data)
    return
  with builtins.open(path, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def stamp(path: str) -> tuple[Any, Any]:
  """(size, mtime or generation) of a file, so caches notice a rewritten file."""
  if is_remote(path):
    info = _remote(path).info(path)
    return info.get("size"), info.get("generation") or info.get("updated") or info.get("mtime")
  st = os.stat(path)
  return st.st_size, st.st_mtime_ns


def rename(src: str, dst: str) -> None:
  """Atomic locally (same filesystem); on gs:// a copy then delete of each object."""
  if is_remote(src):  # copy + delete (gcsfs's mv first tries a moveTo API that emulators lack)
    gcs = _remote(src)
    gcs.copy(src, dst, recursive=gcs.isdir(src))
    gcs.rm(src, recursive=True)
  else:
    os.rename(src, dst)


def remove(path: str) -> None:
  if is_remote(path):
    _remote(path).rm(path)
  else:
    os.remove(path)


def rmtree(path: str) -> None:
  if not is_remote(path):
    shutil.rmtree(path, ignore_errors=True)
  elif exists(path):
    _remote(path).rm(path, recursive=True)


def upload_tree(local_dir: str, remote_dir: str) -> None:
  """Copy every file under a local folder to the same relative names under `remote_dir`."""
  for root, _, files in os.walk(local_dir):
    for name in files:
      src = os.path.join(root, name)
      rel = os.path.relpath(src, local_dir).replace(os.sep, "/")
      with builtins.open(src, "rb") as f:
        atomic_write(join(remote_dir, rel), f.read())


@contextlib.contextmanager
def local_staging(path: str) -> Iterator[str]:
  """A local folder standing in for `path`: itself when local; a temporary folder,
  uploaded to `path` on exit, when remote (for writers that only know local disk)."""
  if not is_remote(path):
    os.makedirs(path, exist_ok=True)
    yield path
    return
  tmp = tempfile.mkdtemp(prefix="ptj-staging-")
  try:
    yield tmp
    upload_tree(tmp, path)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


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
