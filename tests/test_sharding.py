"""Mesh shapes, the rules table, per-device shard shapes, host layout, sharded loading.

Runs on 8 simulated CPU devices (tests/conftest.py sets
XLA_FLAGS=--xla_force_host_platform_device_count=8 before jax starts).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from prompt_tuning_jax.parallel import sharding
from prompt_tuning_jax.model.config import T5Config
from prompt_tuning_jax.model import t5

# Every sharded dim divides by 8: V=64, d=16, H*k=8*2=16, f=32, heads=8.
CFG = T5Config(vocab_size=64, emb_dim=16, num_heads=8, head_dim=2, mlp_dim=32,
               num_encoder_layers=2, num_decoder_layers=2)
MESHES = {1: (8, 1), 2: (4, 2), 4: (2, 4), 8: (1, 8)}


def random_params(boxed: bool, seed: int = 0):
  """Random values in the model's (boxed) param tree, without running the slow eager init."""
  rng = np.random.default_rng(seed)
  shapes = t5.param_shapes(CFG)
  tree = jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)
  return tree if boxed else nn.unbox(tree)


def test_eight_devices():
  assert len(jax.devices()) == 8, "set XLA_FLAGS=--xla_force_host_platform_device_count=8"


def test_rules_table_matches_t5x():
  # T5X partitioning.standard_logical_axis_rules (activation dims 1), plus prompt axes.
  one_d = dict(sharding.standard_logical_axis_rules(1))
  assert one_d == {"batch": "data", "vocab": "model", "mlp": "model", "heads": "model",
                   "joined_kv": "model", "kv": None, "embed": None, "length": None,
                   "relpos_buckets": None, "prompt": None, "prompt_embed": None,
                   # the delta methods' small axes (methods/), replicated like the prompt
                   "lora_rank": None, "adapter": None, "prefix": None, "prefix_embed": None,
                   "prefix_hidden": None, "intrinsic": None}
  two_d = sharding.standard_logical_axis_rules(2)
  assert ("embed", "data") in two_d
  # batch must win 'data' before embed does, so activations stay batch-sharded.
  names = [name for name, _ in two_d]
  assert names.index("batch") < names.index("embed")
  with pytest.raises(ValueError, match="parameter_partitioning_dims"):
    sharding.standard_logical_axis_rules(3)


@pytest.mark.parametrize("num_partitions", sorted(MESHES))
def test_make_mesh_shapes(num_partitions):
  mesh = sharding.make_mesh(sharding.PartitionConfig(num_partitions=num_partitions))
  assert mesh.axis_names == ("data", "model")
  assert mesh.devices.shape == MESHES[num_partitions]
  assert sorted(d.id for d in mesh.devices.flat) == list(range(8))


def test_make_mesh_errors_name_the_flag():
  with pytest.raises(ValueError, match="--num_partitions.*3 does not divide.*8"):
    sharding.make_mesh(sharding.PartitionConfig(num_partitions=3))
  with pytest.raises(ValueError, match="--model_parallel_submesh"):
    sharding.make_mesh(sharding.PartitionConfig(model_parallel_submesh=(3, 1, 1, 1)))
  with pytest.raises(ValueError, match="num_partitions"):
    sharding.PartitionConfig(num_partitions=0)
  mesh = sharding.make_mesh(sharding.PartitionConfig(model_parallel_submesh=(1, 2, 1, 2)))
  assert mesh.devices.shape == (2, 4)


