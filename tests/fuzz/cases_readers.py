"""Fuzz cases, part 5: bounded readers. `.npy` headers that declare more (or less)
than the file holds, gzip that is cut or is not gzip, JSON nested too deep, lone
surrogates, integers TensorFlow cannot hold, rows over the per-row limit, and a
byte-order mark at the start of a JSONL or TSV file (ignored)."""
from __future__ import annotations

import gzip
import io
import json
import os
import pathlib

import numpy as np
from cases import PROMPT, Loaded, Refused, case
from cases_data import RTE, WIC, _superglue, _write

from prompt_tuning_jax import infer, score
from prompt_tuning_jax.prompt import files as prompt_files
from prompt_tuning_jax.text import jsonl

_BOM = b"\xef\xbb\xbf"


# ----------------------------------------------------------------------------- .npy
def _npy_with_header(d: pathlib.Path, shape, descr: str = "<f4", data: bytes = b"\0" * 64) -> pathlib.Path:
  buf = io.BytesIO()
  np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
  path = d / "prompt.npy"
  path.write_bytes(buf.getvalue() + data)
  return path


def _load(path: pathlib.Path):
  return lambda: prompt_files.load_prompt(path)


@case("prompt .npy: header declares shape (2^40, 2^20)")
def _(d):
  path = _npy_with_header(d, (1 << 40, 1 << 20))
  return _load(path), Refused([str(path), "(1099511627776, 1048576)"])


@case("prompt .npy: header declares shape (2^62, 2^62) (byte count overflows int64)")
def _(d):
  path = _npy_with_header(d, (1 << 62, 1 << 62))
  return _load(path), Refused([str(path), "shape"])


@case("prompt .npy: header declares one row more than the data")
def _(d):
  path = _npy_with_header(d, (4, 8), data=PROMPT.tobytes())
  return _load(path), Refused([str(path), "(4, 8)"])


@case("prompt .npy: bytes after the data")
def _(d):
  path = prompt_files.save_npy(d / "p.npy", PROMPT)
  path.write_bytes(path.read_bytes() + b"\0" * 16)
  return _load(path), Refused([str(path), "bytes"])


@case("prompt .npy: a FIFO")
def _(d):
  path = d / "p.npy"
  os.mkfifo(path)
  return _load(path), Refused([str(path)])


@case("prompt .npy: version 2.0 header")
def _(d):
  buf = io.BytesIO()
  np.lib.format.write_array(buf, PROMPT, version=(2, 0))
  path = d / "p.npy"
  path.write_bytes(buf.getvalue())
  return _load(path), Loaded(PROMPT)


# ----------------------------------------------------------------------------- gzip
_GZ_ROWS = b'{"header": {"dataset": "SQuAD"}}\n' + b'{"context": "c", "qas": []}\n' * 50


def _gz(d: pathlib.Path, data: bytes) -> pathlib.Path:
  path = d / "SQuAD.jsonl.gz"
  path.write_bytes(data)
  return path


def _read(path: pathlib.Path):
  return lambda: [row for _, row in jsonl.read_jsonl(path)]


@case("jsonl.gz: written by gzip")
def _(d):
  return _read(_gz(d, gzip.compress(_GZ_ROWS))), Loaded([json.loads(l) for l in _GZ_ROWS.splitlines()])


