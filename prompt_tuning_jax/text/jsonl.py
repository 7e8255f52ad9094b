"""The one JSONL reader: one JSON object per line, errors naming `file:line`.

Line numbers are physical (blank lines count), so an error points at the line an
editor shows. Every reader of user JSONL (SuperGLUE and MRQA files, infer and score inputs)
goes through `read_jsonl`, so bad JSON, a non-object line, bytes that are not UTF-8,
an empty file, and the bounds below are all refused the same way, in seconds, before
any pipeline is built. Lines are read by `text.lines.iter_lines`: at most
`MAX_ROW_BYTES` (16 MiB) a line, `.gz` read as gzip, a leading byte-order mark dropped.
Parsed rows are bounded too: nesting at most `MAX_JSON_DEPTH` levels (checked before
parsing, so 100k nested brackets are no RecursionError), no lone UTF-16 surrogate in any
string (`"\\ud800"` is valid JSON but not text; TensorFlow and the tokenizer reject it
with errors that name nothing), no integer longer than Python reads (4300 digits).
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Iterator, Mapping

import numpy as np

from prompt_tuning_jax.text.lines import MAX_ROW_BYTES, check_gzip, iter_lines

__all__ = ["JsonlError", "MAX_ROW_BYTES", "MAX_JSON_DEPTH", "iter_jsonl", "read_jsonl", "parse_row", "require_str"]

MAX_JSON_DEPTH = 100  # a SuperGLUE row nests at most 5 levels (MultiRC passage/questions/answers)
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF][0-9a-fA-F]{2}")
_DIGITS = re.compile(r"value has (\d+) digits")


class JsonlError(ValueError):
  """A JSONL file cannot be read as one JSON object per line (message names file:line)."""


def _depth(line: str) -> int:
  """Deepest bracket nesting of a JSON text, strings left out; linear, no recursion."""
  bare = np.frombuffer(_STRING.sub('""', line).encode("utf-8"), np.uint8)
  step = np.isin(bare, (ord("["), ord("{"))).astype(np.int64) - np.isin(bare, (ord("]"), ord("}")))
  return int(np.cumsum(step).max(initial=0))


def _lone_surrogate(row: Any) -> tuple[str, str] | None:
  """(key path, offending string) of the first string, key or value, holding a lone surrogate."""
  stack: list[tuple[str, Any]] = [("", row)]
  while stack:
    where, value = stack.pop()
    if isinstance(value, dict):
      for key, item in value.items():
        stack.append((f"{where}.{key}" if where else str(key), key))
        stack.append((f"{where}.{key}" if where else str(key), item))
    elif isinstance(value, list):
      stack.extend((f"{where}[{i}]", item) for i, item in enumerate(value))
    elif isinstance(value, str):
      try:
        value.encode("utf-8")
      except UnicodeEncodeError:
        return where, value
  return None


def parse_row(line: str, where: str, *, error: type[Exception] = JsonlError) -> dict:
  """One JSONL line -> its object; `error` naming `where` (file:line) for anything else."""
  if line.count("[") + line.count("{") > MAX_JSON_DEPTH and _depth(line) > MAX_JSON_DEPTH:
    raise error(f"{where}: JSON nested deeper than {MAX_JSON_DEPTH} levels (found {_depth(line)}); rows are flat "
                "objects of a few levels")
  try:
    row = json.loads(line)
  except json.JSONDecodeError as e:
    raise error(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
  except ValueError as e:  # int('9' * 5000): past sys.get_int_max_str_digits()
    digits = _DIGITS.search(str(e))
    raise error(f"{where}: a number with {digits.group(1) if digits else 'too many'} digits, more than can be "
                "read as an integer") from None
  except RecursionError:
    raise error(f"{where}: JSON nested too deeply to parse") from None
  if not isinstance(row, dict):
    raise error(f"{where}: expected a JSON object, found {type(row).__name__}")
  if _SURROGATE_ESCAPE.search(line):
    lone = _lone_surrogate(row)
    if lone is not None:
      key, text = lone
      raise error(f"{where}: field {key!r} holds a lone UTF-16 surrogate ({text!r:.60}), which is not text; "
                  "an escape like \\ud83d must be followed by its pair (\\ude00)")
  return row


def iter_jsonl(path: str | os.PathLike, *, error: type[Exception] = JsonlError) -> Iterator[tuple[int, dict]]:
  """Yields (physical line number, object) for each non-blank line of `path`.

  Raises `error` (JsonlError unless told) naming `path:line` for anything `parse_row`
  or `iter_lines` refuses, and FileNotFoundError for a missing file.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"JSONL file not found: {path}")
  for lineno, line in iter_lines(path, error=error):
    if line.strip():
      try:
        row = parse_row(line, f"{path}:{lineno}", error=error)
      except error:
        check_gzip(path, error=error)  # in a .gz file, a damaged stream is the better answer
        raise
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
