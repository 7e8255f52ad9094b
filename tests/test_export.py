"""Exported prompts load back everywhere, and PEFT on the HF T5 scores like our model."""
import jax
import numpy as np
import peft
import pytest
import torch

from prompt_tuning_jax import export

from prompt_tuning_jax.text import data, vocab
from prompt_tuning_jax.checkpoints import hf
from prompt_tuning_jax.model.config import T5Config
from prompt_tuning_jax.model import decoding, t5
from prompt_tuning_jax.prompt import files as prompt_files
from prompt_tuning_jax.prompt import wrapper

CFG = T5Config(vocab_size=32128, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32, num_encoder_layers=2,
               num_decoder_layers=2)


def _params(prompt_len=7, seed=0):
  rng = np.random.RandomState(seed)
  params = jax.tree.map(lambda x: np.asarray(x) + 0.05 * rng.randn(*x.shape).astype(np.float32),
                        t5.init_params(CFG, jax.random.PRNGKey(seed)))
  prompt = rng.uniform(-0.5, 0.5, (prompt_len, CFG.emb_dim)).astype(np.float32)
  return params, prompt


def test_peft_adapter_on_hf_t5_gives_our_log_likelihoods(tmp_path):
  params, prompt = _params()
  np.save(tmp_path / "prompt.npy", prompt)
  paths = export.export_prompt(str(tmp_path / "prompt.npy"), str(tmp_path / "out"), base_model="tiny-t5",
                               num_heads=CFG.num_heads, num_layers=CFG.num_decoder_layers)
  pairs = [("premise: a cat sat. hypothesis: an animal sat.", "entailment"),
           ("premise: it rains. hypothesis: it is dry.", "not_entailment")]
  spm = vocab.load_vocabulary()
  batch = data.encdec_features(vocab.encode_batch(spm, [p[0] for p in pairs], 24),
                               vocab.encode_batch(spm, [p[1] for p in pairs], 8))
  model = wrapper.make_model(CFG, wrapper.PromptConfig(length=prompt.shape[0]))
  candidates = batch["decoder_target_tokens"][:, None, :]  # each pair's target: its one candidate
  ours = decoding.score_candidates(model, wrapper.set_prompt(params, prompt), batch["encoder_input_tokens"],
                                   candidates)[:, 0]

  peft_model = peft.PeftModel.from_pretrained(hf.to_hf_torch_model(params, CFG), paths["peft"]).eval()
  with torch.no_grad():
    logits = peft_model(input_ids=torch.tensor(batch["encoder_input_tokens"], dtype=torch.long),
                        attention_mask=torch.tensor(batch["encoder_input_tokens"] > 0, dtype=torch.long),
                        decoder_input_ids=torch.tensor(batch["decoder_input_tokens"], dtype=torch.long)).logits
  logp = torch.log_softmax(logits.float(), -1).numpy()
  targets = batch["decoder_target_tokens"]
  theirs = (np.take_along_axis(logp, targets[..., None], -1)[..., 0] * (targets > 0)).sum(-1)
  print("PEFT prompt parity: ours", np.asarray(ours), "peft", theirs, "max abs diff",
        np.abs(np.asarray(ours) - theirs).max())
  np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-5)
  # And the prompt changes the score (the adapter is really applied).
  plain = decoding.score_candidates(t5.Transformer(CFG), params, batch["encoder_input_tokens"], candidates)[:, 0]
  assert np.abs(np.asarray(plain) - theirs).max() > 1e-3


def test_every_format_round_trips_and_the_card_describes_the_prompt(tmp_path):
  _, prompt = _params(prompt_len=100)
  np.save(tmp_path / "p.npy", prompt)
  paths = export.export_prompt(str(tmp_path / "p.npy"), str(tmp_path / "out"), step=1_130_000,
                               task="superglue_rte_taskless", metrics={"accuracy": 68.6})
  for fmt in ("npy", "numpy_checkpoint", "peft"):
    np.testing.assert_array_equal(prompt_files.load_prompt(paths[fmt]), prompt)
  assert paths["numpy_checkpoint"].endswith("numpy_checkpoints/checkpoint_1130000/encoder.prompt.prompt.prompt")
  card = __import__("json").load(open(paths["card"]))
  assert card["prompt_length"] == 100 and card["token_dim"] == 16 and card["dev_metrics"] == {"accuracy": 68.6}


def test_released_prompt_loads_onto_a_base_shaped_model(testdata):
  """The original release's RTE prompt [100, 768] fits a Base-shaped prompted model."""
  import flax.linen as nn

  from prompt_tuning_jax.model.config import SIZES
  prompt = prompt_files.load_prompt(str(testdata / "released_prompts/t5_1_1_lm100k_base/rte.npy"))
  model = wrapper.make_model(SIZES["base"], wrapper.PromptConfig(length=100))
  shapes = nn.unbox(jax.eval_shape(lambda r: model.init(r, *(np.ones((1, 2), np.int32),) * 3)["params"],
                                   jax.random.PRNGKey(0)))
  assert wrapper.get_prompt(shapes).shape == prompt.shape == (100, 768)


def test_unknown_format_is_refused(tmp_path):
  np.save(tmp_path / "p.npy", np.zeros((3, 4), np.float32))
  with pytest.raises(ValueError, match="--formats"):
    export.export_prompt(str(tmp_path / "p.npy"), str(tmp_path / "o"), formats=["onnx"])