for _label, _mangle in (("truncated", lambda b: b[: len(b) // 2]), ("plain text named .gz", lambda b: _GZ_ROWS),
                        ("empty", lambda b: b""), ("one flipped byte in the stream", lambda b: b[:20] + bytes(
                            [b[20] ^ 0xFF]) + b[21:]), ("CRC trailer damaged", lambda b: b[:-8] + b"\0" * 8)):
  @case(f"jsonl.gz: {_label}")
  def _(d, _mangle=_mangle):
    path = _gz(d, _mangle(gzip.compress(_GZ_ROWS)))
    return _read(path), Refused([str(path), "gzip"])


# ----------------------------------------------------------------------------- SuperGLUE rows
_DEEP = "[" * 100_000 + "]" * 100_000
_SG_BAD = {
    "JSON nested 100k deep": ("rte", json.dumps(RTE)[:-1] + ', "x": ' + _DEEP + "}", "nested"),
    "JSON nested 101 deep inside a string-free row": ("rte", json.dumps(RTE)[:-1] + ', "x": ' + "[" * 101
                                                      + "]" * 101 + "}", "nested"),
    "lone surrogate \\ud800 in premise": ("rte", json.dumps(RTE).replace('"p"', '"a\\ud800b"'), "surrogate"),
    "lone low surrogate \\udc00 in a label": ("rte", json.dumps(RTE).replace('"entailment"', '"\\udc00"'),
                                              "surrogate"),
    "idx 2^64": ("rte", json.dumps(dict(RTE, idx=2 ** 64)), "idx"),
    "idx 2^31 (int32 overflow)": ("rte", json.dumps(dict(RTE, idx=2 ** 31)), "idx"),
    "idx -2^31 - 1": ("rte", json.dumps(dict(RTE, idx=-2 ** 31 - 1)), "idx"),
    "idx with 5000 digits": ("rte", '{"premise": "p", "hypothesis": "h", "idx": ' + "9" * 5000 + ', "label": 0}',
                             "digits"),
    "wic start1 2^40": ("wic", json.dumps(dict(WIC, start1=2 ** 40)), "start1"),
    "row of 17 MiB": ("rte", json.dumps(dict(RTE, premise="a" * (17 << 20))), "16 MiB"),
}

for _label, (_task, _line, _name) in _SG_BAD.items():
  @case(f"superglue {_task}: {_label} at physical line 5")
  def _(d, _task=_task, _line=_line, _name=_name):
    good = json.dumps({"rte": RTE, "wic": WIC}[_task])
    path, load = _superglue(d, _task, [good, "", good, "", _line])
    return load, Refused([f"{path}:5", _name])


@case("superglue rte: byte-order mark at the start, escaped emoji (a surrogate pair)")
def _(d):
  row = json.dumps(dict(RTE, premise="\U0001F600"))  # ensure_ascii: "\ud83d\ude00"
  _, load = _superglue(d, "rte", [_BOM + row.encode() + b"\n"])
  return load, Loaded([{"premise": "\U0001F600".encode(), "hypothesis": b"h", "idx": 0, "label": 0}])


@case("superglue rte: row of exactly 16 MiB")
def _(d):
  base = json.dumps(dict(RTE, premise=""))
  premise = "a" * ((16 << 20) - len(base) - 1)  # + "\n" = 16 MiB on the line
  _, load = _superglue(d, "rte", [json.dumps(dict(RTE, premise=premise))])
  return load, Loaded([{"premise": premise.encode(), "hypothesis": b"h", "idx": 0, "label": 0}])


# ----------------------------------------------------------------------------- infer / score
_INFER_BAD = {"lone surrogate": ('{"inputs": "a\\udfff"}', "surrogate"),
              "JSON nested 100k deep": ('{"inputs": "a", "x": ' + _DEEP + "}", "nested"),
              "row of 17 MiB": (json.dumps({"inputs": "a" * (17 << 20)}), "16 MiB")}

for _label, (_line, _name) in _INFER_BAD.items():
  @case(f"infer inputs: {_label} at physical line 3")
  def _(d, _line=_line, _name=_name):
    path = _write(d, ['{"inputs": "a"}', "", _line])
    return (lambda: infer.read_inputs(str(path))), Refused([f"{path}:3", _name])

  @case(f"score pairs: {_label} at physical line 2")
  def _(d, _line=_line, _name=_name):
    line = _line.replace('"inputs": "a', '"targets": "t", "inputs": "a')
    path = _write(d, ['{"inputs": "a", "targets": "b"}', line])
    return (lambda: score.read_pairs(str(path))), Refused([f"{path}:2", _name])


@case("infer inputs: byte-order mark at the start of a .jsonl")
def _(d):
  path = _write(d, [_BOM + b'{"inputs": "hello"}\n', '{"inputs": "b"}'])
  return (lambda: infer.read_inputs(str(path))), Loaded([("hello", None), ("b", None)])


@case("score pairs: byte-order mark at the start")
def _(d):
  path = _write(d, [_BOM + b'{"inputs": "a", "targets": "b"}\n'])
  return (lambda: score.read_pairs(str(path))), Loaded([{"inputs": "a", "targets": "b"}])


@case("infer inputs: byte-order mark at the start of a .tsv")
def _(d):
  path = _write(d, [_BOM + b"hello\tx\n", "world"], name="in.tsv")
  return (lambda: infer.read_inputs(str(path))), Loaded([("hello", None), ("world", None)])


@case("infer inputs: .tsv row of 17 MiB at physical line 2")
def _(d):
  path = _write(d, ["hello", "a" * (17 << 20)], name="in.tsv")
  return (lambda: infer.read_inputs(str(path))), Refused([f"{path}:2", "16 MiB"])


@case("infer inputs: .tsv not UTF-8 at physical line 2")
def _(d):
  path = _write(d, ["hello", b"\xff\xfe\n"], name="in.tsv")
  return (lambda: infer.read_inputs(str(path))), Refused([f"{path}:2", "UTF-8"])
