"""T5X checkpoint reading/writing against the two real fixtures and hand-made trees."""
import gzip
import json
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import ml_dtypes
import msgpack
import numpy as np
import pytest
import tensorstore as ts

from prompt_tuning_jax.checkpoints import entries, fs, t5x, tree
from prompt_tuning_jax.checkpoints.t5x import (
  CheckpointCorruptError,
  CheckpointMismatchError,
)
from prompt_tuning_jax.model.config import SIZES, T5Config


@pytest.fixture
def inline_path(testdata):
  return str(testdata / "t5x_checkpoints" / "test_t5_tiny.checkpoint_0")


@pytest.fixture
def zarr_dir(testdata):
  return str(testdata / "t5x_checkpoints" / "test_t5_1_1_tiny" / "checkpoint_3")


def _raw_target(file):
  """Independent decode: plain msgpack, ext type 1 = packed (shape, dtype, bytes)."""
  with open(file, "rb") as f:
    raw = msgpack.unpackb(f.read(), raw=False, strict_map_key=False)
  out = {}
  for key, leaf in tree.flatten(raw["optimizer"]["target"]).items():
    if isinstance(leaf, msgpack.ExtType):
      assert leaf.code == 1
      shape, dtype, buf = msgpack.unpackb(leaf.data, raw=False)
      out[key] = np.frombuffer(buf, dtype=dtype).reshape(shape)
  return raw, out


def _assert_bit_identical(a, b):
  fa, fb = tree.flatten(a), tree.flatten(b)
  assert sorted(fa) == sorted(fb)
  for k in fa:
    x, y = np.asarray(fa[k]), np.asarray(fb[k])
    assert x.dtype == y.dtype and x.shape == y.shape, k
    assert x.tobytes() == y.tobytes(), k


def test_inline_fixture_loads_and_matches_raw_msgpack(inline_path):
  ckpt = t5x.read_t5x_checkpoint(inline_path)
  assert ckpt.step == 0
  p = ckpt.params
  assert p["token_embedder"]["embedding"].shape == (32128, 8)
  assert p["encoder"]["layers_1"]["attention"]["query"]["kernel"].shape == (8, 12)
  assert p["decoder"]["layers_0"]["encoder_decoder_attention"]["out"]["kernel"].shape == (12, 8)
  assert p["encoder"]["relpos_bias"]["rel_embedding"].shape == (4, 32)
  assert p["decoder"]["logits_dense"]["kernel"].shape == (8, 32128)
  assert p["decoder"]["layers_1"]["mlp"]["wi_1"]["kernel"].shape == (8, 16)
  assert all(v.dtype == np.float32 for v in tree.flatten(p).values())
  raw, expected = _raw_target(inline_path)
  assert raw["version"] == 3 and len(expected) == len(tree.flatten(p)) == 52
  for key, value in expected.items():
    np.testing.assert_array_equal(tree.flatten(p)[key], value)


def test_zarr_fixture_loads_and_matches_direct_tensorstore(zarr_dir):
  ckpt = t5x.read_t5x_checkpoint(zarr_dir)
  assert ckpt.step == 3
  p = ckpt.params
  emb = p["token_embedder"]["embedding"]
  assert emb.shape == (32128, 4) and emb.dtype == np.float32  # cropped from 8 x 4096 padded rows
  assert p["decoder"]["logits_dense"]["kernel"].shape == (4, 32128)
  assert p["encoder"]["relpos_bias"]["rel_embedding"].shape == (2, 4)
  direct = ts.open({"driver": "zarr", "kvstore": {
      "driver": "file", "path": os.path.join(zarr_dir, "target.decoder.logits_dense.kernel")}}).result()
  np.testing.assert_array_equal(p["decoder"]["logits_dense"]["kernel"], direct.read().result())
  # Last (padded) chunk of the embedding decoded by hand: gzip + little-endian f32.
  with open(os.path.join(zarr_dir, "target.token_embedder.embedding", "7.0"), "rb") as f:
    chunk = np.frombuffer(gzip.decompress(f.read()), "<f4").reshape(4096, 4)
  np.testing.assert_array_equal(emb[7 * 4096:], chunk[:32128 - 7 * 4096])
  _, inline = _raw_target(os.path.join(zarr_dir, "checkpoint"))
  assert set(inline) == {k for k in tree.flatten(p) if k.endswith("scale") or k.endswith("rel_embedding")}
  for key, value in inline.items():
    np.testing.assert_array_equal(tree.flatten(p)[key], value)


