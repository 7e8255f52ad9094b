"""Fuzz cases, part 2: Hugging Face weights and configs, train state, SuperGLUE JSONL,
infer and score inputs (registered into `cases.CASES`)."""
from __future__ import annotations

import json
import os
import pathlib
import shutil

import numpy as np
import safetensors.numpy
from cases import Loaded, Refused, _flip_inside, case

from prompt_tuning_jax.checkpoints import hf, train_state, tree, validation
from prompt_tuning_jax.model.config import SIZES

HF_CFG = SIZES["tiny_inline"].replace(vocab_size=64)


def _hf_params() -> dict:
  rng = np.random.RandomState(1)
  shapes = tree.flatten(validation.param_shapes(HF_CFG))
  return tree.unflatten({k: rng.randn(*v.shape).astype(np.float32) for k, v in shapes.items()})


HF_PARAMS = _hf_params()


def _hf(d: pathlib.Path) -> pathlib.Path:
  return pathlib.Path(hf.save_hf_checkpoint(str(d / "hf"), HF_PARAMS, HF_CFG))


def _load_hf(path: pathlib.Path):
  return lambda: hf.load_hf_checkpoint(str(path))[0]


def _state(path: pathlib.Path) -> dict:
  return safetensors.numpy.load_file(str(path / "model.safetensors"))


@case("hf safetensors: written by us")
def _(d):
  return _load_hf(_hf(d)), Loaded(HF_PARAMS)


@case("hf safetensors: manifest removed (a public checkpoint)")
def _(d):
  path = _hf(d)
  os.remove(path / "model.safetensors.sha256.json")
  return _load_hf(path), Loaded(HF_PARAMS)


@case("hf safetensors: one flipped byte in tensor data")
def _(d):
  path = _hf(d)
  key = "encoder.block.0.layer.1.DenseReluDense.wo.weight"
  _flip_inside(path / "model.safetensors", _state(path)[key].tobytes())
  return _load_hf(path), Refused([str(path / "model.safetensors"), key, "checksum"])


