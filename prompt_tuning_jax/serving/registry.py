"""The prompt registry: named trained prompts in a folder (local or gs://), each holding one
row of a prompt bank [capacity, P, d] that every batch indexes per row.

A request pins its prompt's row while it is queued or running; a deleted prompt's name goes
at once, its row is reused only after the last pin is released, so a DELETE (or a POST that
re-registers a name) never changes a row an in-flight batch reads. The capacity is a power
of two and grows by doubling only when full, so adding prompts keeps the compiled shapes.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
import threading
from typing import Callable

import numpy as np

from prompt_tuning_jax.checkpoints import fs
from prompt_tuning_jax.prompt import NUMPY_PROMPT_FILE
from prompt_tuning_jax.prompt import files as prompt_files

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# Entry suffixes stripped for the name: `rte.npy` is `rte`.
_SUFFIXES = (".npy",)


class RegistryError(ValueError):
  """A registry request that cannot be done; `status` is the HTTP status that says why."""

  def __init__(self, message: str, status: int = 400):
    super().__init__(message)
    self.status = status


def check_name(name: str, what: str = "prompt") -> str:
  """A prompt name: letters, digits, '_', '.', '-' (no '/', no '..'): never a path."""
  if not isinstance(name, str) or not NAME_PATTERN.match(name) or ".." in name:
    raise RegistryError(f"{what} name {name!r:.80} is not allowed: use letters, digits, '_', '.', '-' "
                        "(at most 128, no '/' or '..')")
  return name


def entry_name(entry: str) -> str:
  """A registry entry's prompt name: its file or folder name without the extension."""
  base = entry.rstrip("/").rsplit("/", 1)[-1]
  for suffix in _SUFFIXES:
    if base.endswith(suffix) and len(base) > len(suffix):
      return base[:-len(suffix)]
  return base


def resolve_entry(path: str) -> str:
  """The prompt file `load_prompt` reads for one registry entry, whatever `export` or a
  training run wrote there: a .npy (or suffix-less numpy checkpoint) file, a PEFT adapter
  folder, an export or run folder (its prompt.npy, else its latest numpy checkpoint), or a
  numpy_checkpoints/checkpoint_<step> folder. Raises ValueError naming the path otherwise."""
  if not fs.isdir(path):
    return path
  if fs.isfile(fs.join(path, prompt_files.PEFT_CONFIG_FILE)):
    return path
  if fs.isfile(fs.join(path, "prompt.npy")):
    return fs.join(path, "prompt.npy")
  if fs.isfile(fs.join(path, NUMPY_PROMPT_FILE)):
    return fs.join(path, NUMPY_PROMPT_FILE)
  checkpoints = fs.join(path, prompt_files.NUMPY_CHECKPOINTS_DIR)
  if fs.isdir(checkpoints):
    steps = [int(n.split("_", 1)[1]) for n in fs.listdir(checkpoints) if re.fullmatch(r"checkpoint_\d+", n)]
    if steps:
      return str(prompt_files.numpy_checkpoint_path(path, max(steps)))
  if fs.isfile(fs.join(path, "peft", prompt_files.PEFT_CONFIG_FILE)):
    return fs.join(path, "peft")
  raise ValueError(f"{path}: no prompt found (expected a .npy file, a PEFT adapter folder, an export or run "
                   f"folder with prompt.npy or {prompt_files.NUMPY_CHECKPOINTS_DIR}/)")


@dataclasses.dataclass
class _Entry:
  name: str
  path: str   # what was loaded (for GET /v1/prompts)
  row: int    # its bank row


