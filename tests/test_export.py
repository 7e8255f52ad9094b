"""Exported prompts load back everywhere, and PEFT on the HF T5 scores like our model; a run
folder exports its final, best or step-N prompt at the global step."""
import json
import pathlib
import shutil

import jax
import numpy as np
import peft
import pytest
import torch

from prompt_tuning_jax import export, train

from prompt_tuning_jax.text import data, vocab
from prompt_tuning_jax.checkpoints import fs, hf
from prompt_tuning_jax.model.config import T5Config
from prompt_tuning_jax.model import decoding, t5
from prompt_tuning_jax.prompt import files as prompt_files
from prompt_tuning_jax.prompt import run_folder, wrapper

CFG = T5Config(vocab_size=32128, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32, num_encoder_layers=2,
               num_decoder_layers=2)


def _params(prompt_len=7, seed=0):
  rng = np.random.RandomState(seed)
  params = jax.tree.map(lambda x: np.asarray(x) + 0.05 * rng.randn(*x.shape).astype(np.float32),
                        t5.init_params(CFG, jax.random.PRNGKey(seed)))
  prompt = rng.uniform(-0.5, 0.5, (prompt_len, CFG.emb_dim)).astype(np.float32)
  return params, prompt


@pytest.mark.slow
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
                               steps_trained=30_000, task="superglue_rte_taskless", metrics={"accuracy": 68.6})
  for fmt in ("npy", "numpy_checkpoint", "peft"):
    np.testing.assert_array_equal(prompt_files.load_prompt(paths[fmt]), prompt)
  assert paths["numpy_checkpoint"].endswith("numpy_checkpoints/checkpoint_1130000/encoder.prompt.prompt.prompt")
  card = __import__("json").load(open(paths["card"]))
  assert card["prompt_length"] == 100 and card["token_dim"] == 16 and card["dev_metrics"] == {"accuracy": 68.6}
  assert (card["step"], card["steps_trained"], card["format_version"]) == (1_130_000, 30_000, 2)


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


def _log_likelihoods(model, input_ids: np.ndarray, decoder_input_ids: np.ndarray, targets: np.ndarray) -> np.ndarray:
  """Summed target log-probabilities from a torch seq2seq model (a PEFT model included)."""
  with torch.no_grad():
    logits = model(input_ids=torch.tensor(input_ids, dtype=torch.long),
                   attention_mask=torch.tensor(input_ids > 0, dtype=torch.long),
                   decoder_input_ids=torch.tensor(decoder_input_ids, dtype=torch.long)).logits
  logp = torch.log_softmax(logits.float(), -1).numpy()
  return (np.take_along_axis(logp, targets[..., None], -1)[..., 0] * (targets > 0)).sum(-1)


def test_auto_peft_loads_base_and_adapter_offline_from_base_model_name_or_path(tmp_path, monkeypatch):
  """`AutoPeftModelForSeq2SeqLM.from_pretrained(adapter)` finds the frozen model through the
  adapter's base_model_name_or_path alone (here a local HF folder written by this project's
  converter, as --base_model would name it), with the hub unreachable, and scores as we do."""
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  params, prompt = _params(seed=1)
  base = hf.save_hf_checkpoint(str(tmp_path / "hf_t5"), jax.device_get(params), CFG)
  np.save(tmp_path / "prompt.npy", prompt)
  paths = export.export_prompt(str(tmp_path / "prompt.npy"), str(tmp_path / "out"), formats=["peft"],
                               base_model=base)
  config = json.loads((pathlib.Path(paths["peft"]) / "adapter_config.json").read_text())
  assert config["base_model_name_or_path"] == base

  model = peft.AutoPeftModelForSeq2SeqLM.from_pretrained(paths["peft"]).eval()
  spm = vocab.load_vocabulary()
  pairs = [("premise: a cat sat. hypothesis: an animal sat.", "entailment"), ("sst2 sentence: fine.", "positive")]
  batch = data.encdec_features(vocab.encode_batch(spm, [p[0] for p in pairs], 24),
                               vocab.encode_batch(spm, [p[1] for p in pairs], 8))
  prompted = wrapper.make_model(CFG, wrapper.PromptConfig(length=prompt.shape[0]))
  ours = decoding.score_candidates(prompted, wrapper.set_prompt(params, prompt), batch["encoder_input_tokens"],
                                   batch["decoder_target_tokens"][:, None, :])[:, 0]
  theirs = _log_likelihoods(model, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
                            batch["decoder_target_tokens"])
  print("AutoPeftModelForSeq2SeqLM parity: ours", np.asarray(ours), "peft", theirs)
  np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-5)


