"""The pod job rehearsed on one machine: the train command with MODEL_DIR=gs://bucket/...
against a real local Cloud Storage emulator, kill -9, resume, evaluate, export; and
preemption by a real SIGTERM. The reference is the same command run straight through
on local disk: the resumed prompt must equal it bit for bit.
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import gin
from prompt_tuning_jax import eval as eval_cmd
from prompt_tuning_jax import export
from prompt_tuning_jax.checkpoints import fs
from prompt_tuning_jax.prompt import files as prompt_files

REPO = pathlib.Path(__file__).resolve().parents[2]
FIXTURE = "tests/testdata/t5x_checkpoints/test_t5_tiny.checkpoint_0"
STEPS = 8
DATA_FLAGS = ["--gin.MIXTURE_OR_TASK_NAME=superglue_rte_sample_taskless",
              "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 4}"]
TIMEOUT_S = 400

pytestmark = pytest.mark.slow


def _train_argv(model_dir: str, checkpoint_period: int) -> list[str]:
  return [sys.executable, "-m", "prompt_tuning_jax.train", "--gin_file=tests/tiny_inline.gin",
          "--gin_file=runs/prompt_tuning.gin", f"--gin.MODEL_DIR={model_dir}", *DATA_FLAGS,
          f"--gin.INITIAL_CHECKPOINT_PATH={FIXTURE}", f"--gin.TRAIN_STEPS={STEPS}", "--gin.BATCH_SIZE=8",
          "--gin.PROMPT_LENGTH=3", "--gin.EVAL_PERIOD=4", f"--gin.CHECKPOINT_PERIOD={checkpoint_period}",
          "--gin.TrainConfig.log_period=1", "--gin.TrainConfig.progress_bar=False"]


def _start(model_dir: str, checkpoint_period: int = 2) -> subprocess.Popen:
  env = dict(os.environ, PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu")
  return subprocess.Popen(_train_argv(model_dir, checkpoint_period), cwd=REPO, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen) -> str:
  out, err = proc.communicate(timeout=TIMEOUT_S)
  assert proc.returncode == 0, f"train exited {proc.returncode}:\n{err[-3000:]}"
  return out


def _wait_for(proc: subprocess.Popen, ready) -> None:
  deadline = time.time() + TIMEOUT_S
  while not ready():
    if proc.poll() is not None:
      pytest.fail(f"train exited {proc.returncode} early:\n{proc.stderr.read()[-3000:]}")
    if time.time() > deadline:
      proc.kill()
      pytest.fail("timed out waiting for the training subprocess")
    time.sleep(0.2)


def _last_step(model_dir: str) -> int:
  path = fs.join(model_dir, "metrics.jsonl")
  if not os.path.exists(path):
    return 0
  steps = [json.loads(line)["step"] for line in open(path) if '"train/' in line]
  return max(steps, default=0)


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> pathlib.Path:
  """The uninterrupted run on local disk: the reference prompt."""
  model_dir = tmp_path_factory.mktemp("straight")
  _finish(_start(str(model_dir)))
  return model_dir


@pytest.fixture
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def _eval(prompt: str, output_dir: str) -> dict:
  return eval_cmd.main(["--gin_file=tests/tiny_inline.gin", f"--gin.CHECKPOINT_PATH={REPO / FIXTURE}",
                        *DATA_FLAGS, f"--prompt={prompt}", "--mode=rank", f"--output_dir={output_dir}"])


@pytest.mark.timeout(3 * TIMEOUT_S)
def test_gcs_run_dir_kill_9_resume_evaluate_export(gcs_emulator, straight, tmp_path, clean_gin):
  run = fs.join(gcs_emulator, "run1")
  proc = _start(run)
  _wait_for(proc, lambda: fs.exists(fs.join(run, "train_state", "4", "commit_success.txt")))
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not fs.exists(fs.join(run, "prompt.npy"))
  out = _finish(_start(run))  # the same command resumes
  assert f"done: step {STEPS}" in out
  want = np.load(straight / "prompt.npy")
  got = prompt_files.load_npy(fs.join(run, "prompt.npy"))
  np.testing.assert_array_equal(got, want)  # bit for bit
  assert fs.read_bytes(fs.join(run, "prompt.npy")) == (straight / "prompt.npy").read_bytes()
  names = set(fs.listdir(run))
  assert {"config.gin", "metrics.jsonl", "tensorboard", "train_state", "best", "numpy_checkpoints"} <= names
  steps = [json.loads(line)["step"] for line in fs.read_text(fs.join(run, "metrics.jsonl")).splitlines()
           if '"train/' in line]
  assert steps == list(range(1, STEPS + 1))  # one line per step: none lost, none written twice
  np.testing.assert_array_equal(prompt_files.load_prompt(fs.join(run, "numpy_checkpoints", f"checkpoint_{STEPS}")),
                                want)
  assert not (REPO / "gs:").exists(), "a gs:// path was written under the working directory"

  results = _eval(fs.join(run, "prompt.npy"), fs.join(run, "eval"))
  gin.clear_config()
  local = _eval(str(straight / "prompt.npy"), str(tmp_path / "eval"))
  assert results == local and results
  assert any(name.endswith(".metrics.json") for name in fs.listdir(fs.join(run, "eval")))

  paths = export.export_prompt(fs.join(run, "prompt.npy"), fs.join(run, "export"), step=STEPS,
                               metrics=json.loads(fs.read_text(fs.join(run, "best", "best.json"))))
  assert all(p.startswith(f"{run}/export/") for p in paths.values())
  for fmt in ("npy", "numpy_checkpoint", "peft"):
    np.testing.assert_array_equal(prompt_files.load_prompt(paths[fmt]), want, err_msg=fmt)


@pytest.mark.timeout(3 * TIMEOUT_S)
def test_sigterm_saves_exits_0_and_the_rerun_resumes_bit_for_bit(straight, tmp_path):
  model_dir = str(tmp_path / "preempted")
  proc = _start(model_dir, checkpoint_period=1000)  # the only checkpoint is the preemption one
  _wait_for(proc, lambda: _last_step(model_dir) >= 2)
  proc.send_signal(signal.SIGTERM)
  out = _finish(proc)  # exit status 0
  saved = sorted(int(s) for s in os.listdir(os.path.join(model_dir, "train_state")) if s.isdigit())
  assert len(saved) == 1 and 2 <= saved[0] < STEPS, saved
  assert f"preempted at step {saved[0]}; rerun the same command to resume" in out and "done" not in out
  assert _last_step(model_dir) == saved[0], "the run went on after saving"
  assert not os.path.exists(os.path.join(model_dir, "prompt.npy")), "a preempted run must not export"
  out = _finish(_start(model_dir, checkpoint_period=1000))
  assert f"done: step {STEPS}" in out
  np.testing.assert_array_equal(np.load(os.path.join(model_dir, "prompt.npy")), np.load(straight / "prompt.npy"))
