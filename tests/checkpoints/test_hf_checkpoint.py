"""Hugging Face T5 <-> T5X mapping, checked against transformers' own T5 in torch."""
import json
import os

import ml_dtypes
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import save_file

from prompt_tuning_jax.checkpoints import entries, hf, t5x, tree
from prompt_tuning_jax.checkpoints.validation import (
  CheckpointMismatchError,
  param_shapes,
)
from prompt_tuning_jax.model.config import SIZES, T5Config

T5_1_0_TINY = T5Config(vocab_size=50, emb_dim=6, num_heads=2, head_dim=4, mlp_dim=10, num_encoder_layers=2,
                       num_decoder_layers=1, mlp_activations=("relu",), logits_via_embedding=True,
                       relative_attention_num_buckets=8)


@pytest.fixture(scope="module")
def tiny():
  path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "testdata", "t5x_checkpoints", "test_t5_tiny.checkpoint_0")
  return t5x.read_t5x_checkpoint(path).params


def _random_params(cfg, seed=0):
  rng = np.random.default_rng(seed)
  return tree.unflatten({k: rng.normal(size=s.shape).astype(np.float32)
                         for k, s in tree.flatten(param_shapes(cfg)).items()})


def _assert_bit_identical(a, b):
  fa, fb = tree.flatten(a), tree.flatten(b)
  assert sorted(fa) == sorted(fb)
  for k in fa:
    assert fa[k].dtype == fb[k].dtype and fa[k].shape == fb[k].shape and fa[k].tobytes() == fb[k].tobytes(), k


def test_t5x_to_hf_names_shapes_and_config(tiny):
  state, config = hf.t5x_to_hf(tiny, SIZES["tiny_inline"])
  assert len(state) == len(tree.flatten(tiny)) == 52  # one HF weight per T5X leaf
  q = state["encoder.block.1.layer.0.SelfAttention.q.weight"]
  assert q.shape == (12, 8)  # [out = H*k, in = d]
  np.testing.assert_array_equal(q, tiny["encoder"]["layers_1"]["attention"]["query"]["kernel"].T)
  np.testing.assert_array_equal(state["decoder.block.1.layer.1.EncDecAttention.o.weight"],
                                tiny["decoder"]["layers_1"]["encoder_decoder_attention"]["out"]["kernel"].T)
  np.testing.assert_array_equal(state["decoder.block.0.layer.2.DenseReluDense.wi_1.weight"],
                                tiny["decoder"]["layers_0"]["mlp"]["wi_1"]["kernel"].T)
  np.testing.assert_array_equal(state["decoder.block.1.layer.1.layer_norm.weight"],
                                tiny["decoder"]["layers_1"]["pre_cross_attention_layer_norm"]["scale"])
  assert state["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].shape == (32, 4)
  assert state["lm_head.weight"].shape == (32128, 8)
  assert config["d_model"] == 8 and config["d_kv"] == 3 and config["d_ff"] == 16 and config["num_heads"] == 4
  assert config["feed_forward_proj"] == "gated-gelu" and config["tie_word_embeddings"] is False
  assert config["architectures"] == ["T5ForConditionalGeneration"] and config["decoder_start_token_id"] == 0


def test_hf_round_trip_lossless_via_safetensors(tmp_path, tiny):
  out = hf.save_hf_checkpoint(str(tmp_path / "hf"), tiny, SIZES["tiny_inline"])
  assert sorted(os.listdir(out)) == ["config.json", "model.safetensors", "model.safetensors.sha256.json"]
  assert sorted(os.listdir(tmp_path)) == ["hf"]  # no staging directory left
  params, cfg = hf.load_hf_checkpoint(out)
  assert cfg == SIZES["tiny_inline"]
  _assert_bit_identical(params, tiny)
  hf.save_hf_checkpoint(out, tiny, SIZES["tiny_inline"])  # into an existing directory
  _assert_bit_identical(hf.load_hf_checkpoint(out)[0], tiny)


def test_from_pretrained_gives_untied_unscaled_t5_1_1(tmp_path, tiny):
  out = hf.save_hf_checkpoint(str(tmp_path / "hf"), tiny, SIZES["tiny_inline"])
  model, info = transformers.T5ForConditionalGeneration.from_pretrained(out, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
  # transformers 5 forces config.tie_word_embeddings=True but keeps distinct lm_head values
  # and reads our tie_word_embeddings=False as "do not scale by 1/sqrt(d)".
  assert model.config.scale_decoder_outputs is False
  assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
  np.testing.assert_array_equal(model.lm_head.weight.detach().numpy(), tiny["decoder"]["logits_dense"]["kernel"].T)
  np.testing.assert_array_equal(model.shared.weight.detach().numpy(), tiny["token_embedder"]["embedding"])
  # Orientation: torch Linear(x) must equal T5X's x @ kernel.
  x = np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32)
  q = model.encoder.block[1].layer[0].SelfAttention.q(torch.from_numpy(x)).detach().numpy()
  np.testing.assert_allclose(q, x @ tiny["encoder"]["layers_1"]["attention"]["query"]["kernel"], rtol=1e-5, atol=1e-6)
  rel = model.decoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight.detach().numpy()
  np.testing.assert_array_equal(rel, tiny["decoder"]["relpos_bias"]["rel_embedding"].T)
  # transformers' own loader and our in-memory helper must build the same network.
  ours = hf.to_hf_torch_model(tiny, SIZES["tiny_inline"])
  ids = torch.tensor([[5, 900, 31000, 7, 1, 0], [3, 2, 1, 0, 0, 0]])
  dec = torch.tensor([[0, 44, 17], [0, 8, 1]])
  with torch.no_grad():
    ref = model.eval()(input_ids=ids, attention_mask=(ids != 0).long(), decoder_input_ids=dec).logits
    got = ours(input_ids=ids, attention_mask=(ids != 0).long(), decoder_input_ids=dec).logits
  np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)