def test_public_backbones_are_named_by_their_hub_ids(tmp_path):
  public = "gs://t5-data/pretrained_models/t5x/t5_1_1_lm100k_{}/checkpoint_1100000"
  for size in ("small", "base", "large", "xl", "xxl"):
    assert prompt_files.peft_base_model(public.format(size)) == f"google/t5-{size}-lm-adapt"
    assert prompt_files.peft_base_model(public.format(size) + "/") == f"google/t5-{size}-lm-adapt"
  assert prompt_files.peft_base_model("gs://mine/t5_1_1_lm100k_xl/checkpoint_1100000") == "google/t5-xl-lm-adapt"
  assert prompt_files.peft_base_model("gs://t5-data/pretrained_models/t5x/t5_1_1_base/checkpoint_1000000") is None
  assert prompt_files.peft_base_model("random:0") is None and prompt_files.peft_base_model(None) is None
  cached = tmp_path / "hub" / "models--google--t5-base-lm-adapt" / "snapshots" / "abc123"
  cached.mkdir(parents=True)
  (cached / "config.json").write_text("{}")
  assert prompt_files.peft_base_model(str(cached)) == "google/t5-base-lm-adapt"
  named = tmp_path / "named"
  named.mkdir()
  (named / "config.json").write_text(json.dumps({"_name_or_path": "google/t5-large-lm-adapt"}))
  assert prompt_files.peft_base_model(str(named)) == "google/t5-large-lm-adapt"
  (named / "config.json").write_text(json.dumps({"_name_or_path": "/home/me/t5"}))
  assert prompt_files.peft_base_model(str(named)) == str(named)  # a local model, as PEFT records one


ZARR = pathlib.Path(__file__).resolve().parent / "testdata" / "t5x_checkpoints" / "test_t5_1_1_tiny" / "checkpoint_3"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """A 4-step run of the train command on the step-3 T5X fixture: saves at global steps 5, 7."""
  model_dir = tmp_path_factory.mktemp("export_run") / "run"
  train.main(["--gin_file=tests/tiny_zarr.gin", "--gin_file=runs/prompt_tuning.gin",
              f"--gin.MODEL_DIR={model_dir}", "--gin.MIXTURE_OR_TASK_NAME=superglue_rte_sample_taskless",
              "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 4}", f"--gin.INITIAL_CHECKPOINT_PATH={ZARR}",
              "--gin.TRAIN_STEPS=4", "--gin.CHECKPOINT_PERIOD=2", "--gin.EVAL_PERIOD=2", "--gin.BATCH_SIZE=8",
              "--gin.PROMPT_LENGTH=2", "--gin.TrainConfig.progress_bar=False"])
  return model_dir


@pytest.mark.slow
def test_export_of_a_run_folder_uses_global_steps(finished_run, tmp_path, capsys):
  assert run_folder.saved_steps(finished_run) == [5, 7]  # the fixture is at step 3
  export.main([f"--prompt={finished_run}", f"--output_dir={tmp_path / 'final'}", "--base_model=my/t5"])
  printed = capsys.readouterr().out
  assert f"prompt: {finished_run / 'prompt.npy'} (final, step 7, 4 steps trained)" in printed, printed
  final = np.load(finished_run / "prompt.npy")
  out = tmp_path / "final"
  np.testing.assert_array_equal(np.load(out / "numpy_checkpoints" / "checkpoint_7" / "encoder.prompt.prompt.prompt"),
                                final)
  card = json.loads((out / "model_card.json").read_text())
  assert (card["step"], card["steps_trained"], card["task"]) == (7, 4, "superglue_rte_sample_taskless")
  assert card["backbone"] == str(ZARR)
  assert json.loads((out / "peft" / "adapter_config.json").read_text())["base_model_name_or_path"] == "my/t5"

  chosen, paths = export.export_run_prompt(str(finished_run), str(tmp_path / "at5"), step=5, formats=["npy", "card"])
  assert (chosen.step, chosen.steps_trained, chosen.which) == (5, 2, "checkpoint")
  np.testing.assert_array_equal(np.load(paths["npy"]), prompt_files.load_numpy_checkpoint(
      finished_run / "numpy_checkpoints" / "checkpoint_5"))
  best = json.loads((finished_run / "best" / "best.json").read_text())
  chosen, _ = export.export_run_prompt(str(finished_run), str(tmp_path / "best"), best=True, formats=["npy"])
  assert (chosen.step, chosen.steps_trained) == (best["global_step"], best["step"])
  # The run's backbone is a private T5X checkpoint: no hub id to name, so none is written.
  export.export_run_prompt(str(finished_run), str(tmp_path / "nobase"), formats=["peft"])
  assert json.loads((tmp_path / "nobase" / "peft" / "adapter_config.json").read_text())["base_model_name_or_path"] is None
  np.testing.assert_array_equal(prompt_files.load_prompt(str(finished_run)), final)  # load_prompt reads a run folder


