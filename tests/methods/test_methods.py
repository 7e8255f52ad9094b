"""Each method's model-level contract, against independent references.

LoRA: merged kernels give the hooked model's logits; PEFT on the HF T5 built from the
T5X fixture scores like us. Prefix tuning: the exported plain prefixes give the MLP
form's logits; greedy decoding through the KV cache equals the full-pass argmax; the
PEFT form (decoder self-attention, preceding positions) exports to a PEFT adapter that
scores like us on the HF T5.
SAID: our Hadamard transform equals scipy's matrix. Zero-initialised methods start at the
frozen model exactly.
"""
import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from flax import traverse_util

from prompt_tuning_jax import methods
from prompt_tuning_jax.checkpoints import hf, t5x
from prompt_tuning_jax.model.config import SIZES
from prompt_tuning_jax.methods import files as delta_files
from prompt_tuning_jax.methods import said
from prompt_tuning_jax.model import decoding, t5

FIXTURE = pathlib.Path(__file__).parents[1] / "testdata/t5x_checkpoints/test_t5_tiny.checkpoint_0"
CFG = SIZES["tiny_inline"]
BATCH = {"encoder_input_tokens": np.array([[5, 6, 7, 8, 1, 0], [9, 10, 1, 0, 0, 0]], np.int32),
         "decoder_input_tokens": np.array([[0, 11, 12, 13], [0, 14, 15, 0]], np.int32),
         "decoder_target_tokens": np.array([[11, 12, 13, 1], [14, 15, 1, 0]], np.int32)}


def _frozen():
  return jax.tree.map(np.asarray, t5x.read_t5x_checkpoint(str(FIXTURE)).params)


def _with_delta(method, seed=1, scale=0.3):
  """Fixture weights plus the method's leaves set to random (non-initial) values."""
  model = methods.make_model(CFG, None, method)
  full = methods.add_delta_params(model, _frozen(), jax.random.PRNGKey(seed))
  backbone = traverse_util.flatten_dict(_frozen(), sep="/")
  rng = np.random.RandomState(seed)
  flat = {k: (v if k in backbone else np.asarray(v) + scale * np.asarray(rng.randn(*np.shape(v)), np.float32))
          for k, v in traverse_util.flatten_dict(full, sep="/").items()}
  return model, traverse_util.unflatten_dict(flat, sep="/")


def _logits(model, params):
  return np.asarray(model.apply({"params": params}, BATCH["encoder_input_tokens"], BATCH["decoder_input_tokens"],
                                BATCH["decoder_target_tokens"]))


@pytest.mark.slow
@pytest.mark.parametrize("method", [methods.LoRA(), methods.BitFit(), methods.IntrinsicSAID(dim=8)],
                         ids=lambda m: m.name)
def test_zero_initialised_methods_start_at_the_frozen_model(method):
  model = methods.make_model(CFG, None, method)
  full = methods.add_delta_params(model, _frozen(), jax.random.PRNGKey(0))
  np.testing.assert_array_equal(_logits(model, full), _logits(t5.Transformer(CFG), _frozen()))


@pytest.mark.slow
@pytest.mark.parametrize("method", [methods.LoRA(rank=2), methods.PrefixTuning(length=3, hidden=8),
                                    methods.PrefixTuning(length=3, hidden=0, sites=("decoder",), positions="preceding"),
                                    methods.Adapters(width=2), methods.BitFit(), methods.IntrinsicSAID(dim=8)],
                         ids=["lora", "prefix_mlp", "prefix_peft_form", "adapters", "bitfit", "said"])
def test_rematerialised_layers_give_the_same_loss_and_gradients(method):
  """Root parameters (prefix MLP trunk, SAID vector) must reach layers that nn.remat lifts."""
  model, params = _with_delta(method)

  def loss(p, m):
    return -_log_likelihood(m, p).sum()

  want_loss, want = jax.jit(jax.value_and_grad(loss), static_argnums=1)(params, model)
  assert max(float(np.abs(g).max()) for g in jax.tree.leaves(want)) > 0
  for policy in ("full", "dots"):
    remat = model.clone(config=dataclasses.replace(CFG, remat_policy=policy))
    got_loss, got = jax.jit(jax.value_and_grad(loss), static_argnums=1)(params, remat)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5), got, want)


