"""The one JSONL reader: one JSON object per line, errors naming `file:line`.

Line numbers are physical (blank lines count), so an error points at the line an
editor shows. Every reader of user JSONL (SuperGLUE and MRQA files, infer and score inputs)
goes through `read_jsonl`, so bad JSON, a non-object line, bytes that are not UTF-8
and an empty file are all refused the same way, in seconds, before any pipeline is built.
"""
from __future__ import annotations

import gzip
import json
import os
from typing import Any, Iterator, Mapping


class JsonlError(ValueError):
  """A JSONL file cannot be read as one JSON object per line (message names file:line)."""


def iter_jsonl(path: str | os.PathLike, *, error: type[Exception] = JsonlError) -> Iterator[tuple[int, dict]]:
  """Yields (physical line number, object) for each non-blank line of `path`.

  Raises `error` (JsonlError unless told) naming `path:line` for non-UTF-8 bytes, bad
  JSON or a line that is not a JSON object, and FileNotFoundError for a missing file.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"JSONL file not found: {path}")
  with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:  # .jsonl.gz too (MRQA)
    for lineno, raw in enumerate(f, start=1):
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        raise error(f"{path}:{lineno}: not UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})") from None
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise error(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
      if not isinstance(row, dict):
        raise error(f"{path}:{lineno}: expected a JSON object, found {type(row).__name__}")
      yield lineno, row


def read_jsonl(path: str | os.PathLike, *, error: type[Exception] = JsonlError) -> list[tuple[int, dict]]:
  """All (line number, object) pairs of `path`; an empty file (no object) is an error."""
  rows = list(iter_jsonl(path, error=error))
  if not rows:
    raise error(f"{os.fspath(path)}: empty JSONL file (no JSON object on any line)")
  return rows


def require_str(row: Mapping[str, Any], key: str, where: str, *, error: type[Exception] = JsonlError) -> str:
  """row[key] when it is a string; else `error` naming `where` (file:line) and the key."""
  if key not in row:
    raise error(f"{where}: no field {key!r} (found {sorted(row)})")
  value = row[key]
  if not isinstance(value, str):
    raise error(f"{where}: field {key!r} must be a string, found {type(value).__name__} {value!r:.40}")
  return value
