"""One run per run folder: a lock in MODEL_DIR, taken before a run touches anything else.

A second run on the same folder is refused at once with one line naming the holder (host,
pid, since). The lock is `MODEL_DIR/run.lock`, a small JSON record {host, pid, since, token}.

Local disk (and NFS, where flock becomes an fcntl lock): the file is held with
`fcntl.flock` for the life of the run. The kernel drops the lock when the holder exits or is
killed, so liveness is the kernel's: a lock file that can be locked is stale (its holder is
gone), is taken over, and a warning names the run that left it. Release removes the file
while still holding the lock; a run that opened the removed file notices (its inode is no
longer the path's) and tries again.

gs:// (no locks in object storage): the lock object is created with the precondition
`ifGenerationMatch=0`, so of two runs exactly one creates it. The holder rewrites
`run.lock.heartbeat` every `HEARTBEAT_S`. Stale rule: the lock is stale when its holder ran
on this host and that pid is gone, or when its heartbeat (the lock itself, before the first
heartbeat) was last written more than `STALE_AFTER_S` ago by this host's clock. A stale lock
is deleted only at the generation that was judged stale (ifGenerationMatch), then created
anew. gcp-storage-emulator does not enforce preconditions, so after creating the object the
run reads it back and holds the lock only if it finds its own token there.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Iterator

from prompt_tuning_jax.checkpoints import fs

LOCK_NAME = "run.lock"
HEARTBEAT_S = 60.0
STALE_AFTER_S = 600.0


class RunLockedError(RuntimeError):
  """Another live run holds MODEL_DIR's lock."""


def _record() -> dict[str, Any]:
  return {"host": socket.gethostname(), "pid": os.getpid(),
          "since": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
          "token": uuid.uuid4().hex}


def _parse(data: bytes) -> dict[str, Any] | None:
  try:
    record = json.loads(data.decode("utf-8"))
  except (UnicodeDecodeError, ValueError):
    return None
  return record if isinstance(record, dict) else None


def describe(record: dict[str, Any] | None) -> str:
  if not record:
    return "a run that is just taking the lock"
  return f"host {record.get('host')}, pid {record.get('pid')}, since {record.get('since')}"


def _refusal(model_dir: str, path: str, record: dict[str, Any] | None) -> RunLockedError:
  return RunLockedError(f"{model_dir} is in use by another run ({describe(record)}; lock {path}): wait for it "
                        "to finish or stop it, or use another MODEL_DIR")


def pid_alive(pid: Any) -> bool:
  """Whether a process with this id runs on this host."""
  try:
    os.kill(int(pid), 0)
  except ProcessLookupError:
    return False
  except (PermissionError, ValueError, TypeError, OverflowError):
    return True  # someone else's process, or an id we cannot judge: assume alive
  return True