def test_path_forms_and_optimizer_state(zarr_dir):
  a = t5x.read_t5x_checkpoint(zarr_dir + "/")
  b = t5x.read_t5x_checkpoint(os.path.join(zarr_dir, "checkpoint"), restore_optimizer_state=True)
  _assert_bit_identical(a.params, b.params)
  assert a.param_states is None
  v = b.param_states["encoder"]["layers_0"]["attention"]["key"]["kernel"]
  assert v["v"].shape == (4, 4) and v["v_row"].shape == (1,)
  with pytest.raises(FileNotFoundError, match="checkpoint_9"):
    t5x.read_t5x_checkpoint(os.path.join(os.path.dirname(zarr_dir), "checkpoint_9"))


def test_read_one_variable_or_slice(zarr_dir, inline_path):
  full = t5x.read_t5x_checkpoint(zarr_dir).params
  kernel = t5x.read_t5x_variable(zarr_dir, "decoder/logits_dense/kernel")
  np.testing.assert_array_equal(kernel, full["decoder"]["logits_dense"]["kernel"])
  part = t5x.read_t5x_array(zarr_dir, "token_embedder/embedding", (slice(4000, 4200), slice(1, 3)))
  np.testing.assert_array_equal(part, full["token_embedder"]["embedding"][4000:4200, 1:3])
  scale = t5x.read_t5x_array(inline_path, "encoder/encoder_norm/scale", (slice(2, 5),))
  full_scale = t5x.read_t5x_checkpoint(inline_path).params["encoder"]["encoder_norm"]["scale"]
  np.testing.assert_array_equal(scale, full_scale[2:5])
  with pytest.raises(CheckpointMismatchError, match="encoder/prompt/prompt/prompt"):
    t5x.read_t5x_variable(zarr_dir, "encoder/prompt/prompt/prompt")


def test_shapes_read_no_array_data(zarr_dir, monkeypatch):
  def no_open(*args, **kwargs):
    raise AssertionError("read_t5x_shapes must not open arrays")
  t5x._cached_index.cache_clear()
  monkeypatch.setattr(ts, "open", no_open)
  shapes = t5x.read_t5x_shapes(zarr_dir)
  assert shapes["token_embedder"]["embedding"] == t5x.ShapeDtype((32128, 4), np.dtype(np.float32))
  assert shapes["decoder"]["layers_1"]["mlp"]["wo"]["kernel"].shape == (8, 4)
  assert len(tree.flatten(shapes)) == 52


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16])
def test_write_read_round_trip_bit_identical(tmp_path, dtype):
  rng = np.random.default_rng(0)
  params = {"token_embedder": {"embedding": rng.normal(size=(37, 6)).astype(dtype)},
            "encoder": {"encoder_norm": {"scale": rng.normal(size=(6,)).astype(dtype)},
                        "prompt": {"prompt": {"prompt": rng.normal(size=(5, 6)).astype(np.float32)}}}}
  states = {"token_embedder": {"embedding": {"v_row": np.arange(37, dtype=np.float32)}}}
  path = t5x.write_t5x_checkpoint(str(tmp_path), params, 12, inline_max_bytes=64, chunk_max_bytes=100,
                                  param_states=states)
  assert path == str(tmp_path / "checkpoint_12")
  assert sorted(os.listdir(tmp_path)) == ["checkpoint_12"]  # no temporary left over
  assert os.path.isdir(tmp_path / "checkpoint_12" / "target.token_embedder.embedding")
  assert os.path.isdir(tmp_path / "checkpoint_12" / "state.param_states.token_embedder.embedding.v_row")
  assert not os.path.exists(tmp_path / "checkpoint_12" / "target.encoder.encoder_norm.scale")  # inline
  got = t5x.read_t5x_checkpoint(path, restore_optimizer_state=True)
  assert got.step == 12
  _assert_bit_identical(got.params, params)
  _assert_bit_identical(got.param_states, states)
  # Readable by a plain tensorstore open too (independent of our reader), padded chunks.
  direct = ts.open({"driver": "zarr", "kvstore": {
      "driver": "file", "path": path + "/target.token_embedder.embedding"}}).result()
  assert direct.chunk_layout.read_chunk.shape[0] < 37
  assert direct.read().result().tobytes() == params["token_embedder"]["embedding"].tobytes()
  with pytest.raises(FileExistsError, match="checkpoint_12"):
    t5x.write_t5x_checkpoint(str(tmp_path), params, 12)


