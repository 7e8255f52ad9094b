"""Tests for prompt_files.py: the released prompts survive every format bit-exactly,
and the installed PEFT reads and writes the same adapters we do."""
from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy

from prompt_tuning_jax.prompt import files as prompt_files

TESTDATA = Path(__file__).parents[1] / "testdata"
RELEASED = TESTDATA / "released_prompts" / "t5_1_1_lm100k_base"
NAMES = ["sst2", "mrpc", "rte"]


def released(name: str) -> np.ndarray:
  return np.load(RELEASED / f"{name}.npy")


def assert_bit_exact(a: np.ndarray, b: np.ndarray) -> None:
  assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
  assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("name", NAMES)
def test_released_prompts_load(name):
  prompt = prompt_files.load_npy(RELEASED / f"{name}.npy")
  assert prompt.shape == (100, 768) and prompt.dtype == np.float32
  assert np.isfinite(prompt).all() and prompt.std() > 0
  assert_bit_exact(prompt, released(name))


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_npy(tmp_path, name):
  path = prompt_files.save_npy(tmp_path / "p.npy", released(name))
  assert path == tmp_path / "p.npy" and not (tmp_path / "p.npy.npy").exists()
  assert_bit_exact(prompt_files.load_npy(path), released(name))
  assert_bit_exact(prompt_files.load_prompt(path, (100, 768)), released(name))


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_numpy_checkpoint_layout(tmp_path, name):
  path = prompt_files.save_numpy_checkpoint(tmp_path, 1_130_000, released(name))
  expected = (tmp_path / "numpy_checkpoints" / "checkpoint_1130000" /
              "encoder.prompt.prompt.prompt")
  assert path == expected and path.is_file()
  assert sorted(p.name for p in path.parent.parent.iterdir()) == ["checkpoint_1130000"]
  assert path.read_bytes()[:6] == b"\x93NUMPY"
  assert_bit_exact(np.load(path), released(name))  # plain numpy reads it
  assert_bit_exact(prompt_files.load_numpy_checkpoint(path), released(name))
  assert_bit_exact(prompt_files.load_numpy_checkpoint(path.parent), released(name))
  assert_bit_exact(prompt_files.load_prompt(path, (100, 768)), released(name))
  assert_bit_exact(prompt_files.load_prompt(path.parent, (100, 768)), released(name))


