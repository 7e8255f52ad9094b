"""Fuzz cases, part 4: what a checkpoint folder holds besides its bytes: symlinks
(inside, leaving, dangling as an unfetched git-annex file is), FIFOs, devices, the
Hugging Face cache layout, and zarr metadata the reader does or does not implement."""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil

import msgpack
import tensorstore as ts
from cases import PARAMS, Loaded, Refused, _read_t5x, _t5x, _zarr_dir, case
from cases_more import HF_PARAMS, _hf, _load_hf

from prompt_tuning_jax.checkpoints import checksums


def _replace(entry: pathlib.Path, make) -> None:
  """Remove a file or folder and put something else (a link, a FIFO) in its place."""
  if entry.is_dir() and not entry.is_symlink():
    shutil.rmtree(entry)
  else:
    entry.unlink()
  make(entry)


def _link_to(target) -> callable:
  return lambda entry: os.symlink(target, entry)


def _outside_copy(d: pathlib.Path, entry: pathlib.Path) -> pathlib.Path:
  """A copy of `entry` in d/outside (beside the checkpoint, not in it)."""
  dest = d / "outside" / entry.name
  dest.parent.mkdir(exist_ok=True)
  (shutil.copytree if entry.is_dir() else shutil.copyfile)(entry, dest)
  return dest


# ----------------------------------------------------------------------------- T5X entries
def _zarray(path: pathlib.Path) -> pathlib.Path:
  return _zarr_dir(path) / ".zarray"


def _t5x_entry(d: pathlib.Path, which: str) -> tuple[pathlib.Path, pathlib.Path]:
  """(checkpoint dir, the entry named by `which`) of a zarr T5X checkpoint."""
  path = _t5x(d, zarr=True)
  entry = {"chunk": _zarr_dir(path) / "0.0", "msgpack file": path / "checkpoint",
           ".zarray": _zarr_dir(path) / ".zarray", "zarr folder": _zarr_dir(path),
           "checksum manifest": path / ("checkpoint" + checksums.SUFFIX)}[which]
  return path, entry


for _which in ("chunk", "msgpack file", ".zarray", "zarr folder", "checksum manifest"):
  @case(f"t5x entry: {_which} is a symlink leaving the checkpoint")
  def _(d, _which=_which):
    path, entry = _t5x_entry(d, _which)
    _replace(entry, _link_to(_outside_copy(d, entry)))
    return _read_t5x(path), Refused([str(entry), "leaves the checkpoint"])

  @case(f"t5x entry: {_which} is a symlink inside the checkpoint")
  def _(d, _which=_which):
    path, entry = _t5x_entry(d, _which)
    moved = path / ".objects" / entry.name
    moved.parent.mkdir()
    os.rename(entry, moved)
    os.symlink(os.path.relpath(moved, entry.parent), entry)
    return _read_t5x(path), Loaded(PARAMS)

  @case(f"t5x entry: {_which} is a dangling symlink (unfetched git-annex file)")
  def _(d, _which=_which):
    path, entry = _t5x_entry(d, _which)
    _replace(entry, _link_to("../.git/annex/objects/Xy/Zw/SHA256E-s123--abc/SHA256E-s123--abc"))
    names = [str(entry), "missing chunk"] if _which == "chunk" else [str(entry), "dangling"]
    return _read_t5x(path), Refused(names)

for _which in ("chunk", "msgpack file", ".zarray", "checksum manifest"):
  @case(f"t5x entry: {_which} is a symlink to /dev/zero")
  def _(d, _which=_which):
    path, entry = _t5x_entry(d, _which)
    _replace(entry, _link_to("/dev/zero"))
    return _read_t5x(path), Refused([str(entry), "/dev/zero"])

  @case(f"t5x entry: {_which} is a FIFO")
  def _(d, _which=_which):
    path, entry = _t5x_entry(d, _which)
    _replace(entry, os.mkfifo)
    return _read_t5x(path), Refused([str(entry), "FIFO"])


# Without our checksum manifest (a public checkpoint) nothing else would notice.
for _label, _make, _name in (("a dangling symlink", _link_to("/nonexistent/annex/blob"), "missing chunk"),
                             ("a symlink to /dev/zero", _link_to("/dev/zero"), "/dev/zero")):
  @case(f"t5x entry, no manifest: chunk is {_label}")
  def _(d, _make=_make, _name=_name):
    path, entry = _t5x_entry(d, "chunk")
    os.remove(path / ("checkpoint" + checksums.SUFFIX))
    _replace(entry, _make)
    return _read_t5x(path), Refused([str(entry), _name])


@case("t5x zarr, no manifest: .zarray order F")
def _(d):
  path = _t5x(d, zarr=True)
  os.remove(path / ("checkpoint" + checksums.SUFFIX))
  meta = json.loads(_zarray(path).read_text())
  _zarray(path).write_text(json.dumps(dict(meta, order="F")))
  return _read_t5x(path), Refused([str(_zarr_dir(path)), "layer/kernel", "order"])


