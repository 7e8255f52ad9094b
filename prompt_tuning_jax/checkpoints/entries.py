"""Checkpoints are read only from regular files inside them.

A loader that opens whatever a path names can be led anywhere: a symlink to a file
outside the checkpoint, to /dev/zero (endless zeros: an unbounded read), a FIFO (the
open blocks forever), or a dangling link, which is what an unfetched git-annex file
looks like (tensorstore reads a dangling chunk as a missing chunk, i.e. zeros). So
every local entry a loader opens is first resolved (`os.path.realpath`, which follows
every link in the path, not the text of it) and must be a regular, readable file (or
folder) inside the checkpoint's root. The root is the checkpoint folder itself, except
for a Hugging Face hub cache snapshot (`models--org--name/snapshots/<rev>/<file>`
linking to `../../blobs/<sha>`), whose root is its model's cache folder
`models--org--name/`. gs:// objects are not links and are not checked here.
"""
from __future__ import annotations

import os
import stat
from typing import Iterator

from prompt_tuning_jax.checkpoints import fs
from prompt_tuning_jax.checkpoints.validation import CheckpointCorruptError

HF_SNAPSHOTS, HF_BLOBS = "snapshots", "blobs"
LFS_POINTER = b"version https://git-lfs.github.com/spec/"  # what an unfetched Git LFS file holds
_KINDS = ((stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISCHR, "character device"),
          (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "directory"),
          (stat.S_ISREG, "regular file"))


class CheckpointEntryError(CheckpointCorruptError):
  """An entry of a checkpoint is not a regular file (or folder) inside it; the message names it."""


def checkpoint_root(directory: str | os.PathLike) -> str:
  """The folder every entry of the checkpoint in `directory` must resolve into:
  the real path of `directory`, or for a Hugging Face cache snapshot
  (`.../models--org--name/snapshots/<rev>`, beside a `blobs/` folder) the model's
  cache folder `.../models--org--name`."""
  directory = os.fspath(directory)
  if fs.is_remote(directory):
    return directory.rstrip("/")
  real = os.path.realpath(directory)
  parent = os.path.dirname(real)
  if os.path.basename(parent) == HF_SNAPSHOTS and os.path.isdir(os.path.join(os.path.dirname(parent), HF_BLOBS)):
    return os.path.dirname(parent)
  return real


def _inside(real: str, root: str) -> bool:
  return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def _kind(mode: int) -> str:
  return next((name for test, name in _KINDS if test(mode)), f"file of mode {stat.S_IFMT(mode):o}")


def problem(path: str | os.PathLike, root: str, *, folder: bool = False) -> tuple[str, bool] | None:
  """What is wrong with `path` as an entry of the checkpoint rooted at `root`, or None.

  Returns (reason, missing): `missing` is True when the entry has no readable content
  (dangling link, unreadable), which a zarr reader counts as a missing chunk.
  """
  path = os.fspath(path)
  if fs.is_remote(path):
    return None
  try:
    st = os.lstat(path)
  except FileNotFoundError:
    return "does not exist", True
  real = os.path.realpath(path)
  if not os.path.exists(real):
    target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else real
    return (f"is a dangling symlink to {target!r}: nothing is there (an unfetched git-annex file looks like "
            "this; fetch its content, e.g. `git annex get`, or copy the real file in)"), True
  if not _inside(real, root):
    return (f"resolves to {real}, which leaves the checkpoint {root}; only files inside it are read "
            "(copy the file in, e.g. `cp -L`)"), False
  mode = os.stat(real).st_mode
  if not (stat.S_ISDIR(mode) if folder else stat.S_ISREG(mode)):
    want = "folder" if folder else "regular file"
    via = f" (through the symlink to {real})" if real != os.path.abspath(path) else ""
    return f"is a {_kind(mode)}{via}, not a {want}", False
  if not os.access(real, os.R_OK | (os.X_OK if folder else 0)):
    return "is not readable (permission denied)", True
  return None


def lfs_pointer_hint(head: bytes) -> str:
  """A sentence for an error about a file whose first bytes are a Git LFS pointer, else ''."""
  if head.startswith(LFS_POINTER):
    return (" It is a Git LFS pointer, not the file: fetch the content (`git lfs pull`) and load again.")
  return ""


def check(path: str | os.PathLike, root: str, what: str, *, folder: bool = False) -> None:
  """Raise naming `what path` unless it is a regular file (or folder) inside `root`;
  FileNotFoundError when nothing at all is there."""
  found = problem(path, root, folder=folder)
  if found is None:
    return
  reason, _ = found
  if reason == "does not exist":
    raise FileNotFoundError(f"{what} {os.fspath(path)} does not exist")
  raise CheckpointEntryError(f"{what} {os.fspath(path)} {reason}")


def read_bytes(path: str | os.PathLike, root: str, what: str, *, max_bytes: int) -> bytes:
  """The content of a small checked file (JSON metadata), refusing one over max_bytes."""
  path = os.fspath(path)
  check(path, root, what)
  size, _ = fs.stamp(path)
  if size is not None and size > max_bytes:
    raise CheckpointEntryError(f"{what} {path} holds {size} bytes, more than the {max_bytes} a file of this kind "
                               "may hold")
  with fs.open(path, "rb") as f:
    data = f.read(max_bytes + 1)
  if len(data) > max_bytes:
    raise CheckpointEntryError(f"{what} {path} holds more than the {max_bytes} bytes a file of this kind may hold")
  return data


def walk(directory: str, root: str) -> Iterator[tuple[str, str]]:
  """(name relative to `directory` with '/' separators, path) of every entry that is not
  a folder, links included, descending into folders (linked ones too, when they resolve
  inside `root`, each real folder once). A linked folder that leaves `root` or dangles is
  refused naming it; what the entries themselves are is for `problem` to say."""
  seen: set[str] = set()
  stack = [("", directory)]
  while stack:
    prefix, folder = stack.pop()
    real = os.path.realpath(folder)
    if real in seen:
      continue
    seen.add(real)
    with os.scandir(folder) as it:
      for entry in it:
        name = f"{prefix}{entry.name}"
        if entry.is_dir(follow_symlinks=False):
          stack.append((f"{name}/", entry.path))
        elif entry.is_symlink() and os.path.isdir(entry.path):
          check(entry.path, root, "linked folder", folder=True)
          stack.append((f"{name}/", entry.path))
        else:
          yield name, entry.path