@pytest.mark.parametrize("num_partitions", sorted(MESHES))
def test_param_shard_shapes(num_partitions):
  m = num_partitions
  config = sharding.PartitionConfig(num_partitions=m)
  mesh = sharding.make_mesh(config)
  params = sharding.shard_params(random_params(boxed=True), mesh, config.rules)
  shard = lambda x: x.sharding.shard_shape(x.shape)
  enc = params["encoder"]["layers_0"]
  assert shard(enc["mlp"]["wi_0"]["kernel"]) == (16, 32 // m)
  assert shard(enc["mlp"]["wo"]["kernel"]) == (32 // m, 16)
  assert shard(enc["attention"]["query"]["kernel"]) == (16, 16 // m)
  assert shard(enc["attention"]["out"]["kernel"]) == (16 // m, 16)
  assert shard(enc["pre_attention_layer_norm"]["scale"]) == (16,)
  assert shard(params["token_embedder"]["embedding"]) == (64 // m, 16)
  assert shard(params["decoder"]["logits_dense"]["kernel"]) == (16, 64 // m)
  assert shard(params["encoder"]["relpos_bias"]["rel_embedding"]) == (8 // m, 32)
  # The prompt's logical axes map to nothing: full [P, d] on every device.
  prompt = sharding.logical_to_sharding({"p": P("prompt", "prompt_embed")}, mesh, config.rules)["p"]
  assert prompt.shard_shape((5, 16)) == (5, 16)
  assert sharding.batch_sharding(mesh).shard_shape((16, 7)) == (16 // (8 // m), 7)
  assert sharding.replicated(mesh).shard_shape((16, 7)) == (16, 7)


def test_two_d_parameter_partitioning():
  config = sharding.PartitionConfig(num_partitions=2, parameter_partitioning_dims=2)
  mesh = sharding.make_mesh(config)
  shardings = sharding.logical_to_sharding(t5.param_shapes(CFG), mesh, config.rules)
  assert shardings["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"].shard_shape((16, 32)) == (4, 16)
  assert shardings["token_embedder"]["embedding"].shard_shape((64, 16)) == (32, 4)
  assert shardings["encoder"]["encoder_norm"]["scale"].shard_shape((16,)) == (4,)
  assert sharding.shard_shape((16, 32), shardings["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]) == (4, 16)


def test_sharded_forward_matches_single_device():
  config = sharding.PartitionConfig(num_partitions=2)
  mesh = sharding.make_mesh(config)
  model = t5.Transformer(CFG)
  params = random_params(boxed=False, seed=1)
  rng = np.random.default_rng(0)
  enc = jnp.asarray(rng.integers(1, 64, (8, 6)), jnp.int32)
  dec = jnp.asarray(rng.integers(1, 64, (8, 3)), jnp.int32)
  forward = jax.jit(lambda p, *b: model.apply({"params": p}, *b))
  expected = forward(params, enc, dec, dec)
  specs = sharding.logical_specs(t5.param_shapes(CFG))
  sharded = sharding.shard_params(params, mesh, config.rules, logical_axes=specs)
  batch = [jax.device_put(x, sharding.batch_sharding(mesh)) for x in (enc, dec, dec)]
  with jax.set_mesh(mesh), nn.logical_axis_rules(config.rules):
    got = jax.jit(lambda p, *b: model.apply({"params": p}, *b))(sharded, *batch)
  assert got.sharding.shard_shape(got.shape) == (2, 3, 32)
  np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-5)


def test_shard_params_errors():
  mesh = sharding.make_mesh(sharding.PartitionConfig(num_partitions=8))
  rules = sharding.standard_logical_axis_rules()
  with pytest.raises(ValueError, match="pass logical_axes"):
    sharding.shard_params({"w": np.zeros((4, 4))}, mesh, rules)
  with pytest.raises(ValueError, match=r"param mlp/kernel has shape \(4, 12\).*dim 1 \(12\)"):
    sharding.shard_params({"mlp": {"kernel": np.zeros((4, 12))}}, mesh, rules,
                          logical_axes={"mlp": {"kernel": P("embed", "mlp")}})


def test_layout_two_hosts_by_hand():
  # 8 devices on a (4, 2) mesh: rows [0,4) [4,8) [8,12) [12,16) for data 0..3; the
  # first 4 devices (data 0,1) belong to process 0 -> rows [0, 8) and [8, 16).
  devices = list(range(8))
  index_map = {d: (slice((d // 2) * 4, (d // 2 + 1) * 4),) for d in devices}
  owner = {d: d // 4 for d in devices}
  lay0 = sharding._layout_for(index_map, owner, 0, 16)
  lay1 = sharding._layout_for(index_map, owner, 1, 16)
  assert (lay0.shard_id, lay0.num_shards, lay0.rows) == (0, 2, slice(0, 8))
  assert (lay1.shard_id, lay1.num_shards, lay1.rows) == (1, 2, slice(8, 16))
  # (1, 8) mesh split over two hosts: both hold the whole batch -> one shard.
  index_map = {d: (slice(0, 16),) for d in devices}
  assert sharding._layout_for(index_map, owner, 1, 16) == sharding.DataLayout(0, 1, slice(0, 16))
  index_map = {d: (slice(d * 2, d * 2 + 2),) for d in devices}
  with pytest.raises(ValueError, match="non-contiguous"):
    sharding._layout_for(index_map, {d: d % 2 for d in devices}, 0, 16)


def test_make_global_batch_single_host():
  mesh = sharding.make_mesh(sharding.PartitionConfig(num_partitions=2))
  rows = np.arange(8 * 3, dtype=np.int32).reshape(8, 3)
  batch = sharding.make_global_batch({"inputs": rows}, mesh, 8)
  assert batch["inputs"].sharding.shard_shape((8, 3)) == (2, 3)
  np.testing.assert_array_equal(np.asarray(batch["inputs"]), rows)
  with pytest.raises(ValueError, match="batch size 6 is not divisible.*4"):
    sharding.data_layout(6, mesh)
  with pytest.raises(ValueError, match="'inputs' has 5 rows"):
    sharding.make_global_batch({"inputs": rows[:5]}, mesh, 8)


def test_load_params_sharded_reads_only_slices():
  config = sharding.PartitionConfig(num_partitions=2)
  mesh = sharding.make_mesh(config)  # (4, 2)
  rng = np.random.default_rng(0)
  full = {"encoder/layers_0/mlp/wi_0/kernel": rng.normal(size=(16, 32)).astype(np.float32),
          "token_embedder/embedding": rng.normal(size=(64, 16)).astype(np.float32),
          "encoder/encoder_norm/scale": rng.normal(size=(16,)).astype(np.float32)}
  axes = {"encoder/layers_0/mlp/wi_0/kernel": P("embed", "mlp"),
          "token_embedder/embedding": P("vocab", "embed"),
          "encoder/encoder_norm/scale": P("embed")}
  shardings = sharding.logical_to_sharding(axes, mesh, config.rules)
  requests = []

  def fake_read(name, index):
    requests.append((name, tuple(s.indices(n) for s, n in zip(index, full[name].shape))))
    return full[name][index]

  shapes = {k: v.shape for k, v in full.items()}
  loaded = sharding.load_params_sharded(fake_read, shapes, shardings)
  for name, value in full.items():
    np.testing.assert_array_equal(np.asarray(loaded[name]), value)
    assert loaded[name].sharding == shardings[name]
  by_name = {}
  for name, key in requests:
    by_name.setdefault(name, []).append(key)
  # Model-sharded arrays: two halves along the model-sharded dim, each read once, never whole.
  assert sorted(by_name["encoder/layers_0/mlp/wi_0/kernel"]) == [((0, 16, 1), (0, 16, 1)), ((0, 16, 1), (16, 32, 1))]
  assert sorted(by_name["token_embedder/embedding"]) == [((0, 32, 1), (0, 16, 1)), ((32, 64, 1), (0, 16, 1))]
  # Replicated arrays: one full read for the whole host, not one per device.
  assert by_name["encoder/encoder_norm/scale"] == [((0, 16, 1),)]
  nested = sharding.load_params_sharded(
      fake_read, {"encoder": {"encoder_norm": {"scale": (16,)}}},
      {"encoder": {"encoder_norm": {"scale": shardings["encoder/encoder_norm/scale"]}}})
  np.testing.assert_array_equal(np.asarray(nested["encoder"]["encoder_norm"]["scale"]),
                                full["encoder/encoder_norm/scale"])


def test_load_params_sharded_checks_reader_shapes():
  mesh = sharding.make_mesh(sharding.PartitionConfig(num_partitions=2))
  sh = sharding.logical_to_sharding({"w": P("embed", "mlp")}, mesh, sharding.standard_logical_axis_rules())
  with pytest.raises(ValueError, match=r"reading w.*got shape \(16, 32\), expected \(16, 16\)"):
    sharding.load_params_sharded(lambda name, index: np.zeros((16, 32)), {"w": (16, 32)}, sh)
  with pytest.raises(ValueError, match="no sharding for params"):
    sharding.load_params_sharded(lambda name, index: None, {"v": (2,)}, sh)
