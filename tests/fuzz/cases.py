"""Generated corrupt and malformed inputs for every loader and reader, as a user meets them.

Each case builds its input in a fresh folder and returns (load, expect): `load()` goes
through the public entry point; `expect` is `Refused(names)` (an exception whose text
holds every name: the file and the key or line) or `Loaded(want)` (the result equals the
original, array for array). `run_case` classifies the outcome as 'refused', 'loaded' or
'other: ...' and also calls it 'other' when a refusal changed anything in the folder.
Used by tests/fuzz/test_fuzz_inputs.py and scripts/fuzz_report.py.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import signal
import stat
from typing import Any, Callable

import ml_dtypes
import msgpack
import numpy as np
import safetensors.numpy

from prompt_tuning_jax.checkpoints import t5x, tree
from prompt_tuning_jax.prompt import NUMPY_PROMPT_FILE
from prompt_tuning_jax.prompt import files as prompt_files


@dataclasses.dataclass
class Refused:
  names: list[str]


@dataclasses.dataclass
class Loaded:
  want: Any


Builder = Callable[[pathlib.Path], tuple[Callable[[], Any], Any]]
CASES: dict[str, Builder] = {}
_RNG = np.random.RandomState(0)
PROMPT = _RNG.randn(3, 8).astype(np.float32)
with np.errstate(over="ignore"):
  PROMPT_F16_OVERFLOW = np.float16(PROMPT * 1e5)  # some values become inf on the cast
PARAMS = {"layer": {"kernel": _RNG.randn(4, 8).astype(np.float32), "scale": _RNG.rand(8).astype(np.float32)}}


def case(name: str):
  def register(fn: Builder) -> Builder:
    CASES[name] = fn
    return fn
  return register


def _equal(got: Any, want: Any) -> bool:
  if isinstance(want, dict):
    return isinstance(got, dict) and set(got) == set(want) and all(_equal(got[k], want[k]) for k in want)
  if isinstance(want, (list, tuple)):
    return isinstance(got, (list, tuple)) and len(got) == len(want) and all(map(_equal, got, want))
  if isinstance(want, np.ndarray):
    got = np.asarray(got)
    nan_ok = want.dtype.kind == "f"  # NaN == NaN here: the "allow_nonfinite" cases load NaN on purpose
    return got.shape == want.shape and got.dtype == want.dtype and np.array_equal(got, want, equal_nan=nan_ok)
  return got == want


def _snapshot(root: pathlib.Path) -> dict[str, Any]:
  """Every entry under `root` without following links or opening FIFOs and devices:
  bytes of regular files, the target of symlinks, the kind of anything else."""
  out: dict[str, Any] = {}
  for d, dirs, names in os.walk(root):
    for name in dirs + names:
      p = pathlib.Path(d) / name
      st = p.lstat()
      if stat.S_ISLNK(st.st_mode):
        out[str(p.relative_to(root))] = ("link", os.readlink(p))
      elif stat.S_ISREG(st.st_mode):
        out[str(p.relative_to(root))] = p.read_bytes()
      elif not stat.S_ISDIR(st.st_mode):
        out[str(p.relative_to(root))] = ("special", stat.S_IFMT(st.st_mode))
  return out


class _NoAnswer(Exception):
  """Raised by SIGALRM when a case runs past its time limit."""


def _call(load: Callable[[], Any], timeout_s: float | None) -> Any:
  """load(), interrupted with _NoAnswer after timeout_s (a FIFO or a stuck read hangs)."""
  if not timeout_s:
    return load()
  def _alarm(signum, frame):
    raise _NoAnswer()
  previous = signal.signal(signal.SIGALRM, _alarm)
  signal.setitimer(signal.ITIMER_REAL, timeout_s)
  try:
    return load()
  finally:
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def run_case(name: str, folder: pathlib.Path, timeout_s: float | None = 120) -> str:
  """Build, load and classify one case; a load that runs past timeout_s is 'other'."""
  folder.mkdir(parents=True, exist_ok=True)
  load, expect = CASES[name](folder)
  before = _snapshot(folder)
  try:
    got = _call(load, timeout_s)
  except _NoAnswer:
    return f"other: no answer within {timeout_s:g} s"
  except BaseException as e:  # SystemExit included: the CLIs' readers refuse with it
    if isinstance(e, KeyboardInterrupt):
      raise
    text = f"{e}"
    if not isinstance(expect, Refused):
      return f"other: refused a good input: {type(e).__name__}: {text[:300]}"
    missing = [n for n in expect.names if n not in text]
    if missing:
      return f"other: {type(e).__name__} does not name {missing}: {text[:300]}"
    if "weights_only=False" in text:
      return "other: the message suggests weights_only=False"
    if _snapshot(folder) != before:
      return "other: the refusal changed files in the folder"
    return "refused"
  if isinstance(expect, Refused):
    return f"other: loaded what should be refused ({type(got).__name__})"
  return "loaded" if _equal(got, expect.want) else "other: loaded but not equal to the original"


def _flip_inside(path: pathlib.Path, needle: bytes) -> None:
  """Flip one bit in the middle of `needle`'s bytes inside `path` (format stays valid)."""
  data = bytearray(path.read_bytes())
  at = data.find(needle)
  assert at >= 0, f"{needle[:8]!r} not found in {path}"
  data[at + len(needle) // 2] ^= 0x04
  path.write_bytes(bytes(data))


# ----------------------------------------------------------------------------- T5X
def _t5x(folder: pathlib.Path, params=None, *, zarr: bool = False) -> pathlib.Path:
  path = t5x.write_t5x_checkpoint(str(folder / "model"), params or PARAMS, 3, inline_max_bytes=0 if zarr else 1 << 14)
  return pathlib.Path(path)


def _read_t5x(path: pathlib.Path) -> Callable[[], Any]:
  return lambda: t5x.read_t5x_checkpoint(str(path)).params


def _with_leaf(name: str, value: np.ndarray) -> dict:
  flat = dict(tree.flatten(PARAMS), **{name: value})
  return tree.unflatten(flat)


def _nan_kernel(value=np.nan) -> np.ndarray:
  k = PARAMS["layer"]["kernel"].copy()
  k[1, 2] = value
  return k


@case("t5x inline: written by us")
def _(d):
  return _read_t5x(_t5x(d)), Loaded(PARAMS)


@case("t5x inline: manifest removed (a public checkpoint)")
def _(d):
  path = _t5x(d)
  os.remove(path / "checkpoint.sha256.json")
  return _read_t5x(path), Loaded(PARAMS)


for _kind, _value in (("NaN", np.nan), ("+Inf", np.inf), ("-Inf", -np.inf)):
  @case(f"t5x inline: {_kind} in a kernel")
  def _(d, _value=_value):
    path = _t5x(d, _with_leaf("layer/kernel", _nan_kernel(_value)))
    return _read_t5x(path), Refused([str(path / "checkpoint"), "layer/kernel", "NaN/Inf"])

  @case(f"t5x zarr: {_kind} in a kernel")
  def _(d, _value=_value):
    path = _t5x(d, _with_leaf("layer/kernel", _nan_kernel(_value)), zarr=True)
    return _read_t5x(path), Refused([str(path / "checkpoint"), "layer/kernel", "NaN/Inf"])


@case("t5x inline: NaN allowed explicitly")
def _(d):
  want = _with_leaf("layer/kernel", _nan_kernel())
  path = _t5x(d, want)
  return (lambda: t5x.read_t5x_checkpoint(str(path), allow_nonfinite=True).params), Loaded(want)


@case("t5x inline: int32 leaf")
def _(d):
  path = _t5x(d, _with_leaf("layer/scale", np.arange(8, dtype=np.int32)))
  return _read_t5x(path), Refused([str(path / "checkpoint"), "layer/scale", "int32"])


@case("t5x inline: one flipped byte in array data")
def _(d):
  path = _t5x(d)
  _flip_inside(path / "checkpoint", PARAMS["layer"]["kernel"].tobytes())
  return _read_t5x(path), Refused([str(path / "checkpoint"), "layer/kernel", "checksum"])


for _name, _mangle in (("truncated", lambda b: b[: len(b) // 2]), ("empty", lambda b: b""),
                       ("garbage", lambda b: bytes(_RNG.randint(0, 256, len(b), dtype=np.uint8))),
                       ("text", lambda b: b"not a checkpoint\n")):
  @case(f"t5x msgpack: {_name} file")
  def _(d, _mangle=_mangle):
    path = _t5x(d)
    (path / "checkpoint").write_bytes(_mangle((path / "checkpoint").read_bytes()))
    return _read_t5x(path), Refused([str(path / "checkpoint")])


@case("t5x: msgpack file deleted")
def _(d):
  path = _t5x(d)
  os.remove(path / "checkpoint")
  return _read_t5x(path), Refused([str(path)])


@case("t5x: checksum manifest not JSON")
def _(d):
  path = _t5x(d)
  (path / "checkpoint.sha256.json").write_text("{oops")
  return _read_t5x(path), Refused([str(path / "checkpoint.sha256.json")])


@case("t5x zarr: written by us")
def _(d):
  return _read_t5x(_t5x(d, zarr=True)), Loaded(PARAMS)


def _zarr_dir(path: pathlib.Path) -> pathlib.Path:
  return path / "target.layer.kernel"


def _edit_zarray(path: pathlib.Path, **changes) -> None:
  meta_path = _zarr_dir(path) / ".zarray"
  meta = json.loads(meta_path.read_text())
  meta.update(changes)
  meta_path.write_text(json.dumps(meta))


@case("t5x zarr: chunk deleted")
def _(d):
  path = _t5x(d, zarr=True)
  os.remove(_zarr_dir(path) / "0.0")
  return _read_t5x(path), Refused([str(_zarr_dir(path)), "missing chunk"])


@case("t5x zarr: chunk deleted, .zarray has a fill value")
def _(d):
  path = _t5x(d, zarr=True)
  _edit_zarray(path, fill_value=0.0)
  os.remove(_zarr_dir(path) / "0.0")
  return _read_t5x(path), Refused([str(_zarr_dir(path)), "missing chunk"])


for _dtype in ("<i4", ">f4", "<f8"):
  @case(f"t5x zarr: .zarray dtype {_dtype}")
  def _(d, _dtype=_dtype):
    path = _t5x(d, zarr=True)
    _edit_zarray(path, dtype=_dtype)
    return _read_t5x(path), Refused([str(_zarr_dir(path)), "layer/kernel", "dtype"])


@case("t5x zarr: .zarray shape changed")
def _(d):
  path = _t5x(d, zarr=True)
  _edit_zarray(path, shape=[8, 4])
  return _read_t5x(path), Refused([str(_zarr_dir(path)), "layer/kernel"])


@case("t5x zarr: .zarray deleted")
def _(d):
  path = _t5x(d, zarr=True)
  os.remove(_zarr_dir(path) / ".zarray")
  return _read_t5x(path), Refused([str(_zarr_dir(path)), "layer/kernel"])


@case("t5x zarr: .zarray not JSON")
def _(d):
  path = _t5x(d, zarr=True)
  (_zarr_dir(path) / ".zarray").write_text("{[")
  return _read_t5x(path), Refused([str(_zarr_dir(path)), "layer/kernel"])


@case("t5x zarr: gzip chunk with a flipped byte")
def _(d):
  path = _t5x(d, zarr=True)
  chunk = _zarr_dir(path) / "0.0"
  data = bytearray(chunk.read_bytes())
  data[len(data) // 2] ^= 0xFF
  chunk.write_bytes(bytes(data))
  return _read_t5x(path), Refused([str(_zarr_dir(path)), "layer/kernel"])


@case("t5x zarr: chunk rewritten with other values (valid gzip)")
def _(d):
  import tensorstore as ts
  path = _t5x(d, zarr=True)
  store = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(_zarr_dir(path))}}).result()
  store[0, 0].write(np.float32(123.0)).result()
  return _read_t5x(path), Refused([str(path / "checkpoint"), "layer/kernel", "checksum"])


def _edit_spec_path(path: pathlib.Path, new: str) -> None:
  file = path / "checkpoint"
  raw = msgpack.unpackb(file.read_bytes(), raw=False, strict_map_key=False, ext_hook=msgpack.ExtType)
  raw["optimizer"]["target"]["layer"]["kernel"]["kvstore"]["path"] = new
  file.write_bytes(msgpack.packb(raw, use_bin_type=True))


for _label, _target in (("absolute", "{outside}"), ("../", "{rel}"), ("gs://", "gs://bucket/x")):
  @case(f"t5x zarr: tensorstore path {_label} outside the checkpoint")
  def _(d, _target=_target):
    path = _t5x(d, zarr=True)
    outside = d / "outside" / "target.layer.kernel"
    shutil.copytree(_zarr_dir(path), outside)
    rel = os.path.relpath(outside, path)
    _edit_spec_path(path, _target.format(outside=outside, rel=rel))
    return _read_t5x(path), Refused([str(path / "checkpoint"), "layer/kernel", "leaves the checkpoint"])


# ----------------------------------------------------------------------------- prompts
def _npy(d: pathlib.Path, array: Any, name: str = "prompt.npy") -> pathlib.Path:
  path = d / name
  np.save(path, array, allow_pickle=True)
  return path


@case("prompt .npy: written by us")
def _(d):
  path = prompt_files.save_npy(d / "p.npy", PROMPT)
  return (lambda: prompt_files.load_prompt(path)), Loaded(PROMPT)


for _label, _array in (("NaN", np.where(np.eye(3, 8) > 0, np.nan, PROMPT)), ("Inf", PROMPT * np.inf),
                       ("float16 overflowing to inf", PROMPT_F16_OVERFLOW)):
  @case(f"prompt .npy: {_label}")
  def _(d, _array=_array):
    path = _npy(d, _array)
    return (lambda: prompt_files.load_prompt(path)), Refused([str(path), "NaN/Inf"])


for _label, _array in (("int32", PROMPT.astype(np.int32)), ("3-D", PROMPT[None]),
                       ("object array (pickle)", np.array([{"a": 1}], dtype=object)),
                       ("complex", PROMPT.astype(np.complex64))):
  @case(f"prompt .npy: {_label}")
  def _(d, _array=_array):
    path = _npy(d, _array)
    return (lambda: prompt_files.load_prompt(path)), Refused([str(path)])


for _label, _mangle in (("truncated", lambda b: b[: len(b) - 20]), ("header only", lambda b: b[:10])):
  @case(f"prompt .npy: {_label}")
  def _(d, _mangle=_mangle):
    path = prompt_files.save_npy(d / "p.npy", PROMPT)
    path.write_bytes(_mangle(path.read_bytes()))
    return (lambda: prompt_files.load_prompt(path)), Refused([str(path)])


@case("prompt .npy: empty file")
def _(d):
  path = d / "p.npy"
  path.write_bytes(b"")
  return (lambda: prompt_files.load_prompt(path)), Refused([str(path)])


@case("prompt numpy checkpoint: written by us")
def _(d):
  path = prompt_files.save_numpy_checkpoint(d, 7, PROMPT)
  return (lambda: prompt_files.load_prompt(path.parent)), Loaded(PROMPT)


@case("prompt numpy checkpoint: NaN")
def _(d):
  folder = d / "numpy_checkpoints" / "checkpoint_7"
  folder.mkdir(parents=True)
  np.save(folder / "x.npy", _nan_kernel()[:3])
  os.rename(folder / "x.npy", folder / NUMPY_PROMPT_FILE)
  return (lambda: prompt_files.load_prompt(folder)), Refused([str(folder), "NaN/Inf"])


def _peft(d: pathlib.Path, prompt=PROMPT) -> pathlib.Path:
  return prompt_files.save_peft_adapter(d / "adapter", prompt, base_model_name_or_path="t5")


@case("prompt PEFT: written by us")
def _(d):
  path = _peft(d)
  return (lambda: prompt_files.load_prompt(path)), Loaded(PROMPT)


@case("prompt PEFT: NaN embedding")
def _(d):
  path = _peft(d)
  bad = PROMPT.copy()
  bad[0, 0] = np.nan
  (path / prompt_files.PEFT_WEIGHTS_FILE).write_bytes(safetensors.numpy.save({"prompt_embeddings": bad}))
  return (lambda: prompt_files.load_prompt(path)), Refused([str(path / prompt_files.PEFT_WEIGHTS_FILE), "NaN"])


for _label, _text, _name in (("not JSON", "{", "not valid JSON"), ("a JSON list", "[1, 2]", "JSON object"),
                             ("num_transformer_submodules '2'", None, "num_transformer_submodules"),
                             ("num_virtual_tokens 0", None, "num_virtual_tokens"),
                             ("not UTF-8", b"\xff\xfe{", "not valid JSON")):
  @case(f"prompt PEFT: adapter_config {_label}")
  def _(d, _label=_label, _text=_text, _name=_name):
    path = _peft(d)
    config_path = path / prompt_files.PEFT_CONFIG_FILE
    if _text is None:
      config = json.loads(config_path.read_text())
      key = _label.split()[0]
      config[key] = "2" if key == "num_transformer_submodules" else 0
      _text = json.dumps(config)
    config_path.write_bytes(_text if isinstance(_text, bytes) else _text.encode())
    return (lambda: prompt_files.load_prompt(path)), Refused([str(config_path), _name])


for _label, _mangle in (("truncated", lambda b: b[: len(b) // 2]), ("empty", lambda b: b""),
                        ("garbled header", lambda b: b"\xff" * 16 + b[16:])):
  @case(f"prompt PEFT: adapter_model.safetensors {_label}")
  def _(d, _mangle=_mangle):
    path = _peft(d)
    weights = path / prompt_files.PEFT_WEIGHTS_FILE
    weights.write_bytes(_mangle(weights.read_bytes()))
    return (lambda: prompt_files.load_prompt(path)), Refused([str(weights)])


@case("prompt PEFT: wrong tensor name")
def _(d):
  path = _peft(d)
  weights = path / prompt_files.PEFT_WEIGHTS_FILE
  weights.write_bytes(safetensors.numpy.save({"embeddings": PROMPT}))
  return (lambda: prompt_files.load_prompt(path)), Refused([str(weights), "prompt_embeddings"])


@case("prompt T5X variable: written by us")
def _(d):
  path = t5x.write_t5x_checkpoint(str(d / "m"), {"encoder": {"prompt": {"prompt": {"prompt": PROMPT}}}}, 5)
  return (lambda: prompt_files.load_prompt(path)), Loaded(PROMPT)


@case("prompt T5X variable: NaN")
def _(d):
  bad = PROMPT.copy()
  bad[2, 7] = np.nan
  path = t5x.write_t5x_checkpoint(str(d / "m"), {"encoder": {"prompt": {"prompt": {"prompt": bad}}}}, 5)
  return (lambda: prompt_files.load_prompt(path)), Refused([path, "encoder/prompt/prompt/prompt", "NaN/Inf"])


@case("prompt T5X variable: bfloat16 stored")
def _(d):
  value = PROMPT.astype(ml_dtypes.bfloat16)
  path = t5x.write_t5x_checkpoint(str(d / "m"), {"encoder": {"prompt": {"prompt": {"prompt": value}}}}, 5)
  return (lambda: prompt_files.load_prompt(path)), Loaded(value.astype(np.float32))