def test_to_hf_torch_model_t5_1_1(tiny):
  model = hf.to_hf_torch_model(tiny, SIZES["tiny_inline"])
  assert not model.training and model.lm_head.weight.dtype == torch.float32
  assert model.config.tie_word_embeddings is False and model.config.scale_decoder_outputs is False
  assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
  assert model.encoder.embed_tokens.weight.data_ptr() == model.shared.weight.data_ptr()
  assert model.decoder.embed_tokens.weight.data_ptr() == model.shared.weight.data_ptr()
  np.testing.assert_array_equal(model.lm_head.weight.detach().numpy(), tiny["decoder"]["logits_dense"]["kernel"].T)
  ids = torch.tensor([[3, 31999, 12]])
  np.testing.assert_array_equal(model.encoder.embed_tokens(ids)[0].detach().numpy(),
                                tiny["token_embedder"]["embedding"][[3, 31999, 12]])
  h = np.random.default_rng(2).normal(size=(1, 2, 8)).astype(np.float32)
  logits = model.lm_head(torch.from_numpy(h)).detach().numpy()
  np.testing.assert_allclose(logits, h @ tiny["decoder"]["logits_dense"]["kernel"], rtol=1e-5, atol=1e-5)


def test_t5_1_0_tied_relu(tmp_path):
  params = _random_params(T5_1_0_TINY)
  state, config = hf.t5x_to_hf(params, T5_1_0_TINY)
  assert "lm_head.weight" not in state and config["feed_forward_proj"] == "relu" and config["tie_word_embeddings"]
  assert state["encoder.block.1.layer.1.DenseReluDense.wi.weight"].shape == (10, 6)
  model = hf.to_hf_torch_model(params, T5_1_0_TINY)
  assert model.config.scale_decoder_outputs is True
  assert model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr()
  # HF exports of T5 1.0 carry the tied copies; they are tolerated.
  full = dict(state, **{"lm_head.weight": state["shared.weight"], "encoder.embed_tokens.weight": state["shared.weight"],
                        "decoder.embed_tokens.weight": state["shared.weight"]})
  got, cfg = hf.hf_to_t5x(full, config)
  assert cfg == T5_1_0_TINY
  _assert_bit_identical(got, params)