for _label, _mangle in (("truncated", lambda b: b[: len(b) // 2]), ("empty", lambda b: b""),
                        ("8 bytes", lambda b: b[:8]), ("garbled header", lambda b: b[:8] + b"\x00{]" + b[11:])):
  @case(f"hf safetensors: {_label}")
  def _(d, _mangle=_mangle):
    path = _hf(d)
    (path / "model.safetensors").write_bytes(_mangle((path / "model.safetensors").read_bytes()))
    return _load_hf(path), Refused([str(path / "model.safetensors")])


@case("hf safetensors: a directory")
def _(d):
  path = _hf(d)
  os.remove(path / "model.safetensors")
  (path / "model.safetensors").mkdir()
  return _load_hf(path), Refused([str(path / "model.safetensors"), "directory"])


for _label, _value in (("NaN", np.nan), ("Inf", np.inf)):
  @case(f"hf safetensors: {_label} in a tensor")
  def _(d, _value=_value):
    path = _hf(d)
    state = _state(path)
    state["shared.weight"][3, 1] = _value
    (path / "model.safetensors").write_bytes(safetensors.numpy.save(state))
    os.remove(path / "model.safetensors.sha256.json")
    return _load_hf(path), Refused([str(path), "shared.weight", "NaN/Inf"])


@case("hf safetensors: int32 tensor")
def _(d):
  path = _hf(d)
  state = _state(path)
  state["lm_head.weight"] = state["lm_head.weight"].view(np.int32)
  (path / "model.safetensors").write_bytes(safetensors.numpy.save(state))
  os.remove(path / "model.safetensors.sha256.json")
  return _load_hf(path), Refused([str(path), "lm_head.weight", "int32"])


for _label, _text, _names in (("not JSON", "{", ["not valid JSON"]), ("a JSON list", "[]", ["JSON object"]),
                              ("not UTF-8", b"\xff{", ["not valid JSON"]),
                              ("feed_forward_proj swiglu", {"feed_forward_proj": "swiglu"}, ["swiglu"]),
                              ("d_model 'eight'", {"d_model": "eight"}, ["d_model"]),
                              ("num_heads 0", {"num_heads": 0}, ["num_heads"])):
  @case(f"hf config.json: {_label}")
  def _(d, _text=_text, _names=_names):
    path = _hf(d)
    config_path = path / "config.json"
    if isinstance(_text, dict):
      _text = json.dumps(dict(json.loads(config_path.read_text()), **_text))
    config_path.write_bytes(_text if isinstance(_text, bytes) else _text.encode())
    return _load_hf(path), Refused([str(config_path)] + _names)


def _sharded(d: pathlib.Path, index: object) -> pathlib.Path:
  path = _hf(d)
  os.rename(path / "model.safetensors", path / "model-00001-of-00001.safetensors")
  os.remove(path / "model.safetensors.sha256.json")
  text = index if isinstance(index, str) else json.dumps(index)
  (path / "model.safetensors.index.json").write_text(text)
  return path


@case("hf sharded index: written by hand")
def _(d):
  path = _sharded(d, {"weight_map": {"shared.weight": "model-00001-of-00001.safetensors"}})
  return _load_hf(path), Loaded(HF_PARAMS)


for _label, _index in (("not JSON", "{"), ("no weight_map", {"metadata": {}}),
                       ("shard outside the directory", {"weight_map": {"a": "../model.safetensors"}}),
                       ("missing shard", {"weight_map": {"a": "model-00002-of-00002.safetensors"}})):
  @case(f"hf sharded index: {_label}")
  def _(d, _index=_index, _label=_label):
    path = _sharded(d, _index)
    name = "model-00002-of-00002.safetensors" if "missing" in _label else "model.safetensors.index.json"
    return _load_hf(path), Refused([str(path / name)])


@case("hf pytorch_model.bin: plain state dict")
def _(d):
  import torch
  path = _hf(d)
  state = {k: torch.from_numpy(v) for k, v in _state(path).items()}
  for name in ("model.safetensors", "model.safetensors.sha256.json"):
    os.remove(path / name)
  torch.save(state, path / "pytorch_model.bin")
  return _load_hf(path), Loaded(HF_PARAMS)


class _Payload:
  marker = ""

  def __reduce__(self):
    return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@case("hf pytorch_model.bin: malicious pickle (__reduce__)")
def _(d):
  import torch
  path = _hf(d)
  for name in ("model.safetensors", "model.safetensors.sha256.json"):
    os.remove(path / name)
  payload = _Payload()
  payload.marker = str(d.parent / f"{d.name}_pwned")
  torch.save({"shared.weight": payload}, path / "pytorch_model.bin")

  def load():
    try:
      return hf.load_hf_checkpoint(str(path))
    finally:
      assert not os.path.exists(payload.marker), "the pickle ran code"
  return load, Refused([str(path / "pytorch_model.bin")])


# ----------------------------------------------------------------------------- train state
def _ts(d: pathlib.Path, steps=(2, 4)):
  import jax.numpy as jnp
  checkpointer = train_state.TrainCheckpointer(str(d), keep=3, fingerprint={"f": "1"})
  for s in steps:
    checkpointer.save(s, {"p": jnp.full((2, 3), float(s))}, {"best": None})
  return d / "train_state"


def _restore(d: pathlib.Path):
  import jax.numpy as jnp

  def load():
    restored = train_state.TrainCheckpointer(str(d), keep=3, fingerprint={"f": "1"}).restore(
        {"p": jnp.zeros((2, 3))})
    return {"p": np.asarray(restored[0]["p"])}
  return load


@case("train state: written by us")
def _(d):
  _ts(d)
  return _restore(d), Loaded({"p": np.full((2, 3), 4.0, np.float32)})


_DAMAGE = {"state/ deleted": lambda s: shutil.rmtree(s / "state"),
           "empty step dir": lambda s: [shutil.rmtree(s), s.mkdir()],
           "meta/metadata not JSON": lambda s: (s / "meta" / "metadata").write_text("{x"),
           "recorded checksum changed": lambda s: (s / "meta" / "metadata").write_text(
               (s / "meta" / "metadata").read_text().replace('"checksums": {"[\'p\']": "', '"checksums": {"[\'p\']": "0'))}

for _label, _damage in _DAMAGE.items():
  @case(f"train state: newest step {_label} -> older step")
  def _(d, _damage=_damage):
    _damage(_ts(d) / "4")
    return _restore(d), Loaded({"p": np.full((2, 3), 2.0, np.float32)})

  @case(f"train state: only step {_label}")
  def _(d, _damage=_damage):
    root = _ts(d, steps=(4,))
    _damage(root / "4")
    return _restore(d), Refused([str(root / "4"), "damaged"])
