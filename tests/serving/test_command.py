"""The serve command's start-up refusals: one line naming the flag or file, exit 2, before
the model loads."""
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest

from prompt_tuning_jax.prompt import files as prompt_files

REPO = pathlib.Path(__file__).resolve().parents[2]
CHECKPOINT = REPO / "prompt_tuning_jax" / "assets" / "demo_model" / "checkpoint_1500"


def _serve(*flags):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  start = time.time()
  proc = subprocess.run([sys.executable, "-m", "prompt_tuning_jax.serve", "--gin_file=models/demo.gin",
                         f"--gin.CHECKPOINT_PATH={CHECKPOINT}", *flags], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=120)
  lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  return proc.returncode, lines, proc.stdout, time.time() - start


def test_prompt_of_another_width_is_refused_naming_the_file(tmp_path):
  prompt_files.save_npy(tmp_path / "good.npy", np.zeros((10, 64), np.float32))
  prompt_files.save_npy(tmp_path / "xl.npy", np.zeros((10, 4096), np.float32))
  code, errors, out, seconds = _serve(f"--prompt_dir={tmp_path}", "--port=0")
  assert code == 2 and len(errors) == 1, errors
  assert f"{tmp_path}/xl.npy: prompt width 4096 does not match the backbone's emb_dim=64" in errors[0]
  assert "listening" not in out and seconds < 60


@pytest.mark.parametrize("flag,message", [
    ("--row_buckets=32,8", "--row_buckets=32,8: expected increasing positive integers"),
    ("--max_batch_rows=64", "--max_batch_rows=64 exceeds the largest --row_buckets value 32"),
    ("--prompt_dir=/no/such/dir", "--prompt_dir=/no/such/dir: not a folder"),
])
def test_bad_flags_are_one_line(tmp_path, flag, message):
  prompt_files.save_npy(tmp_path / "good.npy", np.zeros((10, 64), np.float32))
  code, errors, _, _ = _serve(f"--prompt_dir={tmp_path}", flag)
  assert code == 2 and len(errors) == 1 and message in errors[0], errors