def _log_likelihood(model, params):
  """Summed target log-likelihood [B] through the library's one scoring path."""
  targets = jnp.asarray(BATCH["decoder_target_tokens"])[:, None, :]
  return decoding.candidate_log_probs(model, params, BATCH["encoder_input_tokens"], targets)[:, 0].sum(-1)


@pytest.mark.slow
def test_lora_merged_equals_unmerged_and_changes_the_model():
  method = methods.LoRA(rank=2, alpha=4.0, targets=("query", "value", "out", "wi_0", "wo"))
  model, params = _with_delta(method)
  hooked = _logits(model, params)
  merged = _logits(t5.Transformer(CFG), method.merge(params))
  np.testing.assert_allclose(merged, hooked, atol=2e-5, rtol=1e-5)
  assert np.abs(hooked - _logits(t5.Transformer(CFG), _frozen())).max() > 1e-2


@pytest.mark.slow
def test_peft_lora_adapter_on_hf_t5_gives_our_log_likelihoods(tmp_path):
  import peft
  import torch
  method = methods.LoRA(rank=2, alpha=4.0, targets=("query", "value", "wi_0", "wo"))
  model, params = _with_delta(method)
  ours = _log_likelihood(model, params)
  trained = {k: v for k, v in traverse_util.flatten_dict(params, sep="/").items() if "/lora_" in k}
  delta_files.save_peft_lora(tmp_path, method, CFG, trained, base_model_name_or_path="tiny")
  base = hf.to_hf_torch_model(_frozen(), CFG)
  peft_model = peft.PeftModel.from_pretrained(base, str(tmp_path)).eval()
  with torch.no_grad():
    logits = peft_model(input_ids=torch.tensor(BATCH["encoder_input_tokens"], dtype=torch.long),
                        attention_mask=torch.tensor(BATCH["encoder_input_tokens"] > 0, dtype=torch.long),
                        decoder_input_ids=torch.tensor(BATCH["decoder_input_tokens"], dtype=torch.long)).logits
  logp = torch.log_softmax(logits.float(), -1).numpy()
  targets = BATCH["decoder_target_tokens"]
  theirs = (np.take_along_axis(logp, targets[..., None], -1)[..., 0] * (targets > 0)).sum(-1)
  print("PEFT LoRA parity: ours", np.asarray(ours), "peft", theirs, "max abs diff",
        np.abs(np.asarray(ours) - theirs).max())
  np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-5, atol=1e-5)
  plain = _log_likelihood(t5.Transformer(CFG), _frozen())
  assert np.abs(np.asarray(plain) - theirs).max() > 1e-3  # the adapter is really applied


def test_prefix_plain_export_equals_the_mlp_form_and_round_trips(tmp_path):
  method = methods.PrefixTuning(length=3, hidden=8)
  model, params = _with_delta(method)
  backbone = traverse_util.flatten_dict(_frozen(), sep="/")
  trained = {k: v for k, v in traverse_util.flatten_dict(params, sep="/").items() if k not in backbone}
  delta_files.save_delta(tmp_path, method, CFG, trained)
  plain_model, plain_params = delta_files.apply_delta(t5.Transformer(CFG), _frozen(), tmp_path)
  assert plain_model.interceptor.__self__ == method.plain()
  np.testing.assert_allclose(_logits(plain_model, plain_params), _logits(model, params), atol=1e-5, rtol=1e-5)
  assert np.abs(_logits(model, params) - _logits(t5.Transformer(CFG), _frozen())).max() > 1e-2


@pytest.mark.slow
@pytest.mark.parametrize("method", [methods.PrefixTuning(length=3, hidden=0),
                                    methods.PrefixTuning(length=3, hidden=0, sites=("decoder",), positions="preceding")],
                         ids=["li_liang", "peft_form"])