class RunLock:
  """The held lock of one run; `release()` (idempotent) gives it back."""

  def __init__(self, model_dir: str, *, heartbeat_s: float = HEARTBEAT_S, stale_after_s: float = STALE_AFTER_S):
    model_dir = str(model_dir)
    self.model_dir = fs.abspath(model_dir[len("file://"):] if model_dir.startswith("file://") else model_dir)
    self.path = fs.join(self.model_dir, LOCK_NAME)
    self.record = _record()
    self._heartbeat_s, self._stale_after_s = heartbeat_s, stale_after_s
    self._fd: int | None = None
    self._created_dirs: list[str] = []
    self._generation: str | None = None
    self._stop = threading.Event()
    self._stale_reason = ""
    self._thread: threading.Thread | None = None
    if fs.is_remote(self.model_dir):
      self._acquire_remote()
    else:
      self._acquire_local()

  # ----- local: flock
  def _acquire_local(self) -> None:
    self._created_dirs = _makedirs_tracked(self.model_dir)
    try:
      for _ in range(20):  # another run may be removing the file as we open it
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
          fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
          holder = _parse(os.pread(fd, 4096, 0))
          os.close(fd)
          if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise
          raise _refusal(self.model_dir, self.path, holder) from None
        try:
          same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
          same = False
        if not same:
          os.close(fd)
          continue
        previous = _parse(os.pread(fd, 4096, 0))
        if previous:
          logging.warning("taking over the stale run lock %s left by %s (that process is gone)", self.path,
                          describe(previous))
        data = json.dumps(self.record).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
        self._fd = fd
        return
      raise RunLockedError(f"could not take the run lock {self.path}: it kept being replaced")
    except BaseException:
      self._remove_created_dirs()
      raise

  # ----- gs://: an object created with a generation precondition
  def _acquire_remote(self) -> None:
    data = json.dumps(self.record).encode()
    for _ in range(5):
      found = self._read_remote(self.path)
      if found is not None:
        holder, generation = found
        if holder and holder.get("token") == self.record["token"]:
          self._generation = generation  # our own create, answered late (a retried request)
          break
        if not self._stale_remote(holder, generation):
          raise _refusal(self.model_dir, self.path, holder)
        logging.warning("taking over the stale run lock %s left by %s (%s)", self.path, describe(holder),
                        self._stale_reason)
        with contextlib.suppress(FileNotFoundError, FileExistsError):  # another run took it first
          fs.remove_if_generation(self.path, generation)
        continue
      try:
        self._generation = fs.create_new(self.path, data)
      except FileExistsError:
        continue  # another run created it between our read and our create: judge it again
      found = self._read_remote(self.path)  # the emulator ignores the precondition
      if found is None or (found[0] or {}).get("token") != self.record["token"]:
        raise _refusal(self.model_dir, self.path, found[0] if found else None)
      self._generation = found[1]
      break
    else:
      raise RunLockedError(f"could not take the run lock {self.path}: it kept changing hands")
    self._beat()
    self._thread = threading.Thread(target=self._heartbeat_loop, name="run-lock-heartbeat", daemon=True)
    self._thread.start()

  @staticmethod
  def _read_remote(path: str) -> tuple[dict[str, Any] | None, str] | None:
    """(record, generation) of a lock object, or None when there is none."""
    try:
      info = fs.info(path)
      return _parse(fs.read_bytes(path)), str(info.get("generation"))
    except FileNotFoundError:
      return None

  def _stale_remote(self, holder: dict[str, Any] | None, generation: str) -> bool:
    if holder and holder.get("host") == socket.gethostname() and not pid_alive(holder.get("pid")):
      self._stale_reason = f"pid {holder.get('pid')} is gone from this host"
      return True
    beat = _updated(self.path + ".heartbeat") if holder else None
    age = time.time() - (beat if beat is not None else (_updated(self.path) or time.time()))
    self._stale_reason = f"no heartbeat for {age:.0f} s > {self._stale_after_s:g} s"
    return age > self._stale_after_s

  def _beat(self) -> None:
    fs.atomic_write(self.path + ".heartbeat", json.dumps({"token": self.record["token"], "time": time.time()}))

  def _heartbeat_loop(self) -> None:
    while not self._stop.wait(self._heartbeat_s):
      try:
        self._beat()
      except Exception as e:  # pylint: disable=broad-except  (a missed beat is not fatal)
        logging.warning("run lock heartbeat %s.heartbeat failed: %s", self.path, e)

  # ----- release
  def release(self) -> None:
    """Give the lock back (also after an exception); removes MODEL_DIR again when the lock
    made it and the run left it empty (a refused run changes nothing on disk)."""
    if self._fd is not None:
      with contextlib.suppress(FileNotFoundError):
        os.unlink(self.path)  # while still locked: a waiting opener sees another inode
      os.close(self._fd)
      self._fd = None
      self._remove_created_dirs()
    if self._generation is not None:
      self._stop.set()
      if self._thread is not None:
        self._thread.join(timeout=30)
      with contextlib.suppress(FileNotFoundError, FileExistsError):
        fs.remove_if_generation(self.path, self._generation)
      with contextlib.suppress(FileNotFoundError):
        fs.remove(self.path + ".heartbeat")
      self._generation = None

  def _remove_created_dirs(self) -> None:
    for d in reversed(self._created_dirs):  # deepest last created: rmdir only when empty
      with contextlib.suppress(OSError):
        os.rmdir(d)
    self._created_dirs = []


def _makedirs_tracked(path: str) -> list[str]:
  """os.makedirs, returning the folders it created (outermost first)."""
  missing, p = [], path
  while not os.path.isdir(p):
    missing.append(p)
    parent = os.path.dirname(p)
    if parent == p:
      break
    p = parent
  missing.reverse()
  for d in missing:
    with contextlib.suppress(FileExistsError):
      os.mkdir(d)
  return missing


def _updated(path: str) -> float | None:
  """An object's last write time (server clock) in seconds since the epoch, or None."""
  try:
    info = fs.info(path)
  except FileNotFoundError:
    return None
  value = info.get("updated") or info.get("mtime")
  if isinstance(value, datetime.datetime):
    return value.timestamp()
  if isinstance(value, str):
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
  return float(value) if value is not None else None


_held: dict[str, list] = {}  # lock path -> [RunLock, holds]: this process's own locks
_held_guard = threading.Lock()


@contextlib.contextmanager
def hold(model_dir: str, **kwargs) -> Iterator[RunLock]:
  """The run lock of `model_dir` for the duration of the block, released on any exit.
  Re-entrant within a process: the train command takes it before its data checks (so a
  second run is refused in seconds), `loop.train` takes it again inside."""
  key = fs.join(fs.abspath(str(model_dir)), LOCK_NAME)
  with _held_guard:
    entry = _held.get(key)
    if entry is None:
      entry = _held[key] = [RunLock(model_dir, **kwargs), 0]
    entry[1] += 1
  try:
    yield entry[0]
  finally:
    with _held_guard:
      entry[1] -= 1
      if entry[1] == 0:
        del _held[key]
        entry[0].release()