def test_numpy_checkpoint_same_step_is_replaced(tmp_path):
  prompt_files.save_numpy_checkpoint(tmp_path, 5, released("sst2"))
  path = prompt_files.save_numpy_checkpoint(tmp_path, 5, released("rte"))
  assert_bit_exact(np.load(path), released("rte"))
  assert [p.name for p in path.parent.iterdir()] == ["encoder.prompt.prompt.prompt"]
  assert [p.name for p in path.parent.parent.iterdir()] == ["checkpoint_5"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("submodules", [1, 2])
def test_round_trip_peft_adapter(tmp_path, name, submodules):
  prompt_files.save_peft_adapter(tmp_path, released(name), base_model_name_or_path="m",
                              num_transformer_submodules=submodules,
                              num_attention_heads=12, num_layers=12)
  tensors = safetensors.numpy.load_file(str(tmp_path / "adapter_model.safetensors"))
  assert list(tensors) == ["prompt_embeddings"]
  stored = tensors["prompt_embeddings"]
  assert stored.shape == (100 * submodules, 768) and stored.dtype == np.float32
  assert_bit_exact(stored[:100], released(name))
  assert_bit_exact(prompt_files.load_peft_adapter(tmp_path), released(name))
  assert_bit_exact(prompt_files.load_prompt(tmp_path, (100, 768)), released(name))


def test_peft_config_mirrors_installed_peft(tmp_path):
  import peft
  prompt_files.save_peft_adapter(tmp_path, np.zeros((5, 8), np.float32),
                              base_model_name_or_path="google/t5-base-lm-adapt",
                              num_attention_heads=2, num_layers=3)
  ours = json.loads((tmp_path / "adapter_config.json").read_text())
  theirs = peft.PromptTuningConfig(
      task_type="SEQ_2_SEQ_LM", num_virtual_tokens=5, token_dim=8,
      num_transformer_submodules=1, num_attention_heads=2, num_layers=3,
      base_model_name_or_path="google/t5-base-lm-adapt", inference_mode=True,
  ).to_dict()
  theirs = json.loads(json.dumps(theirs, default=str))
  assert set(ours) == set(theirs)
  for key in ours:
    if key != "peft_version":
      assert ours[key] == theirs[key], key
  assert ours["peft_type"] == "PROMPT_TUNING" and ours["task_type"] == "SEQ_2_SEQ_LM"


def tiny_hf_t5(d_model: int):
  import torch
  import transformers
  torch.manual_seed(0)
  cfg = transformers.T5Config(vocab_size=64, d_model=d_model, d_kv=8, d_ff=16,
                              num_layers=1, num_decoder_layers=1, num_heads=2,
                              feed_forward_proj="gated-gelu", decoder_start_token_id=0)
  return transformers.T5ForConditionalGeneration(cfg).eval()


@pytest.mark.parametrize("submodules", [1, 2])
def test_installed_peft_loads_our_adapter(tmp_path, submodules):
  import peft
  import torch
  prompt = released("rte")
  prompt_files.save_peft_adapter(tmp_path, prompt, base_model_name_or_path="tiny",
                              num_transformer_submodules=submodules,
                              num_attention_heads=2, num_layers=1)
  model = peft.PeftModel.from_pretrained(tiny_hf_t5(768), str(tmp_path))
  weight = model.prompt_encoder["default"].embedding.weight.detach().numpy()
  assert weight.shape == (100 * submodules, 768)
  assert_bit_exact(weight[:100], prompt)
  # The prompt PEFT prepends at run time is ours, and a forward pass works.
  prepended = model.get_prompt(batch_size=2).detach().numpy()
  assert_bit_exact(prepended[0, :100], prompt)
  out = model(input_ids=torch.tensor([[5, 6, 1]]), labels=torch.tensor([[7, 1]]))
  assert np.isfinite(out.loss.item())


def test_we_load_adapter_saved_by_peft(tmp_path):
  import peft
  config = peft.PromptTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=7)
  model = peft.get_peft_model(tiny_hf_t5(16), config)  # PEFT default: 2 submodules
  model.save_pretrained(str(tmp_path))
  weight = model.prompt_encoder["default"].embedding.weight.detach().numpy()
  assert weight.shape == (14, 16)
  assert_bit_exact(prompt_files.load_peft_adapter(tmp_path), weight[:7])


def test_peft_bfloat16_tensor_loads_as_float32(tmp_path):
  prompt_files.save_peft_adapter(tmp_path, np.zeros((3, 4), np.float32),
                              base_model_name_or_path=None)
  values = np.array([[1.5, -2.0, 0.25, 3.0]] * 3, np.float32)
  safetensors.numpy.save_file({"prompt_embeddings": values.astype(ml_dtypes.bfloat16)},
                              str(tmp_path / "adapter_model.safetensors"))
  out = prompt_files.load_peft_adapter(tmp_path)
  assert out.dtype == np.float32
  np.testing.assert_array_equal(out, values)  # all exactly representable in bf16


def test_peft_adapter_errors(tmp_path):
  prompt_files.save_peft_adapter(tmp_path, np.zeros((3, 4), np.float32),
                              base_model_name_or_path=None)
  config_path = tmp_path / "adapter_config.json"
  config = json.loads(config_path.read_text())
  config_path.write_text(json.dumps({**config, "num_virtual_tokens": 5}))
  with pytest.raises(ValueError, match=r"adapter_model\.safetensors.*\(3, 4\).*\(5, 4\)"):
    prompt_files.load_peft_adapter(tmp_path)
  config_path.write_text(json.dumps({**config, "peft_type": "LORA"}))
  with pytest.raises(ValueError, match=r"adapter_config\.json.*LORA"):
    prompt_files.load_peft_adapter(tmp_path)
  with pytest.raises(ValueError, match="num_transformer_submodules"):
    prompt_files.save_peft_adapter(tmp_path / "x", np.zeros((3, 4)),
                                base_model_name_or_path=None,
                                num_transformer_submodules=3)


def _fifo(path: Path) -> None:
  import os
  os.mkfifo(path)