def test_rewrite_of_real_fixture_is_lossless(tmp_path, zarr_dir):
  src = t5x.read_t5x_checkpoint(zarr_dir)
  path = t5x.write_t5x_checkpoint(str(tmp_path), src.params, src.step)
  _assert_bit_identical(t5x.read_t5x_checkpoint(path).params, src.params)


@pytest.mark.parametrize("fail_in", ["_write_zarr", "rename"])
def test_failed_write_leaves_no_checkpoint(tmp_path, monkeypatch, fail_in):
  calls = []
  if fail_in == "_write_zarr":
    real = t5x._write_zarr

    def flaky(*args):
      calls.append(1)
      if len(calls) == 2:
        raise OSError("disk full (simulated)")
      return real(*args)
    monkeypatch.setattr(t5x, "_write_zarr", flaky)
  else:
    monkeypatch.setattr(fs, "rename", lambda *a: (_ for _ in ()).throw(OSError("rename failed (simulated)")))
  params = {"a": {"kernel": np.ones((64, 64), np.float32)}, "b": {"kernel": np.ones((64, 64), np.float32)}}
  with pytest.raises(OSError, match="simulated"):
    t5x.write_t5x_checkpoint(str(tmp_path), params, 5, inline_max_bytes=16)
  assert os.listdir(tmp_path) == []
  with pytest.raises(FileNotFoundError):
    t5x.read_t5x_checkpoint(str(tmp_path / "checkpoint_5"))


def test_killed_write_leaves_no_checkpoint(tmp_path):
  """A hard crash (os._exit mid-write, no cleanup runs) never yields checkpoint_<step>."""
  script = textwrap.dedent(f"""
    import os, numpy as np
    from prompt_tuning_jax.checkpoints import t5x
    real = t5x._write_zarr
    def dying(*args):
      real(*args)
      os._exit(3)
    t5x._write_zarr = dying
    t5x.write_t5x_checkpoint({str(tmp_path)!r}, {{"a": np.ones((64, 64), np.float32)}}, 7, inline_max_bytes=16)
  """)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", script], env=env, cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          capture_output=True, timeout=60)
  assert result.returncode == 3, result.stderr.decode()[-2000:]
  left = os.listdir(tmp_path)
  assert len(left) == 1 and left[0].startswith("checkpoint_7.tmp-")  # only the temporary
  with pytest.raises(FileNotFoundError):
    t5x.read_t5x_checkpoint(str(tmp_path / "checkpoint_7"))


def test_mismatch_lists_every_problem(zarr_dir):
  params = t5x.read_t5x_checkpoint(zarr_dir).params
  flat = tree.flatten(params)
  del flat["encoder/layers_1/mlp/wo/kernel"]
  flat["encoder/extra/kernel"] = np.zeros((2, 2), np.float32)
  flat["encoder/layers_0/attention/query/kernel"] = np.zeros((4, 6), np.float32)
  expected = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), t5x.param_shapes(SIZES["tiny_zarr"]),
                          is_leaf=lambda x: isinstance(x, t5x.ShapeDtype))
  with pytest.raises(CheckpointMismatchError) as err:
    t5x.validate_params(tree.unflatten(flat), expected, source=zarr_dir)
  msg = str(err.value)
  assert zarr_dir in msg
  assert "missing" in msg and "encoder/layers_1/mlp/wo/kernel" in msg
  assert "unexpected" in msg and "encoder/extra/kernel" in msg
  assert "encoder/layers_0/attention/query/kernel" in msg and "(4, 4)" in msg and "(4, 6)" in msg


def test_vocab_mismatch_called_out(zarr_dir):
  params = t5x.read_t5x_checkpoint(zarr_dir).params
  t5x.validate_params(params, t5x.param_shapes(SIZES["tiny_zarr"]), source=zarr_dir)  # fits
  with pytest.raises(CheckpointMismatchError) as err:
    t5x.validate_params(params, t5x.param_shapes(SIZES["tiny_zarr"].replace(vocab_size=32000)), source=zarr_dir)
  msg = str(err.value)
  assert "vocabulary size mismatch" in msg and "32000" in msg and "32128" in msg
  assert "token_embedder/embedding: expected shape (32000, 4), found (32128, 4)" in msg


