"""The Flax T5 against an independent reference: Hugging Face's PyTorch T5 (float32).

The same weights go through both; logits must agree to a relative error under 1e-5
(T5 1.1 and T5 1.0, padded encoder inputs, full decoder and KV-cache decoder).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from prompt_tuning_jax.model import config
from prompt_tuning_jax.checkpoints import backbone, hf, t5x
from prompt_tuning_jax.model import decoding, t5
from prompt_tuning_jax.prompt import wrapper

V11 = config.T5Config(vocab_size=120, emb_dim=16, num_heads=4, head_dim=5, mlp_dim=24, num_encoder_layers=2,
                      num_decoder_layers=3, relative_attention_num_buckets=8, relative_attention_max_distance=20)
V10 = V11.replace(mlp_activations=("relu",), logits_via_embedding=True)


def _perturbed_params(cfg, seed=0):
  """Random init plus noise, so no weight keeps its structured init value (e.g. norms = 1)."""
  params = t5.init_params(cfg, jax.random.PRNGKey(seed))
  rng = np.random.RandomState(seed)
  return jax.tree.map(lambda x: np.asarray(x) + 0.1 * rng.randn(*x.shape).astype(np.float32), params)


def _batch(vocab_size, seed=0):
  rng = np.random.RandomState(seed)
  enc = rng.randint(2, vocab_size, (3, 30))
  enc[1, 20:] = 0  # encoder padding
  enc[2, 7:] = 0
  targets = rng.randint(2, vocab_size, (3, 12))
  targets[2, 5:] = 0
  dec_in = np.concatenate([np.zeros((3, 1), int), targets[:, :-1]], axis=1)
  return enc, dec_in, targets


def _hf_logits(params, cfg, enc, dec_in, targets):
  model = hf.to_hf_torch_model(params, cfg)
  with torch.no_grad():
    out = model(input_ids=torch.tensor(enc), attention_mask=torch.tensor(enc > 0).long(),
                decoder_input_ids=torch.tensor(dec_in), decoder_attention_mask=torch.tensor(targets > 0).long())
  return out.logits.numpy()


def _rel_err(ours, ref, valid):
  return np.abs(ours - ref)[valid].max() / np.abs(ref)[valid].max()


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [V11, V10], ids=["t5_1_1", "t5_1_0"])
def test_logits_match_huggingface(cfg):
  params = _perturbed_params(cfg)
  enc, dec_in, targets = _batch(cfg.vocab_size)
  ref = _hf_logits(params, cfg, enc, dec_in, targets)
  ours = np.asarray(t5.Transformer(cfg).apply({"params": params}, enc, dec_in, targets))
  valid = targets > 0
  assert ours.dtype == np.float32
  assert _rel_err(ours, ref, valid) < 1e-5


@pytest.mark.parametrize("cfg", [V11, V10], ids=["t5_1_1", "t5_1_0"])
def test_kv_cache_decoder_matches_huggingface(cfg):
  params = _perturbed_params(cfg, seed=1)
  enc, dec_in, targets = _batch(cfg.vocab_size, seed=1)
  ref = _hf_logits(params, cfg, enc, dec_in, targets)
  model = t5.Transformer(cfg)
  encoded, valid = model.apply({"params": params}, enc, method=t5.Transformer.encode)
  cache = decoding.init_cache(model, params, encoded, valid, dec_in.shape[1])
  step_fn = jax.jit(lambda c, tok: decoding.decode_step(model, params, c, encoded, valid, tok))
  steps = []
  for i in range(dec_in.shape[1]):
    logits, cache = step_fn(cache, jnp.asarray(dec_in[:, i]))
    steps.append(np.asarray(logits))
  ours = np.stack(steps, axis=1)
  assert _rel_err(ours, ref, targets > 0) < 1e-5


def test_padding_does_not_change_logits():
  """Appending pad tokens to the encoder input leaves the decoder's logits unchanged."""
  params = _perturbed_params(V11)
  enc, dec_in, targets = _batch(V11.vocab_size)
  padded = np.concatenate([enc, np.zeros((3, 9), enc.dtype)], axis=1)
  model = t5.Transformer(V11)
  a = model.apply({"params": params}, enc, dec_in, targets)
  b = model.apply({"params": params}, padded, dec_in, targets)
  np.testing.assert_allclose(np.asarray(a)[targets > 0], np.asarray(b)[targets > 0], rtol=1e-5, atol=1e-5)


def test_real_fixture_logits_match_huggingface(testdata):
  """The real T5X fixture, loaded by our reader, gives HF's logits through our network."""
  cfg = config.SIZES["tiny_inline"]
  params, step = backbone.load_frozen(str(testdata / "t5x_checkpoints/test_t5_tiny.checkpoint_0"), cfg)
  params = jax.device_get(params)
  assert step == 0
  enc, dec_in, targets = _batch(cfg.vocab_size, seed=3)
  ref = _hf_logits(params, cfg, enc, dec_in, targets)
  ours = np.asarray(t5.Transformer(cfg).apply({"params": params}, enc, dec_in, targets))
  assert _rel_err(ours, ref, targets > 0) < 1e-5


@pytest.mark.parametrize("fixture,size", [("test_t5_tiny.checkpoint_0", "tiny_inline"),
                                          ("test_t5_1_1_tiny/checkpoint_3", "tiny_zarr")])