@pytest.mark.timeout(30)  # a FIFO opened for reading would block forever
@pytest.mark.parametrize("entry", ["adapter_config.json", "adapter_model.safetensors"])
@pytest.mark.parametrize("what, make, expect", [
    ("link leaving the adapter", lambda p, outside: p.symlink_to(outside), "leaves the checkpoint"),
    ("dangling link", lambda p, outside: p.symlink_to(outside.parent / "not_there"), "dangling symlink"),
    ("FIFO", lambda p, outside: _fifo(p), "FIFO"),
    ("link to /dev/zero", lambda p, outside: p.symlink_to("/dev/zero"), "resolves to /dev/zero, which leaves"),
])
def test_peft_adapter_entries_are_regular_files_inside_it(tmp_path, entry, what, make, expect):
  """A PEFT adapter folder is read as a checkpoint is (checkpoints/entries.py): each file it
  opens is a regular file inside the folder (or its hub cache), named when it is not."""
  adapter = tmp_path / "adapter"
  prompt_files.save_peft_adapter(adapter, released("rte"), base_model_name_or_path=None)
  outside = tmp_path / "elsewhere" / entry
  outside.parent.mkdir()
  (adapter / entry).rename(outside)
  make(adapter / entry, outside)
  with pytest.raises(prompt_files.entries.CheckpointEntryError, match=expect) as err:
    prompt_files.load_peft_adapter(adapter)
  assert str(adapter / entry) in str(err.value), what


def test_peft_adapter_in_a_hub_cache_loads_through_its_links(tmp_path):
  """The Hugging Face cache layout (snapshots/<rev>/<file> -> ../../blobs/<sha>) is inside."""
  model = tmp_path / "models--org--prompt"
  saved = tmp_path / "saved"
  prompt_files.save_peft_adapter(saved, released("rte"), base_model_name_or_path=None)
  (model / "blobs").mkdir(parents=True)
  snapshot = model / "snapshots" / "abc123"
  snapshot.mkdir(parents=True)
  for i, f in enumerate(sorted(saved.iterdir())):
    (saved / f.name).rename(model / "blobs" / f"sha{i}")
    (snapshot / f.name).symlink_to(Path("../../blobs") / f"sha{i}")
  assert_bit_exact(prompt_files.load_prompt(snapshot, (100, 768)), released("rte"))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("make, expect", [
    (_fifo, "is a FIFO (named pipe), not a regular file"),
    (lambda p: p.symlink_to("/dev/zero"), "is a character device (through the symlink to /dev/zero)"),
    (lambda p: p.symlink_to("/nonexistent/annex/blob"), "is a dangling symlink to '/nonexistent/annex/blob'"),
])
def test_single_file_prompt_that_is_not_a_file_is_named(tmp_path, make, expect):
  path = tmp_path / "prompt.npy"
  make(path)
  with pytest.raises(prompt_files.entries.CheckpointEntryError, match=re.escape(f"prompt {path} {expect}")):
    prompt_files.load_prompt(path)
  with pytest.raises(FileNotFoundError, match="prompt path not found"):
    prompt_files.load_prompt(tmp_path / "absent.npy")

@pytest.mark.parametrize("fmt", ["npy", "numpy_checkpoint", "peft"])
def test_wrong_shape_refused_naming_file(tmp_path, fmt):
  prompt = released("mrpc")
  if fmt == "npy":
    path = prompt_files.save_npy(tmp_path / "mrpc_prompt.npy", prompt)
  elif fmt == "numpy_checkpoint":
    path = prompt_files.save_numpy_checkpoint(tmp_path, 3, prompt)
  else:
    path = prompt_files.save_peft_adapter(tmp_path / "adapter", prompt,
                                       base_model_name_or_path=None)
  with pytest.raises(ValueError) as err:
    prompt_files.load_prompt(path, expected_shape=(20, 768))
  message = str(err.value)
  assert str(path) in message and "(100, 768)" in message and "(20, 768)" in message


