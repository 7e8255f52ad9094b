"""The one filesystem layer: every read and write under MODEL_DIR and every checkpoint.

Local paths use `os` directly (fast, atomic renames, fsync). `gs://` paths go through
fsspec/gcsfs, and orbax (through etils.epath) and tensorstore are pointed at the same
Cloud Storage: `STORAGE_EMULATOR_HOST=http://host:port` (the standard variable) sends
all three to an emulator. TensorFlow's GFile is never used for gs:// (it ignores
emulators). On Cloud Storage a single-object write is atomic, so `atomic_write` is one
upload there; directories are prefixes, so `makedirs` is a no-op.

Every whole-file read, write, listing and rename on gs:// is retried on transient errors
(HTTP 408/429/5xx, dropped connections, tensorstore's UNAVAILABLE and "Malformed
StorageGeneration") with google-api-core's truncated exponential backoff, for at most
`RetryPolicy.deadline_s`, then fails with a `StorageError` naming the path. gcsfs and
tensorstore also retry each HTTP request themselves; this outer retry covers an operation
whose requests ran out of their retries or failed in a way they do not retry. Streams from
`open` are not retried. Local files honour the umask.
"""
from __future__ import annotations

import builtins
import contextlib
import dataclasses
import logging
import os
import re
import shutil
import tempfile
from typing import IO, Any, Callable, Iterator, TypeVar

_T = TypeVar("_T")

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


# ----- retrying transient object-store errors -----

@dataclasses.dataclass(frozen=True)
class RetryPolicy:
  """How long a failing storage operation is retried: sleeps drawn up to `initial_s`,
  multiplied by `multiplier` after each failure up to `maximum_s` (Cloud Storage's
  truncated exponential backoff with jitter), no new attempt once `deadline_s` would pass.
  Set from the environment: PTJ_STORAGE_RETRY_DEADLINE_S, PTJ_STORAGE_RETRY_INITIAL_S,
  PTJ_STORAGE_RETRY_MAXIMUM_S."""
  deadline_s: float = 120.0
  initial_s: float = 1.0
  maximum_s: float = 32.0
  multiplier: float = 2.0


_POLICY_ENV = {"deadline_s": "PTJ_STORAGE_RETRY_DEADLINE_S", "initial_s": "PTJ_STORAGE_RETRY_INITIAL_S",
               "maximum_s": "PTJ_STORAGE_RETRY_MAXIMUM_S"}


def retry_policy() -> RetryPolicy:
  """The policy now in force: RetryPolicy's defaults, overridden by the environment."""
  values = {}
  for field, name in _POLICY_ENV.items():
    text = os.environ.get(name, "").strip()
    if not text:
      continue
    try:
      values[field] = float(text)
    except ValueError:
      raise ValueError(f"{name}={text!r}: expected a number of seconds") from None
    if values[field] < 0 or (field == "initial_s" and values[field] == 0):
      raise ValueError(f"{name}={text!r}: expected a positive number of seconds")
  return RetryPolicy(**values)


class StorageError(OSError):
  """A storage operation that still failed when its retry deadline ran out."""


# Transient failures as the lower layers word them: tensorstore's status codes and HTTP
# codes (orbax passes them on as ValueError/RuntimeError text), and the emulator race seen
# at a first checkpoint save ("Malformed StorageGeneration").
_TRANSIENT_TEXT = re.compile(r"\b(UNAVAILABLE|DEADLINE_EXCEEDED|RESOURCE_EXHAUSTED)\b|Malformed StorageGeneration|"
                             r"HTTP response code: (408|429|5\d\d)\b|Connection reset")


def is_transient(error: BaseException) -> bool:
  """True for errors worth retrying: timeouts, dropped connections, throttling and server
  errors, found anywhere in the exception's cause chain. Missing files, refused
  permissions and bad requests are not."""
  seen = 0
  while error is not None and seen < 10:
    if isinstance(error, (FileNotFoundError, PermissionError, FileExistsError, IsADirectoryError,
                          NotADirectoryError)):
      return False
    if isinstance(error, (ConnectionError, TimeoutError)):
      return True
    if _gcs_transient(error) or _TRANSIENT_TEXT.search(str(error)):
      return True
    error, seen = error.__cause__ or error.__context__, seen + 1
  return False