def test_prefix_greedy_decoding_through_the_cache_equals_the_full_pass_argmax(method):
  model, params = _with_delta(method, scale=1.0)
  tokens, _ = decoding.greedy_decode(model, params, BATCH["encoder_input_tokens"], 5)
  tokens = np.asarray(tokens)
  inputs = np.asarray(decoding.shift_right(jnp.asarray(tokens)))
  logits = np.asarray(model.apply({"params": params}, BATCH["encoder_input_tokens"], inputs,
                                  np.ones_like(tokens)))
  for b in range(tokens.shape[0]):  # up to and including EOS, each emitted token is the argmax
    n = int(np.argmax(tokens[b] == 1)) + 1 if (tokens[b] == 1).any() else tokens.shape[1]
    np.testing.assert_array_equal(tokens[b, :n], logits[b, :n].argmax(-1))
  plain, _ = decoding.greedy_decode(t5.Transformer(CFG), _frozen(), BATCH["encoder_input_tokens"], 5)
  assert (np.asarray(plain) != tokens).any()  # the prefixes really steer decoding


def _hf_log_likelihood_and_argmax(peft_model, decoder_inputs):
  import torch
  with torch.no_grad():
    logits = peft_model(input_ids=torch.tensor(BATCH["encoder_input_tokens"], dtype=torch.long),
                        attention_mask=torch.tensor(BATCH["encoder_input_tokens"] > 0, dtype=torch.long),
                        decoder_input_ids=torch.tensor(np.asarray(decoder_inputs), dtype=torch.long)).logits
  logp = torch.log_softmax(logits.float(), -1).numpy()
  targets = BATCH["decoder_target_tokens"]
  return (np.take_along_axis(logp, targets[..., None], -1)[..., 0] * (targets > 0)).sum(-1), logp.argmax(-1)


@pytest.mark.parametrize("hidden", [0, 8], ids=["plain", "mlp"])
def test_peft_prefix_adapter_on_hf_t5_gives_our_log_likelihoods_and_greedy_tokens(tmp_path, hidden):
  import peft
  method = methods.PrefixTuning(length=3, hidden=hidden, sites=("decoder",), positions="preceding")
  model, params = _with_delta(method, scale=1.0)
  ours = np.asarray(_log_likelihood(model, params))
  backbone = traverse_util.flatten_dict(_frozen(), sep="/")
  trained = {k: v for k, v in traverse_util.flatten_dict(params, sep="/").items() if k not in backbone}
  delta_files.save_peft_prefix(tmp_path, method, CFG, trained, base_model_name_or_path="tiny")
  peft_model = peft.PeftModel.from_pretrained(hf.to_hf_torch_model(_frozen(), CFG), str(tmp_path)).eval()
  theirs, _ = _hf_log_likelihood_and_argmax(peft_model, BATCH["decoder_input_tokens"])
  print("PEFT prefix parity: ours", ours, "peft", theirs, "max abs diff", np.abs(ours - theirs).max())
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
  plain = np.asarray(_log_likelihood(t5.Transformer(CFG), _frozen()))
  assert np.abs(plain - theirs).max() > 1e-2  # the prefixes are really applied
  unpositioned, _ = _with_delta(dataclasses.replace(method, positions="none"), scale=1.0)
  assert np.abs(np.asarray(_log_likelihood(unpositioned, params)) - theirs).max() > 1e-3  # positions matter
  # Our cached greedy decoding emits, at every step, the argmax of PEFT's teacher-forced pass.
  # (PEFT's own `generate` disagrees with its forward pass for T5 prefixes, so it is not the reference.)
  tokens, _ = decoding.greedy_decode(model, params, BATCH["encoder_input_tokens"], 4)
  _, argmax = _hf_log_likelihood_and_argmax(peft_model, decoding.shift_right(jnp.asarray(tokens)))
  np.testing.assert_array_equal(np.asarray(tokens), argmax)


def test_peft_prefix_export_refuses_prefixes_peft_cannot_hold(tmp_path):
  method = methods.PrefixTuning(length=3, hidden=0)  # Li and Liang: encoder and cross-attention too
  _, params = _with_delta(method)
  with pytest.raises(ValueError, match="prefix_peft.gin"):
    delta_files.save_peft_prefix(tmp_path, method, CFG, params)
  assert not list(tmp_path.iterdir())