def test_load_prompt_from_t5x_dir_uses_reader(tmp_path, monkeypatch):
  """Dispatch only: the T5X reader itself is tested in its own module."""
  import prompt_tuning_jax.checkpoints as ckpt_pkg
  calls = []
  fake = types.ModuleType("prompt_tuning_jax.checkpoints.t5x")
  fake.read_t5x_variable = lambda path, name, **kw: calls.append((path, name)) or np.ones((2, 3))
  monkeypatch.setitem(sys.modules, "prompt_tuning_jax.checkpoints.t5x", fake)
  monkeypatch.setattr(ckpt_pkg, "t5x", fake, raising=False)
  ckpt_dir = tmp_path / "checkpoint_10"
  ckpt_dir.mkdir()
  (ckpt_dir / "checkpoint").write_bytes(b"\x80")
  assert prompt_files.detect_format(ckpt_dir) == "t5x"
  assert prompt_files.detect_format(ckpt_dir / "checkpoint") == "t5x"
  out = prompt_files.load_prompt(ckpt_dir, (2, 3))
  assert out.dtype == np.float32 and out.shape == (2, 3)
  prompt_files.load_prompt(ckpt_dir / "checkpoint", t5x_variable="a/b")
  assert calls == [(str(ckpt_dir), "encoder/prompt/prompt/prompt"),
                   (str(ckpt_dir / "checkpoint"), "a/b")]
  with pytest.raises(ValueError, match=r"checkpoint_10.*\(2, 3\).*\(4, 3\)"):
    prompt_files.load_prompt(ckpt_dir, (4, 3))


@pytest.mark.parametrize("path", ["test_t5_tiny.checkpoint_0",
                                  "test_t5_1_1_tiny/checkpoint_3",
                                  "test_t5_1_1_tiny/checkpoint_3/checkpoint"])
def test_detect_real_t5x_checkpoints(path):
  assert prompt_files.detect_format(TESTDATA / "t5x_checkpoints" / path) == "t5x"


def test_round_trip_t5x_checkpoint(tmp_path):
  from prompt_tuning_jax.checkpoints import t5x
  prompt = released("sst2")
  ckpt = t5x.write_t5x_checkpoint(
      str(tmp_path), {"encoder": {"prompt": {"prompt": {"prompt": prompt}}}}, 7)
  assert_bit_exact(prompt_files.load_prompt(ckpt, (100, 768)), prompt)
  assert_bit_exact(prompt_files.load_prompt(Path(ckpt) / "checkpoint"), prompt)
  with pytest.raises(ValueError, match=r"checkpoint_7.*\(100, 768\).*\(100, 512\)"):
    prompt_files.load_prompt(ckpt, (100, 512))


def test_detect_format_errors(tmp_path):
  with pytest.raises(ValueError, match="cannot tell the prompt format of folder"):
    prompt_files.detect_format(tmp_path)
  text = tmp_path / "prompt.txt"
  text.write_text("0.1 0.2")
  with pytest.raises(ValueError, match=r"prompt\.txt is neither"):
    prompt_files.load_prompt(text)
  with pytest.raises(FileNotFoundError, match="missing.npy"):
    prompt_files.load_prompt(tmp_path / "missing.npy")


def test_save_refuses_non_matrix(tmp_path):
  with pytest.raises(ValueError, match=r"bad\.npy.*2-D"):
    prompt_files.save_npy(tmp_path / "bad.npy", np.zeros(5, np.float32))
  np.save(tmp_path / "ints.npy", np.zeros((2, 2), np.int32))
  with pytest.raises(ValueError, match=r"ints\.npy.*floating"):
    prompt_files.load_npy(tmp_path / "ints.npy")


def test_write_model_card(tmp_path):
  path = prompt_files.write_model_card(
      tmp_path / "card.json", backbone="t5_1_1_lm100k_base", task="rte",
      prompt_length=100, init="class_labels", step=1_130_000, steps_trained=30000,
      dev_metrics={"accuracy": np.float32(68.5), "n": np.int64(277)},
      extra={"lr": 0.3})
  card = json.loads(path.read_text())
  assert card["backbone"] == "t5_1_1_lm100k_base" and card["task"] == "rte"
  assert card["prompt_length"] == 100 and (card["step"], card["steps_trained"]) == (1_130_000, 30000)
  assert card["init"] == "class_labels" and card["lr"] == 0.3
  assert card["dev_metrics"] == {"accuracy": 68.5, "n": 277}
  with pytest.raises(ValueError, match="'task' clashes"):
    prompt_files.write_model_card(tmp_path / "c2.json", backbone="b", task="t",
                               prompt_length=1, init="i", step=1, steps_trained=None, dev_metrics={},
                               extra={"task": "x"})
  with pytest.raises(ValueError, match="card.dev_metrics.obj"):
    prompt_files.write_model_card(tmp_path / "c3.json", backbone="b", task="t",
                               prompt_length=1, init="i", step=1, steps_trained=None,
                               dev_metrics={"obj": object()})
