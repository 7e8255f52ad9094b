"""Bounded, named readers (issue 19): rows over 16 MiB, gzip that is cut or not gzip,
JSON nested too deep, lone surrogates, integers past what TF holds, `.npy` headers that
promise more than the file holds; a byte-order mark is dropped. Good input is compared
with the standard library's own reading of it (json, gzip, csv, utf-8-sig, np.load)."""
import csv
import gzip
import io
import json
import time
import tracemalloc

import numpy as np
import pytest

from prompt_tuning_jax import infer
from prompt_tuning_jax.checkpoints import npy_header
from prompt_tuning_jax.prompt import files as prompt_files
from prompt_tuning_jax.tasks import sources
from prompt_tuning_jax.text import jsonl, lines

RTE = {"premise": "p", "hypothesis": "h", "idx": 0, "label": "entailment"}


def _rows(path):
  return [row for _, row in jsonl.read_jsonl(path)]


def test_a_100_mb_line_is_refused_after_reading_16_mib(tmp_path):
  path = tmp_path / "train.jsonl"
  with open(path, "w") as f:  # one 100 MB row, as in the issue (it grew to 7.5 GB before)
    f.write('{"premise": "')
    for _ in range(100):
      f.write("a" * 1_000_000)
    f.write('", "hypothesis": "h", "idx": 0, "label": "entailment"}\n')
  source = sources.SuperGlueSource("rte", local_dir=tmp_path, split_files={"train": "train.jsonl"})
  tracemalloc.start()
  start = time.monotonic()
  try:
    with pytest.raises(sources.SuperGlueDataError, match=rf"{path}:1: line longer than 16 MiB, the per-row limit"):
      source.get_dataset("train", shuffle=False)
    seconds = time.monotonic() - start
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert peak < 3 * lines.MAX_ROW_BYTES  # the line is never read whole
  assert seconds < 60  # a generous ceiling: before, there was no answer in 5 minutes


def test_a_row_of_exactly_16_mib_is_read(tmp_path):
  base = json.dumps(dict(RTE, premise=""))
  row = json.dumps(dict(RTE, premise="a" * (lines.MAX_ROW_BYTES - len(base) - 1)))
  path = tmp_path / "in.jsonl"
  path.write_text(row + "\n")
  assert path.stat().st_size == lines.MAX_ROW_BYTES
  assert _rows(path) == [json.loads(row)]


def test_byte_order_mark_is_dropped_as_utf_8_sig_does(tmp_path):
  data = "\ufeff" + json.dumps({"inputs": "hello"}) + "\n\n" + json.dumps({"inputs": "\ufeffinside"}) + "\n"
  path = tmp_path / "in.jsonl"
  path.write_bytes(data.encode("utf-8"))
  want = [json.loads(l) for l in data.encode().decode("utf-8-sig").splitlines() if l.strip()]
  assert _rows(path) == want and want[0] == {"inputs": "hello"} and want[1] == {"inputs": "\ufeffinside"}
  tsv = tmp_path / "in.tsv"
  tsv.write_bytes("\ufeffhello\tx\n\"quoted\ttab\"\nworld\n".encode("utf-8"))
  with open(tsv, encoding="utf-8-sig", newline="") as f:
    want = [(row[0], None) for row in csv.reader(f, delimiter="\t") if row]
  assert infer.read_inputs(str(tsv)) == want == [("hello", None), ("quoted\ttab", None), ("world", None)]


def test_tsv_errors_name_the_line(tmp_path):
  tsv = tmp_path / "in.tsv"
  tsv.write_bytes(b"hello\n\xff\n")
  with pytest.raises(SystemExit, match=rf"{tsv}:2: not UTF-8"):
    infer.read_inputs(str(tsv))
  tsv.write_bytes(b"hello\n" + b"a" * (lines.MAX_ROW_BYTES + 1) + b"\n")
  with pytest.raises(SystemExit, match=rf"{tsv}:2: line longer than 16 MiB"):
    infer.read_inputs(str(tsv))
  tsv.write_bytes(b"hello\n" + b"b" * 200_000 + b"\n")  # past csv's default 128 KiB field limit: read
  assert infer.read_inputs(str(tsv))[1] == ("b" * 200_000, None)


@pytest.mark.parametrize("depth,ok", [(jsonl.MAX_JSON_DEPTH, True), (jsonl.MAX_JSON_DEPTH + 1, False),
                                      (100_000, False)])
def test_nesting_depth(tmp_path, depth, ok):
  value = "[" * (depth - 1) + "]" * (depth - 1)  # inside the row's own object: `depth` levels
  line = '{"x": ' + value + ', "s": "' + "[{" * 5000 + '"}'  # brackets inside a string do not count
  path = tmp_path / "in.jsonl"
  path.write_text(line + "\n")
  if ok:
    assert _rows(path) == [json.loads(line)]
  else:
    with pytest.raises(jsonl.JsonlError, match=rf"{path}:1: JSON nested deeper than 100 levels \(found {depth}\)"):
      _rows(path)