def test_export_command_writes_the_peft_adapter_of_a_saved_delta(tmp_path):
  import peft

  from prompt_tuning_jax import export
  method = methods.PrefixTuning(length=3, hidden=8, sites=("decoder",), positions="preceding")
  model, params = _with_delta(method, scale=1.0)
  backbone = traverse_util.flatten_dict(_frozen(), sep="/")
  delta_files.save_delta(tmp_path / "run", method, CFG,
                         {k: v for k, v in traverse_util.flatten_dict(params, sep="/").items() if k not in backbone})
  export.main([f"--delta={tmp_path / 'run'}", f"--output_dir={tmp_path / 'out'}"])
  peft_model = peft.PeftModel.from_pretrained(hf.to_hf_torch_model(_frozen(), CFG), str(tmp_path / "out/peft")).eval()
  theirs, _ = _hf_log_likelihood_and_argmax(peft_model, BATCH["decoder_input_tokens"])
  np.testing.assert_allclose(np.asarray(_log_likelihood(model, params)), theirs, rtol=1e-5, atol=1e-5)
  adapters = methods.Adapters(width=2)
  delta_files.save_delta(tmp_path / "adapters", adapters, CFG, {"encoder/layers_0/mlp/adapter_up": np.zeros((2, 8))})
  with pytest.raises(ValueError, match="no PEFT form for the 'adapters' method"):
    export.main([f"--delta={tmp_path / 'adapters'}", f"--output_dir={tmp_path / 'out2'}"])
  assert not (tmp_path / "out2").exists()


def test_a_delta_from_another_backbone_is_refused_naming_the_file_and_field(tmp_path):
  method = methods.LoRA(rank=2)
  _, params = _with_delta(method)
  trained = {k: v for k, v in traverse_util.flatten_dict(params, sep="/").items() if "/lora_" in k}
  delta_files.save_delta(tmp_path, method, dataclasses.replace(CFG, num_decoder_layers=4), trained)
  with pytest.raises(ValueError, match=r"delta.safetensors: .*another backbone \(num_decoder_layers: delta 4, model 2"):
    delta_files.apply_delta(t5.Transformer(CFG), _frozen(), tmp_path)


@pytest.mark.parametrize("fields, match", [({"sites": ()}, "sites"), ({"sites": ("decoder", "encoder_self")}, "sites"),
                                           ({"positions": "absolute"}, "positions")])
def test_prefix_refuses_unknown_sites_and_positions(fields, match):
  with pytest.raises(ValueError, match=f"PrefixTuning.{match}"):
    methods.PrefixTuning(**fields)


@pytest.mark.parametrize("n", [1, 2, 8, 64])
def test_hadamard_transform_matches_the_matrix(n):
  x = np.random.RandomState(n).randn(3, n).astype(np.float32)
  np.testing.assert_allclose(np.asarray(said.hadamard_transform(jnp.asarray(x))), x @ scipy.linalg.hadamard(n).T,
                             rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_fastfood_blocks_keep_the_norm_and_are_linear():
  key = jax.random.PRNGKey(3)
  v = jax.random.normal(jax.random.PRNGKey(0), (12,))
  out = said.fastfood(v, 16 * 40, key)
  blocks = np.asarray(out).reshape(40, 16)
  assert np.abs(np.linalg.norm(blocks, axis=1).mean() / np.linalg.norm(v) - 1) < 0.2
  np.testing.assert_allclose(np.asarray(said.fastfood(2 * v, 100, key)), 2 * np.asarray(out[:100]), rtol=1e-5)


def test_delta_file_refuses_another_format(tmp_path):
  with pytest.raises(FileNotFoundError, match="delta.safetensors"):
    delta_files.load_delta(tmp_path)
  import safetensors.numpy
  safetensors.numpy.save_file({"x": np.zeros(2, np.float32)}, str(tmp_path / "delta.safetensors"))
  with pytest.raises(ValueError, match="not a prompt_tuning_jax.delta file"):
    delta_files.load_delta(tmp_path)


def test_specification_methods_name_existing_leaves_only():
  flat = traverse_util.flatten_dict(_frozen(), sep="/")
  import re
  for method, want in ((methods.LastLayers(k=1), (4 + 3 + 2) + (8 + 3 + 3) + 2), (methods.LayerNormScales(), 2 * 2 + 2 * 3 + 2)):
    hits = [k for k in flat if any(re.fullmatch(p, k) for p in method.patterns(CFG))]
    assert hits and all("layers_0" not in k for k in hits) or isinstance(method, methods.LayerNormScales)
    assert len(hits) == want, hits
  with pytest.raises(ValueError, match="LastLayers.k=3"):
    methods.LastLayers(k=3).patterns(CFG)