def test_expected_shapes_checked_before_any_array_is_read(zarr_dir, monkeypatch):
  t5x._cached_index.cache_clear()
  monkeypatch.setattr(ts, "open", lambda *a, **k: pytest.fail("an array was read before validation"))
  with pytest.raises(CheckpointMismatchError, match="vocabulary size mismatch"):
    t5x.read_t5x_checkpoint(zarr_dir, expected=t5x.param_shapes(SIZES["tiny_zarr"].replace(vocab_size=100)))
  monkeypatch.undo()
  ckpt = t5x.read_t5x_checkpoint(zarr_dir, expected=t5x.param_shapes(SIZES["tiny_zarr"]))
  assert ckpt.params["token_embedder"]["embedding"].shape == (32128, 4)


def test_truncated_or_garbled_msgpack_is_corrupt(tmp_path, inline_path):
  data = open(inline_path, "rb").read()
  for name, content in (("half.checkpoint_0", data[:len(data) // 2]), ("junk.checkpoint_0", b"\xc1" * 100),
                        ("empty.checkpoint_0", b"")):
    bad = tmp_path / name
    bad.write_bytes(content)
    with pytest.raises(CheckpointCorruptError, match=str(bad)):
      t5x.read_t5x_checkpoint(str(bad))


def test_corrupt_or_missing_zarr_chunk(tmp_path, zarr_dir):
  copy = tmp_path / "checkpoint_3"
  shutil.copytree(zarr_dir, copy)
  t5x.read_t5x_checkpoint(str(copy))  # the pristine copy reads
  (copy / "target.token_embedder.embedding" / "3.0").write_bytes(b"not gzip")
  with pytest.raises(CheckpointCorruptError, match="token_embedder"):
    t5x.read_t5x_checkpoint(str(copy))
  os.remove(copy / "target.token_embedder.embedding" / "3.0")  # would silently read as zeros
  with pytest.raises(CheckpointCorruptError, match="missing chunk.*3.0"):
    t5x.read_t5x_array(str(copy), "token_embedder/embedding")
  shutil.rmtree(copy / "target.encoder.layers_0.mlp.wo.kernel")
  with pytest.raises(CheckpointCorruptError, match="target.encoder.layers_0.mlp.wo.kernel"):
    t5x.read_t5x_array(str(copy), "encoder/layers_0/mlp/wo/kernel")


def test_spec_paths_are_relative_to_checkpoint_dir(tmp_path, zarr_dir):
  """T5X writes gs:// checkpoints with kvstore {'driver': 'gcs', 'bucket': <placeholder>,
  'path': <relative>}; the path must still resolve against the checkpoint directory."""
  copy = tmp_path / "checkpoint_3"
  shutil.copytree(zarr_dir, copy)
  raw = msgpack.unpackb((copy / "checkpoint").read_bytes(), raw=False, strict_map_key=False)
  spec = raw["optimizer"]["target"]["token_embedder"]["embedding"]
  spec["kvstore"] = {"driver": "gcs", "bucket": "t5x-dummy-bucket", "path": spec["kvstore"]["path"]}
  (copy / "checkpoint").write_bytes(msgpack.packb(raw, use_bin_type=True))
  np.testing.assert_array_equal(t5x.read_t5x_variable(str(copy), "token_embedder/embedding"),
                                t5x.read_t5x_variable(zarr_dir, "token_embedder/embedding"))


def test_infer_config_from_both_fixtures(inline_path, zarr_dir):
  assert t5x.infer_t5_config(t5x.read_t5x_shapes(inline_path)) == SIZES["tiny_inline"]
  assert t5x.infer_t5_config(t5x.read_t5x_checkpoint(zarr_dir).params) == SIZES["tiny_zarr"]


def test_infer_config_t5_1_0_and_errors():
  cfg = T5Config(vocab_size=100, emb_dim=6, num_heads=3, head_dim=5, mlp_dim=7, num_encoder_layers=3,
                 num_decoder_layers=1, mlp_activations=("relu",), logits_via_embedding=True,
                 relative_attention_num_buckets=9)
  shapes = t5x.param_shapes(cfg)
  assert "wi" in shapes["encoder"]["layers_0"]["mlp"] and "logits_dense" not in shapes["decoder"]
  assert t5x.infer_t5_config(shapes) == cfg
  del shapes["encoder"]["relpos_bias"]
  with pytest.raises(CheckpointMismatchError, match="encoder/relpos_bias/rel_embedding"):
    t5x.infer_t5_config(shapes)


def test_cast_on_read(zarr_dir):
  ckpt = t5x.read_t5x_checkpoint(zarr_dir, dtype="bfloat16")
  emb = ckpt.params["token_embedder"]["embedding"]
  assert emb.dtype == ml_dtypes.bfloat16
  ref = t5x.read_t5x_variable(zarr_dir, "token_embedder/embedding").astype(ml_dtypes.bfloat16)
  assert emb.tobytes() == ref.tobytes()


def test_remote_code_path_via_file_url(tmp_path, zarr_dir):
  """URLs go through the fs layer's remote branch (as gs:// does); file:// exercises it offline."""
  url = "file://" + zarr_dir
  _assert_bit_identical(t5x.read_t5x_checkpoint(url).params, t5x.read_t5x_checkpoint(zarr_dir).params)
  params = {"a": {"kernel": np.arange(600, dtype=np.float32).reshape(20, 30)}, "b": np.ones(3, np.float32)}
  path = t5x.write_t5x_checkpoint("file://" + str(tmp_path), params, 2, inline_max_bytes=64)
  assert sorted(os.listdir(tmp_path)) == ["checkpoint_2"]
  _assert_bit_identical(t5x.read_t5x_checkpoint(path).params, params)


def test_gcs_kvstore_spec():
  assert fs.kvstore_spec("gs://t5-data/pretrained_models/x/checkpoint_1/target.a") == {
      "driver": "gcs", "bucket": "t5-data", "path": "pretrained_models/x/checkpoint_1/target.a/"}
  with pytest.raises(ValueError, match="s3://"):
    fs.kvstore_spec("s3://bucket/x")


# ----------------------------------------------------------------------------- entries and zarr metadata
EMB = "target.token_embedder.embedding"


def _copy(tmp_path, zarr_dir):
  copy = tmp_path / "checkpoint_3"
  shutil.copytree(zarr_dir, copy)
  return copy


def _ts_read(folder):
  """The independent reference: tensorstore reading the zarr folder itself."""
  return ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(folder)}}).result().read().result()