@case("t5x entry: the checkpoint folder itself is a symlink")
def _(d):
  path = _t5x(d, zarr=True)
  link = d / "linked_checkpoint"
  os.symlink(path, link)
  return _read_t5x(link), Loaded(PARAMS)


@case("t5x entry: inline checkpoint, msgpack file is a dangling symlink")
def _(d):
  path = _t5x(d)
  _replace(path / "checkpoint", _link_to("/nonexistent/annex/blob"))
  return _read_t5x(path), Refused([str(path / "checkpoint"), "dangling"])


# ----------------------------------------------------------------------------- zarr metadata

def _drop_spec_metadata(path: pathlib.Path) -> None:
  """As in T5X checkpoints written before the spec carried metadata: .zarray decides."""
  file = path / "checkpoint"
  raw = msgpack.unpackb(file.read_bytes(), raw=False, strict_map_key=False, ext_hook=msgpack.ExtType)
  raw["optimizer"]["target"]["layer"]["kernel"].pop("metadata")
  file.write_bytes(msgpack.packb(raw, use_bin_type=True))


_UNSUPPORTED_ZARRAY = {
    "order F": ({"order": "F"}, "order"),
    "filters set": ({"filters": [{"id": "delta", "dtype": "<f4"}]}, "filters"),
    "blosc compressor": ({"compressor": {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1}}, "blosc"),
    "bz2 compressor": ({"compressor": {"id": "bz2", "level": 9}}, "bz2"),
    "zarr_format 3": ({"zarr_format": 3}, "zarr_format"),
    "chunks with a 0": ({"chunks": [0, 8]}, "chunks"),
    "chunks of another rank": ({"chunks": [4]}, "chunks"),
    "dimension_separator ':'": ({"dimension_separator": ":"}, "dimension_separator"),
}

for _label, (_change, _name) in _UNSUPPORTED_ZARRAY.items():
  @case(f"t5x zarr: .zarray {_label}")
  def _(d, _change=_change, _name=_name):
    path = _t5x(d, zarr=True)
    meta = json.loads(_zarray(path).read_text())
    meta.update(_change)
    _zarray(path).write_text(json.dumps(meta))
    return _read_t5x(path), Refused([str(_zarr_dir(path)), "layer/kernel", _name])


for _dtype in ("<c8", "|O", ">f4", "<M8[s]"):
  @case(f"t5x zarr: .zarray dtype {_dtype}, spec without metadata")
  def _(d, _dtype=_dtype):
    path = _t5x(d, zarr=True)
    _drop_spec_metadata(path)
    meta = json.loads(_zarray(path).read_text())
    meta["dtype"] = _dtype
    _zarray(path).write_text(json.dumps(meta))
    return _read_t5x(path), Refused([str(_zarr_dir(path)), "layer/kernel", "dtype"])


@case("t5x zarr: .zarray declares 2^40 chunks, spec without metadata")
def _(d):
  path = _t5x(d, zarr=True)
  _drop_spec_metadata(path)
  meta = json.loads(_zarray(path).read_text())
  meta.update(shape=[1 << 40, 8], chunks=[1, 8])
  _zarray(path).write_text(json.dumps(meta))
  return _read_t5x(path), Refused([str(_zarr_dir(path)), "missing chunk"])


@case("t5x zarr: .zarray not a JSON object")
def _(d):
  path = _t5x(d, zarr=True)
  _zarray(path).write_text("[1, 2]")
  return _read_t5x(path), Refused([str(_zarray(path)), "layer/kernel"])


def _rewrite_zarr(path: pathlib.Path, **metadata) -> None:
  """Rewrite the kernel's zarr array with tensorstore itself (the reference writer)."""
  zdir = _zarr_dir(path)
  shutil.rmtree(zdir)
  arr = PARAMS["layer"]["kernel"]
  spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": str(zdir) + "/"},
          "metadata": dict({"shape": list(arr.shape), "dtype": "<f4"}, **metadata)}
  store = ts.open(spec, create=True).result()
  store.write(arr).result()


for _label, _metadata in (("zstd compressor", {"compressor": {"id": "zstd", "level": 3}}),
                          ("no compressor (null)", {"compressor": None}),
                          ("dimension_separator '/', 2x4 chunks", {"chunks": [2, 4], "dimension_separator": "/",
                                                                   "compressor": {"id": "gzip", "level": 1}})):
  @case(f"t5x zarr: written by tensorstore with {_label}")
  def _(d, _metadata=_metadata):
    path = _t5x(d, zarr=True)
    _rewrite_zarr(path, **_metadata)
    return _read_t5x(path), Loaded(PARAMS)


# ----------------------------------------------------------------------------- Hugging Face
_HF_ENTRY = {"weights": "model.safetensors", "config.json": "config.json",
             "checksum manifest": "model.safetensors" + checksums.SUFFIX}

