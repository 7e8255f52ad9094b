"""The convert CLI: T5X -> HF -> T5X is lossless on the real fixture."""
import os
import subprocess
import sys

import pytest

from prompt_tuning_jax import convert
from prompt_tuning_jax.checkpoints import t5x, tree


def _assert_bit_identical(a, b):
  fa, fb = tree.flatten(a), tree.flatten(b)
  assert sorted(fa) == sorted(fb)
  for k in fa:
    assert fa[k].dtype == fb[k].dtype and fa[k].shape == fb[k].shape and fa[k].tobytes() == fb[k].tobytes(), k


def test_t5x_to_hf_to_t5x_lossless(tmp_path, testdata):
  src = str(testdata / "t5x_checkpoints" / "test_t5_tiny.checkpoint_0")
  hf_dir, t5x_dir = str(tmp_path / "hf"), str(tmp_path / "t5x")
  assert convert.main(["--from_format=t5x", "--to_format=hf", f"--input={src}", f"--output={hf_dir}"]) == 0
  assert os.path.exists(os.path.join(hf_dir, "model.safetensors"))
  assert convert.main(["--from_format=hf", "--to_format=t5x", f"--input={hf_dir}", f"--output={t5x_dir}",
                       "--step=7"]) == 0
  back = t5x.read_t5x_checkpoint(os.path.join(t5x_dir, "checkpoint_7"))
  assert back.step == 7
  _assert_bit_identical(back.params, t5x.read_t5x_checkpoint(src).params)


def test_t5x_to_t5x_keeps_step_and_casts(tmp_path, testdata):
  src = str(testdata / "t5x_checkpoints" / "test_t5_1_1_tiny" / "checkpoint_3")
  written = convert.convert("t5x", "t5x", src, str(tmp_path), dtype="bfloat16")
  assert written == str(tmp_path / "checkpoint_3")
  back = t5x.read_t5x_checkpoint(written)
  original = t5x.read_t5x_checkpoint(src, dtype="bfloat16")
  _assert_bit_identical(back.params, original.params)
  assert str(back.params["token_embedder"]["embedding"].dtype) == "bfloat16"


def test_bad_flags_are_refused(tmp_path):
  with pytest.raises(SystemExit):
    convert.main(["--from_format=onnx", "--to_format=hf", "--input=x", "--output=y"])
  with pytest.raises(ValueError, match="--to_format='pt'"):
    convert.convert("t5x", "pt", "x", "y")
  with pytest.raises(FileNotFoundError, match="no T5X checkpoint"):
    convert.convert("t5x", "hf", str(tmp_path / "missing"), str(tmp_path / "out"))


def test_module_entry_point_runs():
  result = subprocess.run([sys.executable, "-m", "prompt_tuning_jax.convert", "--help"], capture_output=True,
                          timeout=120, cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
  assert result.returncode == 0 and b"--from_format" in result.stdout