def _gcs_transient(error: BaseException) -> bool:
  """gcsfs's own classification (HttpError 408/429/5xx, requests and aiohttp errors) and
  google-api-core's transient exception types; False where those are not installed."""
  try:
    from gcsfs import retry as gcsfs_retry  # pylint: disable=g-import-not-at-top
    from google.api_core import exceptions as api_exceptions  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  transient = (api_exceptions.TooManyRequests, api_exceptions.ServerError, api_exceptions.DeadlineExceeded)
  return isinstance(error, Exception) and (gcsfs_retry.is_retriable(error) or isinstance(error, transient))


def retrying(what: str, path: str, operation: Callable[[], _T]) -> _T:
  """`operation()`, retried on transient errors while `retry_policy()` allows when `path`
  is in Cloud Storage (local files are called once). `what` ('reading', 'writing', ...)
  and `path` name the operation in the log and in the final StorageError."""
  if not str(path).startswith("gs://"):
    return operation()
  from google.api_core import retry as api_retry  # pylint: disable=g-import-not-at-top  (comes with gcsfs)
  policy = retry_policy()
  attempts = []

  def on_error(error: Exception) -> None:
    attempts.append(error)
    logging.warning("storage: %s %s failed (%s: %s); retrying (attempt %d)", what, path, type(error).__name__,
                    _first_line(error), len(attempts) + 1)

  def give_up(errors: list[Exception], reason: Any, _timeout: float | None) -> tuple[Exception, Exception | None]:
    last = errors[-1] if errors else None
    if reason != api_retry.RetryFailureReason.TIMEOUT:
      return last, getattr(last, "__cause__", None)
    return StorageError(
        f"{what} {path} failed {len(errors)} times over the {policy.deadline_s:g} s retry deadline; last error: "
        f"{type(last).__name__}: {_first_line(last)}. Check the bucket and the network, or allow longer with "
        f"{_POLICY_ENV['deadline_s']}=SECONDS"), last

  sleeps = api_retry.exponential_sleep_generator(policy.initial_s, policy.maximum_s, policy.multiplier)
  return api_retry.retry_target(operation, is_transient, sleeps, timeout=policy.deadline_s, on_error=on_error,
                                exception_factory=give_up)


def _first_line(error: BaseException | None) -> str:
  text = str(error).strip()
  return text.splitlines()[0][:300] if text else ""


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
  if not is_remote(path):
    return os.path.isdir(path)
  return retrying("checking", path, lambda: _remote(path).isdir(path))


def isfile(path: Any) -> bool:
  path = os.fspath(path)
  if not is_remote(path):
    return os.path.isfile(path)
  return retrying("checking", path, lambda: _remote(path).isfile(path))


def exists(path: Any) -> bool:
  path = os.fspath(path)
  if not is_remote(path):
    return os.path.exists(path)
  return retrying("checking", path, lambda: _remote(path).exists(path))


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
  names = retrying("listing", path, lambda: _remote(path).ls(path, detail=False))
  return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in names)


def list_files(directory: Any) -> list[str]:
  """Every file under `directory`, as '/'-joined paths relative to it, sorted."""
  directory = os.fspath(directory).rstrip("/")
  if is_remote(directory):
    bare = directory.split("://", 1)[1]
    found = retrying("listing", directory, lambda: _remote(directory).find(directory))
    return sorted(p[len(bare) + 1:] for p in found)
  out = []
  for root, _, files in os.walk(directory):
    out += [os.path.relpath(os.path.join(root, f), directory).replace(os.sep, "/") for f in files]
  return sorted(out)


def open(path: Any, mode: str = "r", **kwargs) -> IO:  # pylint: disable=redefined-builtin
  """Open a local or gs:// file; remote writes become visible on close. A stream is not
  retried as a whole: prefer read_bytes / read_head / atomic_write, which are."""
  path = os.fspath(path)
  if is_remote(path):
    return _remote(path).open(path, mode, **kwargs)
  return builtins.open(path, mode, **kwargs)


