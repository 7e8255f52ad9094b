"""Bounded, named line reading for the text files users give (JSONL, TSV, `.jsonl.gz`).

Each line is read with `readline(MAX_ROW_BYTES + 1)`, so a file of one 100 MB line is
refused after reading 16 MiB instead of growing in memory; a gzip file that is cut or is
not gzip, bytes that are not UTF-8 and an over-long line are refused naming `file:line`
(physical lines, blank ones counted, as an editor shows them). A UTF-8 byte-order mark
at the start of the file (Windows editors write one) is dropped, not read as text.
"""
from __future__ import annotations

import contextlib
import csv
import gzip
import os
import zlib
from typing import Iterator

MAX_ROW_BYTES = 16 << 20  # 16 MiB a line, newline included; a SuperGLUE row is at most a few KB
UTF8_BOM = b"\xef\xbb\xbf"
GZIP_MAGIC = b"\x1f\x8b"
_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


class TextFileError(ValueError):
  """A text file cannot be read line by line (message names file:line)."""


def _open(path: str, error: type[Exception]):
  if not path.endswith(".gz"):
    return open(path, "rb")
  with open(path, "rb") as f:
    magic = f.read(2)
  if magic != GZIP_MAGIC:
    raise error(f"{path}: not a gzip file (it starts with {magic!r}, gzip starts with {GZIP_MAGIC!r}); a .gz file "
                "must be gzip-compressed")
  return gzip.open(path, "rb")


def iter_lines(path: str | os.PathLike, *, error: type[Exception] = TextFileError) -> Iterator[tuple[int, str]]:
  """Yields (physical line number, text with its line ending) of a local text file.

  Raises `error` naming `path:line` for a line over MAX_ROW_BYTES, bytes that are not
  UTF-8, and a damaged gzip stream (`.gz` files), and FileNotFoundError when the file
  is missing.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"file not found: {path}")
  if not os.path.isfile(path):
    raise error(f"{path}: not a regular file (a folder, FIFO or device); give a text file")
  lineno = 0
  try:
    with _open(path, error) as f:
      while True:
        raw = f.readline(MAX_ROW_BYTES + 1)
        if not raw:
          return
        lineno += 1
        if len(raw) > MAX_ROW_BYTES:
          raise error(f"{path}:{lineno}: line longer than {MAX_ROW_BYTES >> 20} MiB, the per-row limit "
                      "(prompt_tuning_jax.text.lines.MAX_ROW_BYTES); one row is one example, split or shorten it")
        if lineno == 1 and raw.startswith(UTF8_BOM):
          raw = raw[len(UTF8_BOM):]
        try:
          line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
          check_gzip(path, error=error)  # a damaged stream explains bad bytes better
          raise error(f"{path}:{lineno}: not UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})") from None
        yield lineno, line
  except _GZIP_ERRORS as e:
    raise error(f"{path}:{lineno + 1}: the gzip stream is damaged or cut ({type(e).__name__}: {e})") from None


def check_gzip(path: str, *, error: type[Exception] = TextFileError) -> None:
  """For a `.gz` file, read the whole stream (1 MiB at a time) and raise `error` naming
  the file when it is damaged or cut: a flipped bit can decompress to text that only
  the CRC at the end shows to be wrong. No-op for other files."""
  if not path.endswith(".gz"):
    return
  try:
    with gzip.open(path, "rb") as f:
      while f.read(1 << 20):
        pass
  except _GZIP_ERRORS as e:
    raise error(f"{path}: the gzip stream is damaged or cut ({type(e).__name__}: {e})") from None


@contextlib.contextmanager
def _csv_field_limit(limit: int):
  previous = csv.field_size_limit(limit)
  try:
    yield
  finally:
    csv.field_size_limit(previous)


def read_tsv(path: str | os.PathLike, *, error: type[Exception] = TextFileError) -> list[tuple[int, list[str]]]:
  """(physical line number, cells) of each row of a tab-separated file (csv quoting
  rules, as `csv.reader(delimiter='\\t')`), read through `iter_lines`."""
  path = os.fspath(path)
  reader = csv.reader((line for _, line in iter_lines(path, error=error)), delimiter="\t")
  rows = []
  with _csv_field_limit(MAX_ROW_BYTES):
    try:
      for cells in reader:
        rows.append((reader.line_num, cells))
    except csv.Error as e:
      raise error(f"{path}:{reader.line_num}: {e}") from None
  return rows