def test_dangling_dev_zero_or_fifo_chunk_is_refused_not_read_as_zeros(tmp_path, zarr_dir):
  copy = _copy(tmp_path, zarr_dir)
  chunk = copy / EMB / "3.0"
  os.remove(chunk)
  os.symlink("../.git/annex/objects/Xy/Zw/SHA256E-s1--0/SHA256E-s1--0", chunk)  # an unfetched git-annex file
  zeros = _ts_read(copy / EMB)
  assert not zeros[12288:16384].any() and zeros[:12288].all()  # what a reader that follows the link gets
  with pytest.raises(CheckpointCorruptError, match=r"missing chunk files \[.*3\.0 is a dangling symlink"):
    t5x.read_t5x_array(str(copy), "token_embedder/embedding")
  os.remove(chunk)
  os.symlink("/dev/zero", chunk)
  with pytest.raises(entries.CheckpointEntryError, match=r"3\.0 resolves to /dev/zero, which leaves the checkpoint"):
    t5x.read_t5x_array(str(copy), "token_embedder/embedding")
  os.remove(chunk)
  os.mkfifo(chunk)  # tensorstore would block on it forever
  with pytest.raises(entries.CheckpointEntryError, match=r"3\.0 is a FIFO"):
    t5x.read_t5x_array(str(copy), "token_embedder/embedding")


def test_links_inside_the_checkpoint_load_links_leaving_it_do_not(tmp_path, zarr_dir):
  copy = _copy(tmp_path, zarr_dir)
  (copy / ".objects").mkdir()
  for name in os.listdir(copy):
    if name.startswith("target."):
      os.rename(copy / name, copy / ".objects" / name)
      os.symlink(os.path.join(".objects", name), copy / name)
  os.symlink(copy, tmp_path / "linked")  # the checkpoint folder itself reached through a link
  want = t5x.read_t5x_checkpoint(zarr_dir).params
  _assert_bit_identical(t5x.read_t5x_checkpoint(str(tmp_path / "linked")).params, want)
  # The spec path stays 'target.token_embedder.embedding' (its text is inside); the real path is not.
  shutil.copytree(copy / ".objects" / EMB, tmp_path / "elsewhere")
  os.remove(copy / EMB)
  os.symlink(tmp_path / "elsewhere", copy / EMB)
  with pytest.raises(entries.CheckpointEntryError, match=f"{EMB} resolves to .*elsewhere, which leaves the checkpoint"):
    t5x.read_t5x_array(str(copy), "token_embedder/embedding")