class PromptRegistry:
  """Named prompts [P, d] in a host bank [capacity, P, d]; thread-safe.

  `on_bank_change(bank)` is called (under the lock) with the new host bank whenever rows
  change or the capacity grows; the engine mirrors it onto the device.
  """

  def __init__(self, directory: str, *, emb_dim: int, prompt_length: int | None = None, capacity: int = 16):
    self.directory = directory.rstrip("/") if fs.is_remote(directory) else os.path.realpath(directory)
    self.emb_dim = emb_dim
    self.prompt_length = prompt_length
    self._capacity = max(2, 1 << max(0, capacity - 1).bit_length())
    self._bank: np.ndarray | None = None
    self._entries: dict[str, _Entry] = {}
    self._pins: dict[int, int] = {}     # row -> requests holding it
    self._retired: set[int] = set()     # rows of deleted/replaced prompts still pinned
    self._lock = threading.RLock()
    self.on_bank_change: Callable[[np.ndarray], None] | None = None

  # ----- loading
  def scan(self) -> tuple[list[str], list[str]]:
    """Register every entry of the folder -> (loaded names, skipped 'entry: why' lines).
    A prompt whose width is not the backbone's is an error naming the file (ValueError)."""
    if not fs.isdir(self.directory):
      raise ValueError(f"--prompt_dir={self.directory}: not a folder")
    loaded, skipped = [], []
    for entry in fs.listdir(self.directory):
      if entry.startswith(".") or entry.endswith((".json", ".md", ".txt")):
        continue
      name = entry_name(entry)
      try:
        check_name(name)
        path = resolve_entry(fs.join(self.directory, entry))
      except (ValueError, FileNotFoundError) as e:
        skipped.append(f"{entry}: {e}")
        continue
      self.add(name, path)
      loaded.append(name)
    return loaded, skipped

  def inside(self, relative: str) -> str:
    """A path given to POST /v1/prompts -> its absolute location, refused unless it lies
    inside the registry folder (no absolute paths, no '..', symlinks resolved)."""
    if not isinstance(relative, str) or not relative or relative.startswith(("/", "\\")) or "://" in relative:
      raise RegistryError(f"path {relative!r:.120} must be relative to the registry folder")
    parts = re.split(r"[\\/]+", relative)
    if any(p in ("..", "") for p in parts[:-1]) or parts[-1] == "..":
      raise RegistryError(f"path {relative!r:.120} must stay inside the registry folder (no '..')")
    if fs.is_remote(self.directory):
      return fs.join(self.directory, *[p for p in parts if p not in ("", ".")])
    full = os.path.realpath(os.path.join(self.directory, relative))
    if os.path.commonpath([full, self.directory]) != self.directory:
      raise RegistryError(f"path {relative!r:.120} resolves outside the registry folder")
    return full

  def load(self, path: str) -> np.ndarray:
    """Read and check one prompt: float32 [P, d], width = the backbone's, length = the bank's."""
    prompt = prompt_files.load_prompt(resolve_entry(path))
    if prompt.shape[1] != self.emb_dim:
      raise ValueError(f"{path}: prompt width {prompt.shape[1]} does not match the backbone's "
                       f"emb_dim={self.emb_dim} (a prompt trained on another model size?)")
    if self.prompt_length is not None and prompt.shape[0] != self.prompt_length:
      raise ValueError(f"{path}: prompt length {prompt.shape[0]} differs from the bank's {self.prompt_length} "
                       "(one server serves one prompt length; start another for this one)")
    return prompt

  def add(self, name: str, path: str, prompt: np.ndarray | None = None) -> dict:
    """Register (or replace) `name` from `path`; -> its listing entry."""
    check_name(name)
    prompt = self.load(path) if prompt is None else prompt
    with self._lock:
      if self.prompt_length is None:
        self.prompt_length = prompt.shape[0]
      if prompt.shape[0] != self.prompt_length:
        raise ValueError(f"{path}: prompt length {prompt.shape[0]} differs from the bank's {self.prompt_length}")
      old = self._entries.get(name)
      row = self._free_row()
      bank = self._ensure_bank()
      bank[row] = prompt
      self._entries[name] = _Entry(name, str(path), row)
      if old is not None:
        self._release_row(old.row)
      self._changed()
      return self.describe(name)

  def remove(self, name: str) -> None:
    with self._lock:
      entry = self._entries.pop(name, None)
      if entry is None:
        raise RegistryError(self.unknown_message(name), status=404)
      self._release_row(entry.row)

  # ----- requests
  def pin(self, name: str) -> int:
    """The bank row of `name`, held until `unpin`; RegistryError(404) naming close names."""
    with self._lock:
      entry = self._entries.get(name)
      if entry is None:
        raise RegistryError(self.unknown_message(name), status=404)
      self._pins[entry.row] = self._pins.get(entry.row, 0) + 1
      return entry.row

  def unpin(self, row: int) -> None:
    with self._lock:
      left = self._pins.get(row, 0) - 1
      if left > 0:
        self._pins[row] = left
        return
      self._pins.pop(row, None)
      self._retired.discard(row)

  def unknown_message(self, name: str) -> str:
    close = difflib.get_close_matches(str(name), sorted(self._entries), n=3, cutoff=0.5)
    hint = f"; closest registered: {', '.join(close)}" if close else f"; registered: {', '.join(sorted(self._entries)[:10]) or '(none)'}"
    return f"unknown prompt {str(name)!r:.80}{hint}"

  # ----- views
  @property
  def capacity(self) -> int:
    return self._capacity

  def full(self) -> bool:
    """True when the next `add` doubles the capacity (the caller warms the new shapes first)."""
    with self._lock:
      used = {e.row for e in self._entries.values()} | set(self._pins) | self._retired
      return len(used) >= self._capacity

  def names(self) -> list[str]:
    with self._lock:
      return sorted(self._entries)

  def describe(self, name: str) -> dict:
    e = self._entries[name]
    return {"name": e.name, "path": e.path, "row": e.row, "shape": [self.prompt_length, self.emb_dim]}

  def listing(self) -> list[dict]:
    with self._lock:
      return [self.describe(n) for n in sorted(self._entries)]

  def bank(self) -> np.ndarray:
    with self._lock:
      return self._ensure_bank().copy()

  # ----- internals (lock held)
  def _ensure_bank(self) -> np.ndarray:
    if self._bank is None:
      self._bank = np.zeros((self._capacity, self.prompt_length, self.emb_dim), np.float32)
    return self._bank

  def _free_row(self) -> int:
    used = {e.row for e in self._entries.values()} | set(self._pins) | self._retired
    free = [r for r in range(self._capacity) if r not in used]
    if free:
      return free[0]
    row = self._capacity  # full: double the capacity (new compiled shapes; see Engine.grow)
    self._capacity *= 2
    if self._bank is not None:
      grown = np.zeros((self._capacity,) + self._bank.shape[1:], np.float32)
      grown[:self._bank.shape[0]] = self._bank
      self._bank = grown
    return row

  def _release_row(self, row: int) -> None:
    if self._pins.get(row):
      self._retired.add(row)  # still read by queued/in-flight rows: keep it until unpinned

  def _changed(self) -> None:
    if self.on_bank_change is not None:
      self.on_bank_change(self._bank)