def read_bytes(path: Any) -> bytes:
  path = os.fspath(path)
  if not is_remote(path):
    with builtins.open(path, "rb") as f:
      return f.read()
  return retrying("reading", path, lambda: _remote(path).cat_file(path))


def read_head(path: Any, size: int) -> bytes:
  """The first `size` bytes of a file (fewer if it is shorter), e.g. a format's magic."""
  path = os.fspath(path)
  if not is_remote(path):
    with builtins.open(path, "rb") as f:
      return f.read(size)
  return retrying("reading", path, lambda: _remote(path).cat_file(path, start=0, end=size))


def read_text(path: Any) -> str:
  return read_bytes(path).decode("utf-8")


def atomic_write(path: Any, data: bytes | str) -> str:
  """Write a whole file so a reader sees the old or the new content, never half.

  Local: a temporary file in the same folder, fsync, rename; the file gets the mode a
  plain `open` would (0666 less the umask), not mkstemp's 0600. gs://: one upload
  (objects appear whole when the upload completes), retried as a whole.
  """
  path = os.fspath(path)
  data = data.encode("utf-8") if isinstance(data, str) else data
  if is_remote(path):
    makedirs(dirname(path))

    def upload() -> None:
      with _remote(path).open(path, "wb") as f:
        f.write(data)
    retrying("writing", path, upload)
    return path
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.tmp-")
  try:
    os.fchmod(fd, 0o666 & ~umask())
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


def umask() -> int:
  """The process's umask, read without changing it: from /proc where there is one
  (setting and restoring it would race with other threads creating files), else by
  setting a restrictive one for the moment it takes to read it back."""
  try:
    with builtins.open("/proc/self/status") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except (OSError, ValueError, IndexError):
    pass
  mask = os.umask(0o077)
  os.umask(mask)
  return mask


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
    info = retrying("reading", path, lambda: _remote(path).info(path))
    return info.get("size"), info.get("generation") or info.get("updated") or info.get("mtime")
  st = os.stat(path)
  return st.st_size, st.st_mtime_ns


def rename(src: str, dst: str) -> None:
  """Atomic locally (same filesystem); on gs:// a copy then delete of each object."""
  if is_remote(src):  # copy + delete (gcsfs's mv first tries a moveTo API that emulators lack)
    gcs = _remote(src)
    recursive = isdir(src)
    retrying("copying", src, lambda: gcs.copy(src, dst, recursive=recursive))
    retrying("deleting", src, lambda: gcs.rm(src, recursive=True))
  else:
    os.rename(src, dst)


def remove(path: str) -> None:
  if is_remote(path):
    retrying("deleting", path, lambda: _remote(path).rm(path))
  else:
    os.remove(path)


# ----- exclusive creation (the run lock, trainer/run_lock.py) -----

def create_new(path: str, data: bytes) -> str | None:
  """Create a file only where none exists, so that of two writers exactly one succeeds; the
  other gets FileExistsError. Local: O_CREAT|O_EXCL. gs://: ifGenerationMatch=0 (enforced by
  Cloud Storage; gcp-storage-emulator ignores it). Returns the gs:// object's generation."""
  if not is_remote(path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    return None
  retrying("creating", path, lambda: _remote(path).pipe_file(path, data, mode="create"))
  return str(info(path).get("generation"))


def info(path: str) -> dict[str, Any]:
  """A gs:// object's metadata (generation, updated, size); FileNotFoundError when absent."""
  return retrying("reading metadata of", path, lambda: _remote(path).info(path))


def remove_if_generation(path: str, generation: str) -> None:
  """Delete a gs:// object only while it is still at `generation` (ifGenerationMatch):
  FileExistsError when it was replaced meanwhile, FileNotFoundError when it is gone."""
  bucket, _, key = path[len("gs://"):].partition("/")
  retrying("deleting", path, lambda: _remote(path).call("DELETE", "b/{}/o/{}", bucket, key,
                                                         ifGenerationMatch=str(generation)))


def rmtree(path: str) -> None:
  if not is_remote(path):
    shutil.rmtree(path, ignore_errors=True)
  elif exists(path):
    retrying("deleting", path, lambda: _remote(path).rm(path, recursive=True))


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