for _which, _name in _HF_ENTRY.items():
  @case(f"hf entry: {_which} is a symlink leaving the model folder")
  def _(d, _name=_name):
    path = _hf(d)
    entry = path / _name
    _replace(entry, _link_to(_outside_copy(d, entry)))
    return _load_hf(path), Refused([str(entry), "leaves the checkpoint"])

  @case(f"hf entry: {_which} is a dangling symlink")
  def _(d, _name=_name):
    path = _hf(d)
    entry = path / _name
    _replace(entry, _link_to("../../blobs/0123456789abcdef"))
    return _load_hf(path), Refused([str(entry), "dangling"])

  @case(f"hf entry: {_which} is a symlink to /dev/zero")
  def _(d, _name=_name):
    path = _hf(d)
    entry = path / _name
    _replace(entry, _link_to("/dev/zero"))
    return _load_hf(path), Refused([str(entry), "/dev/zero"])

  @case(f"hf entry: {_which} is a FIFO")
  def _(d, _name=_name):
    path = _hf(d)
    entry = path / _name
    _replace(entry, os.mkfifo)
    return _load_hf(path), Refused([str(entry), "FIFO"])


@case("hf entry: pytorch_model.bin is a FIFO")
def _(d):
  path = _hf(d)
  for name in ("model.safetensors", "model.safetensors.sha256.json"):
    os.remove(path / name)
  os.mkfifo(path / "pytorch_model.bin")
  return _load_hf(path), Refused([str(path / "pytorch_model.bin"), "FIFO"])


@case("hf entry: a shard is a symlink leaving the model folder")
def _(d):
  path = _hf(d)
  os.rename(path / "model.safetensors", path / "model-00001-of-00001.safetensors")
  os.remove(path / "model.safetensors.sha256.json")
  (path / "model.safetensors.index.json").write_text(
      json.dumps({"weight_map": {"shared.weight": "model-00001-of-00001.safetensors"}}))
  shard = path / "model-00001-of-00001.safetensors"
  _replace(shard, _link_to(_outside_copy(d, shard)))
  return _load_hf(path), Refused([str(shard), "leaves the checkpoint"])


def _hf_cache(d: pathlib.Path, link=None) -> pathlib.Path:
  """The Hugging Face hub cache layout: models--org--name/snapshots/<rev>/<file> ->
  ../../blobs/<sha256>; `link(name, blob)` may return another target for one file."""
  src = _hf(d / "src")
  root = d / "hub" / "models--org--tiny"
  rev = "0123456789abcdef0123456789abcdef01234567"
  snapshot = root / "snapshots" / rev
  (root / "blobs").mkdir(parents=True)
  snapshot.mkdir(parents=True)
  (root / "refs").mkdir()
  (root / "refs" / "main").write_text(rev)
  for name in sorted(os.listdir(src)):
    data = (src / name).read_bytes()
    blob = root / "blobs" / hashlib.sha256(data).hexdigest()
    blob.write_bytes(data)
    target = (link and link(name, blob)) or os.path.relpath(blob, snapshot)
    os.symlink(target, snapshot / name)
  shutil.rmtree(src)
  return snapshot


@case("hf cache layout: snapshots/<rev> links into blobs/")
def _(d):
  return _load_hf(_hf_cache(d)), Loaded(HF_PARAMS)


@case("hf cache layout: weights link leaving the model's cache root")
def _(d):
  def link(name, blob):
    if name == "model.safetensors":
      return str(_outside_copy(d, blob))
  snapshot = _hf_cache(d, link)
  return _load_hf(snapshot), Refused([str(snapshot / "model.safetensors"), "leaves the checkpoint"])


@case("hf cache layout: weights blob not downloaded (dangling)")
def _(d):
  snapshot = _hf_cache(d)
  os.remove(os.path.realpath(snapshot / "model.safetensors"))
  return _load_hf(snapshot), Refused([str(snapshot / "model.safetensors"), "dangling"])


# A model folder inside the cache folder must stay inside its own models--org--name root.
@case("hf cache layout: link into another model's blobs")
def _(d):
  other = d / "hub" / "models--org--other" / "blobs"
  def link(name, blob):
    if name == "config.json":
      other.mkdir(parents=True)
      shutil.copyfile(blob, other / blob.name)
      return os.path.relpath(other / blob.name, blob.parent.parent / "snapshots" / "x")
  snapshot = _hf_cache(d, link)
  return _load_hf(snapshot), Refused([str(snapshot / "config.json"), "leaves the checkpoint"])



# ----------------------------------------------------------------------------- Git LFS pointers
_LFS = (b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e"
        b"2ca24d17e2393\nsize 12345\n")


@case("t5x entry: msgpack file is an unfetched Git LFS pointer")
def _(d):
  path = _t5x(d)
  (path / "checkpoint").write_bytes(_LFS)
  return _read_t5x(path), Refused([str(path / "checkpoint"), "git lfs pull"])


@case("t5x entry: a chunk is an unfetched Git LFS pointer")
def _(d):
  path, entry = _t5x_entry(d, "chunk")
  entry.write_bytes(_LFS)
  return _read_t5x(path), Refused([str(entry), "git lfs pull"])


@case("hf entry: weights are an unfetched Git LFS pointer")
def _(d):
  path = _hf(d)
  (path / "model.safetensors").write_bytes(_LFS)
  return _load_hf(path), Refused([str(path / "model.safetensors"), "git lfs pull"])