def test_public_backbone_of_a_run_names_the_hub_model(finished_run, tmp_path):
  run = tmp_path / "run"
  shutil.copytree(finished_run, run)
  public = "gs://t5-data/pretrained_models/t5x/t5_1_1_lm100k_base/checkpoint_1100000"
  config = (run / "config.gin").read_text()
  assert f"'{ZARR}'" in config  # the operative config records the run's backbone
  (run / "config.gin").write_text(config.replace(str(ZARR), public))
  _, paths = export.export_run_prompt(str(run), str(tmp_path / "out"), formats=["peft"])
  adapter = json.loads((pathlib.Path(paths["peft"]) / "adapter_config.json").read_text())
  assert adapter["base_model_name_or_path"] == "google/t5-base-lm-adapt"


def _run_as_program(monkeypatch, capsys, *argv):
  monkeypatch.setattr("sys.argv", ["export", *argv])
  status = export.main()
  return status, capsys.readouterr()


def test_unfinished_run_and_missing_step_get_one_line(finished_run, tmp_path, monkeypatch, capsys):
  run = tmp_path / "run"
  shutil.copytree(finished_run, run)
  (run / "prompt.npy").unlink()  # as before the run finished
  out = tmp_path / "out"
  status, printed = _run_as_program(monkeypatch, capsys, f"--prompt={run}", f"--output_dir={out}")
  assert status == 2 and printed.err.count("\n") == 1 and "Traceback" not in printed.err, printed.err
  assert printed.err == (f"error: {run} has no final prompt yet (prompt.npy is written when the run finishes); "
                         "saved steps: 5, 7: export one with --step=N, or the best so far with --best\n")
  status, printed = _run_as_program(monkeypatch, capsys, f"--prompt={run}", f"--output_dir={out}", "--step=4")
  assert status == 2 and printed.err.count("\n") == 1, printed.err
  assert "no prompt saved at step 4 (steps are global: 4 steps trained is --step=7); saved steps: 5, 7" in printed.err
  assert not out.exists()  # nothing written
  status, printed = _run_as_program(monkeypatch, capsys, f"--prompt={run}", f"--output_dir={out}", "--step=7")
  assert status == 0 and "(checkpoint, step 7, 4 steps trained)" in printed.out, printed


def test_delta_export_names_the_run_backbone(tmp_path):
  from prompt_tuning_jax import methods
  from prompt_tuning_jax.methods import files as delta_files
  run = tmp_path / "run"
  leaves = {"encoder/layers_0/attention/query/lora_a": np.ones((CFG.emb_dim, 2), np.float32),
            "encoder/layers_0/attention/query/lora_b": np.zeros((2, CFG.num_heads * CFG.head_dim), np.float32)}
  delta_files.save_delta(run, methods.LoRA(rank=2), CFG, leaves)
  (run / "config.gin").write_text(
      "INITIAL_CHECKPOINT_PATH = \\\n    'gs://t5-data/pretrained_models/t5x/t5_1_1_lm100k_small/checkpoint_1100000'\n"
      "TrainConfig.initial_checkpoint_path = %INITIAL_CHECKPOINT_PATH\n")
  export.main([f"--delta={run}", f"--output_dir={tmp_path / 'out'}"])
  config = json.loads((tmp_path / "out" / "peft" / "adapter_config.json").read_text())
  assert (config["peft_type"], config["base_model_name_or_path"]) == ("LORA", "google/t5-small-lm-adapt")
  export.main([f"--delta={run / 'delta.safetensors'}", f"--output_dir={tmp_path / 'out2'}", "--base_model=/models/t5"])
  config = json.loads((tmp_path / "out2" / "peft" / "adapter_config.json").read_text())
  assert config["base_model_name_or_path"] == "/models/t5"