def test_parameter_tree_equals_t5x_fixture(testdata, fixture, size):
  """Our parameter names and shapes are exactly those of real T5X checkpoints."""
  ours = jax.tree.map(lambda x: tuple(x.shape), nn.unbox(t5.param_shapes(config.SIZES[size])))
  theirs = jax.tree.map(lambda x: tuple(x.shape), t5x.read_t5x_shapes(str(testdata / "t5x_checkpoints" / fixture)),
                        is_leaf=lambda x: hasattr(x, "shape"))
  assert ours == theirs


def test_every_parameter_has_logical_axes():
  boxed = t5.param_shapes(V11)
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves and all(isinstance(x, nn.Partitioned) for x in leaves)
  specs = nn.get_partition_spec(boxed)
  assert specs["token_embedder"]["embedding"] == jax.sharding.PartitionSpec("vocab", "embed")
  assert specs["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"] == jax.sharding.PartitionSpec("embed", "mlp")
  assert specs["encoder"]["relpos_bias"]["rel_embedding"] == jax.sharding.PartitionSpec("heads", "relpos_buckets")


@pytest.mark.parametrize("size,expected", [("small", 76_961_664), ("base", 247_578_624), ("large", 783_151_104),
                                           ("xl", 2_849_759_232), ("xxl", 11_135_336_448)])
def test_parameter_counts_match_paper(size, expected):
  """The paper's counts are frozen model + a P=1 prompt (FACTS.md)."""
  cfg = config.SIZES[size]
  shapes = jax.eval_shape(lambda r: wrapper.make_model(cfg, wrapper.PromptConfig(length=1)).init(
      r, *(jnp.ones((1, 2), jnp.int32),) * 3)["params"], jax.random.PRNGKey(0))
  counted = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.unbox(shapes)))
  assert counted == expected
  assert config.num_params(cfg) + cfg.emb_dim == expected


@pytest.mark.slow
def test_bfloat16_activations_keep_float32_params_and_logits():
  cfg = V11.replace(dtype="bfloat16")
  params = _perturbed_params(cfg)
  enc, dec_in, targets = _batch(cfg.vocab_size)
  logits = t5.Transformer(cfg).apply({"params": params}, enc, dec_in, targets)
  ref = t5.Transformer(V11).apply({"params": params}, enc, dec_in, targets)
  assert all(x.dtype == np.float32 for x in jax.tree.leaves(params))
  assert logits.dtype == jnp.float32
  valid = targets > 0
  assert _rel_err(np.asarray(logits), np.asarray(ref), valid) < 0.1  # bf16 rounding, same function


def test_dropout_is_active_only_when_enabled():
  cfg = V11.replace(dropout_rate=0.5)
  params = _perturbed_params(cfg)
  enc, dec_in, targets = _batch(cfg.vocab_size)
  model = t5.Transformer(cfg)
  plain = model.apply({"params": params}, enc, dec_in, targets)
  again = model.apply({"params": params}, enc, dec_in, targets)
  dropped = model.apply({"params": params}, enc, dec_in, targets, enable_dropout=True,
                        rngs={"dropout": jax.random.PRNGKey(0)})
  np.testing.assert_array_equal(np.asarray(plain), np.asarray(again))
  assert np.abs(np.asarray(plain) - np.asarray(dropped)).max() > 1e-3


def test_attention_dropout_mask_is_shared_over_batch_and_heads():
  """Flaxformer's broadcast_dropout: the attention-weight mask [q, k] is one for every
  batch row and head; the residual dropouts stay per example."""
  from prompt_tuning_jax.model import layers
  cfg = V11.replace(dropout_rate=0.5)
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 7, cfg.emb_dim))
  attn = layers.Attention(cfg)
  bias = jnp.zeros((1, 1, 7, 7))
  variables = attn.init(jax.random.PRNGKey(0), x, x, bias, enable_dropout=False)
  _, state = attn.apply(variables, x, x, bias, enable_dropout=True, rngs={"dropout": jax.random.PRNGKey(2)},
                        capture_intermediates=True)
  dropped = np.asarray(state["intermediates"]["Dropout_0"]["__call__"][0])  # [B, H, q, k], softmax > 0
  assert dropped.shape == (3, cfg.num_heads, 7, 7)
  kept = dropped != 0
  assert 0.2 < kept.mean() < 0.8
  np.testing.assert_array_equal(kept, np.broadcast_to(kept[:1, :1], kept.shape))


def test_attention_dropout_per_example_when_broadcast_is_off():
  from prompt_tuning_jax.model import layers
  cfg = V11.replace(dropout_rate=0.5, broadcast_attention_dropout=False)
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 7, cfg.emb_dim))
  attn, bias = layers.Attention(cfg), jnp.zeros((1, 1, 7, 7))
  variables = attn.init(jax.random.PRNGKey(0), x, x, bias, enable_dropout=False)
  _, state = attn.apply(variables, x, x, bias, enable_dropout=True, rngs={"dropout": jax.random.PRNGKey(2)},
                        capture_intermediates=True)
  kept = np.asarray(state["intermediates"]["Dropout_0"]["__call__"][0]) != 0
  assert (kept != kept[:1, :1]).any()  # masks differ across batch rows / heads