def test_lone_surrogates_are_refused_pairs_are_text(tmp_path):
  path = tmp_path / "in.jsonl"
  good = '{"a": "\\ud83d\\ude00", "b": "\\\\ud800 is text here"}'
  path.write_text(good + "\n")
  assert _rows(path) == [json.loads(good)] == [{"a": "\U0001F600", "b": "\\ud800 is text here"}]
  path.write_text(good + '\n{"q": [{"deep": "x\\udc00"}]}\n')
  with pytest.raises(jsonl.JsonlError, match=r":2: field 'q\[0\]\.deep' holds a lone UTF-16 surrogate"):
    _rows(path)
  path.write_text('{"inputs": "a\\ud800"}\n')
  with pytest.raises(SystemExit, match=rf"{path}:1: field 'inputs' holds a lone UTF-16 surrogate"):
    infer.read_inputs(str(path))


def test_integers_out_of_range(tmp_path):
  path = tmp_path / "train.jsonl"

  def load(idx):
    path.write_text(json.dumps(dict(RTE, idx=idx)) + "\n")
    source = sources.SuperGlueSource("rte", local_dir=tmp_path, split_files={"train": "train.jsonl"})
    return [int(e["idx"]) for e in source.get_dataset("train", shuffle=False).as_numpy_iterator()]

  assert load(2 ** 31 - 1) == [2 ** 31 - 1] and load(-2 ** 31) == [-2 ** 31]
  for idx in (2 ** 31, 2 ** 64, -2 ** 31 - 1):
    with pytest.raises(sources.SuperGlueDataError, match=rf"{path}:1: field 'idx' of task 'rte' is {idx}, outside"):
      load(idx)
  path.write_text('{"idx": ' + "9" * 5000 + "}\n")
  with pytest.raises(jsonl.JsonlError, match=rf"{path}:1: a number with 5000 digits"):
    _rows(path)


def test_gzip_damage_is_named(tmp_path):
  data = b"".join(json.dumps({"context": f"c{i}", "qas": []}).encode() + b"\n" for i in range(200))
  packed = gzip.compress(data)
  path = tmp_path / "SQuAD.jsonl.gz"
  path.write_bytes(packed)
  assert _rows(path) == [json.loads(l) for l in gzip.decompress(packed).splitlines()]
  for bad, message in ((packed[: len(packed) // 2], "gzip stream is damaged or cut"), (data, "not a gzip file"),
                       (b"", "not a gzip file"), (packed[:-8] + b"\0" * 8, "gzip stream is damaged"),
                       (packed[:30] + bytes([packed[30] ^ 0x55]) + packed[31:], "gzip stream is damaged")):
    path.write_bytes(bad)
    with pytest.raises(jsonl.JsonlError, match=rf"{path}.*{message}"):
      _rows(path)


def _npy(array, **kwargs) -> bytes:
  buf = io.BytesIO()
  np.lib.format.write_array(buf, array, **kwargs)
  return buf.getvalue()


@pytest.mark.parametrize("array,kwargs", [
    (np.arange(24, dtype=np.float32).reshape(3, 8), {}), (np.float16(2.5) * np.ones((2, 5)), {"version": (2, 0)}),
    (np.asfortranarray(np.arange(12.0).reshape(3, 4)), {}), (np.array(3.0), {}), (np.zeros((0, 4), np.int8), {}),
    (np.arange(6, dtype=">i4"), {"version": (3, 0)}),
])
def test_npy_sizes_numpy_writes_pass(array, kwargs):
  data = _npy(array, **kwargs)
  npy_header.check_npy_size(data, "x.npy")  # numpy's own files are never refused
  np.testing.assert_array_equal(np.load(io.BytesIO(data)), array)


def test_npy_header_promising_more_than_the_file_is_refused_before_allocating(tmp_path):
  path = tmp_path / "prompt.npy"
  buf = io.BytesIO()
  np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (1 << 40, 1 << 20)})
  path.write_bytes(buf.getvalue() + b"\0" * 96)
  with pytest.raises(ValueError, match=rf"{path}: the .npy header declares shape \(1099511627776, 1048576\) of "
                                       r"float32 \(4611686018427387904 bytes of data\) but the file holds 96"):
    prompt_files.load_prompt(path)
  prompt = np.arange(24, dtype=np.float32).reshape(3, 8)
  path.write_bytes(_npy(prompt) + b"\0")
  with pytest.raises(ValueError, match=rf"{path}: .*holds 97 bytes after the header"):
    prompt_files.load_prompt(path)
  path.write_bytes(_npy(prompt))
  np.testing.assert_array_equal(prompt_files.load_prompt(path), prompt)