def test_pytorch_bin_bfloat16_and_sharded_index(tmp_path):
  params = t5x.cast_params(_random_params(SIZES["tiny_zarr"]), "bfloat16")
  state, config = hf.t5x_to_hf(params, SIZES["tiny_zarr"])
  assert state["shared.weight"].dtype == ml_dtypes.bfloat16 and config["dtype"] == "bfloat16"
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "config.json").write_text(json.dumps(config))
  tensors = {k: torch.from_numpy(v.view(np.int16)).view(torch.bfloat16) for k, v in state.items()}
  torch.save(tensors, bin_dir / "pytorch_model.bin")
  got, cfg = hf.load_hf_checkpoint(str(bin_dir))
  assert cfg == SIZES["tiny_zarr"]
  _assert_bit_identical(got, params)
  shard_dir = tmp_path / "sharded"
  shard_dir.mkdir()
  (shard_dir / "config.json").write_text(json.dumps(config))
  keys = sorted(state)
  halves = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
  for name, names in halves.items():
    save_file({k: state[k] for k in names}, str(shard_dir / name))
  weight_map = {k: name for name, names in halves.items() for k in names}
  (shard_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
  _assert_bit_identical(hf.load_hf_checkpoint(str(shard_dir))[0], params)


def test_refuses_missing_unknown_and_misshaped_keys(tiny):
  state, config = hf.t5x_to_hf(tiny, SIZES["tiny_inline"])
  bad = dict(state)
  del bad["decoder.block.1.layer.2.DenseReluDense.wo.weight"]
  bad["encoder.block.0.layer.0.SelfAttention.extra.weight"] = np.zeros(3, np.float32)
  bad["encoder.block.0.layer.0.SelfAttention.k.weight"] = np.zeros((8, 12), np.float32)  # not transposed
  with pytest.raises(CheckpointMismatchError) as err:
    hf.hf_to_t5x(bad, config, source="/some/hf_dir")
  msg = str(err.value)
  assert "/some/hf_dir" in msg
  assert "missing key: decoder.block.1.layer.2.DenseReluDense.wo.weight" in msg
  assert "unexpected key: encoder.block.0.layer.0.SelfAttention.extra.weight" in msg
  assert "encoder.block.0.layer.0.SelfAttention.k.weight: expected shape (12, 8), found (8, 12)" in msg
  untied_missing = dict(state)
  del untied_missing["lm_head.weight"]
  with pytest.raises(CheckpointMismatchError, match="missing key: lm_head.weight"):
    hf.hf_to_t5x(untied_missing, config)
  with pytest.raises(ValueError, match="feed_forward_proj='gated-silu'"):
    hf.hf_to_t5x(state, dict(config, feed_forward_proj="gated-silu"))


# ----------------------------------------------------------------------------- entries: links, FIFOs, the hub cache
def _hub_cache(tmp_path, tiny):
  """The layout huggingface_hub writes: models--org--name/snapshots/<rev>/<file> -> ../../blobs/<sha256>."""
  import hashlib
  src = hf.save_hf_checkpoint(str(tmp_path / "src"), tiny, SIZES["tiny_inline"])
  root = tmp_path / "hub" / "models--org--tiny"
  snapshot = root / "snapshots" / ("ab" * 20)
  (root / "blobs").mkdir(parents=True)
  snapshot.mkdir(parents=True)
  for name in sorted(os.listdir(src)):
    data = open(os.path.join(src, name), "rb").read()
    blob = root / "blobs" / hashlib.sha256(data).hexdigest()
    blob.write_bytes(data)
    os.symlink(os.path.join("..", "..", "blobs", blob.name), snapshot / name)
  return snapshot


def test_hub_cache_snapshot_loads_bit_identical(tmp_path, tiny):
  snapshot = _hub_cache(tmp_path, tiny)
  assert all(os.path.islink(snapshot / n) for n in os.listdir(snapshot))
  _assert_bit_identical(hf.load_hf_checkpoint(str(snapshot))[0], tiny)


def test_hub_cache_links_stay_inside_the_models_cache_root(tmp_path, tiny):
  snapshot = _hub_cache(tmp_path, tiny)
  weights = snapshot / "model.safetensors"
  other = tmp_path / "hub" / "models--org--other" / "blobs"
  other.mkdir(parents=True)
  os.rename(os.path.realpath(weights), other / "w")
  os.remove(weights)
  os.symlink(os.path.join("..", "..", "..", "models--org--other", "blobs", "w"), weights)
  with pytest.raises(entries.CheckpointEntryError, match=r"model.safetensors resolves to .*models--org--other/blobs/w, "
                                                         r"which leaves the checkpoint .*models--org--tiny"):
    hf.load_hf_checkpoint(str(snapshot))
  os.remove(weights)
  os.symlink(os.path.join("..", "..", "blobs", "0" * 64), weights)  # not downloaded yet
  with pytest.raises(entries.CheckpointEntryError, match="model.safetensors is a dangling symlink"):
    hf.load_hf_checkpoint(str(snapshot))


def test_config_or_weights_that_are_not_regular_files_are_refused(tmp_path, tiny):
  path = hf.save_hf_checkpoint(str(tmp_path / "hf"), tiny, SIZES["tiny_inline"])
  config = os.path.join(path, "config.json")
  os.rename(config, tmp_path / "config.json")
  os.mkfifo(config)  # reading it would block forever
  with pytest.raises(entries.CheckpointEntryError, match="config.json is a FIFO"):
    hf.load_hf_checkpoint(path)
  os.remove(config)
  os.symlink("/dev/zero", config)  # reading it would never end
  with pytest.raises(entries.CheckpointEntryError, match="config.json resolves to /dev/zero"):
    hf.load_hf_checkpoint(path)
  os.remove(config)
  os.symlink(tmp_path / "config.json", config)  # a real config, but outside the model folder
  with pytest.raises(entries.CheckpointEntryError, match="leaves the checkpoint"):
    hf.load_hf_checkpoint(path)
  os.remove(config)
  os.rename(tmp_path / "config.json", config)
  _assert_bit_identical(hf.load_hf_checkpoint(path)[0], tiny)