@pytest.mark.parametrize("metadata", [
    {"compressor": {"id": "gzip", "level": 1}, "chunks": [4096, 4]},  # what T5X writes
    {"compressor": {"id": "zstd", "level": 3}, "chunks": [4096, 4]},  # jax array serialization
    {"compressor": None, "chunks": [5000, 3]},
    {"compressor": {"id": "gzip", "level": 9}, "chunks": [1000, 2], "dimension_separator": "/"},
])
def test_zarr_layouts_read_equal_to_tensorstore(tmp_path, zarr_dir, metadata):
  copy = _copy(tmp_path, zarr_dir)
  want = _ts_read(copy / EMB)
  shutil.rmtree(copy / EMB)
  spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": str(copy / EMB)},
          "metadata": dict(metadata, shape=list(want.shape), dtype="<f4")}
  ts.open(spec, create=True).result().write(want).result()
  on_disk = json.loads((copy / EMB / ".zarray").read_text())
  assert on_disk["compressor"] == metadata["compressor"] and on_disk["chunks"] == metadata["chunks"]
  np.testing.assert_array_equal(t5x.read_t5x_array(str(copy), "token_embedder/embedding"), want)
  np.testing.assert_array_equal(t5x.read_t5x_array(str(copy), "token_embedder/embedding", (slice(4000, 9000),)),
                                want[4000:9000])


@pytest.mark.parametrize("change,named", [
    ({"order": "F"}, "order 'F'"), ({"filters": [{"id": "delta", "dtype": "<f4"}]}, "filters"),
    ({"compressor": {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1}}, "compressor 'blosc'"),
    ({"dtype": "<c8"}, "dtype '<c8'"), ({"zarr_format": 3}, "zarr_format 3"),
    ({"chunks": [0, 4]}, "chunks"), ({"dimension_separator": "_"}, "dimension_separator"),
])
def test_zarr_metadata_not_implemented_is_refused_by_name(tmp_path, zarr_dir, change, named):
  copy = _copy(tmp_path, zarr_dir)
  zarray = copy / EMB / ".zarray"
  zarray.write_text(json.dumps(dict(json.loads(zarray.read_text()), **change)))
  if "order" in change:  # tensorstore honours it, and the C-order bytes come back permuted
    assert not np.array_equal(_ts_read(copy / EMB), _ts_read(zarr_dir + "/" + EMB))
  with pytest.raises(CheckpointCorruptError, match=f"{EMB}/.zarray has {named}"):
    t5x.read_t5x_array(str(copy), "token_embedder/embedding")


def test_huge_declared_chunk_grid_is_counted_not_listed(tmp_path, zarr_dir):
  copy = _copy(tmp_path, zarr_dir)
  raw = msgpack.unpackb((copy / "checkpoint").read_bytes(), raw=False, strict_map_key=False)
  raw["optimizer"]["target"]["token_embedder"]["embedding"].pop("metadata")
  (copy / "checkpoint").write_bytes(msgpack.packb(raw, use_bin_type=True))
  zarray = copy / EMB / ".zarray"
  zarray.write_text(json.dumps(dict(json.loads(zarray.read_text()), shape=[1 << 40, 4], chunks=[4096, 4])))
  with pytest.raises(CheckpointCorruptError, match=r"missing chunk files \['8\.0', '9\.0'.*268435448 of 268435456"):
    t5x.read_t5x_array(str(copy), "token_embedder/embedding")


def test_msgpack_file_through_dev_zero_or_fifo_is_refused(tmp_path, zarr_dir):
  copy = _copy(tmp_path, zarr_dir)
  os.remove(copy / "checkpoint")
  os.symlink("/dev/zero", copy / "checkpoint")  # read whole, it would never end
  with pytest.raises(entries.CheckpointEntryError, match="checkpoint resolves to /dev/zero"):
    t5x.read_t5x_checkpoint(str(copy))
  os.remove(copy / "checkpoint")
  os.mkfifo(copy / "checkpoint")
  with pytest.raises(entries.CheckpointEntryError, match="checkpoint is a FIFO"):
    t5x.read_t5x_checkpoint(str(copy))
