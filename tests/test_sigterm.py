"""SIGTERM as a scheduler sends it, to real processes: the `train` COMMAND installs the
handler first thing, so a SIGTERM at any point before the first step exits 0 and says
nothing was trained or written; library code installs nothing, so `loop.train()` called
from other code dies on SIGTERM like any program. (A SIGTERM mid-run -- `preempted at step
N; rerun the same command to resume`, never `done` -- and its bit-for-bit resume are
tests/trainer/test_gcs_training.py::test_sigterm_saves_exits_0_and_the_rerun_resumes_bit_for_bit.)
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURE = "tests/testdata/t5x_checkpoints/test_t5_tiny.checkpoint_0"
TIMEOUT_S = 400
STOPPED = "stopped by SIGTERM before the first training step: nothing trained, no checkpoint written"


def _gin_flags(model_dir: pathlib.Path, steps: int = 1000) -> list[str]:
  return ["--gin_file=tests/tiny_inline.gin", "--gin_file=runs/prompt_tuning.gin", f"--gin.MODEL_DIR={model_dir}",
          "--gin.MIXTURE_OR_TASK_NAME=superglue_rte_sample_taskless",
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 4}", f"--gin.INITIAL_CHECKPOINT_PATH={FIXTURE}",
          f"--gin.TRAIN_STEPS={steps}", "--gin.BATCH_SIZE=8", "--gin.PROMPT_LENGTH=3", "--gin.EVAL_PERIOD=1000",
          "--gin.CHECKPOINT_PERIOD=1000", "--gin.TrainConfig.log_period=1", "--gin.TrainConfig.progress_bar=False"]


def _popen(argv: list[str]) -> subprocess.Popen:
  env = dict(os.environ, PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu")
  return subprocess.Popen(argv, cwd=REPO, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _catches_sigterm(pid: int) -> bool:
  """The process has a SIGTERM handler (bit 15 of /proc/PID/status SigCgt)."""
  with open(f"/proc/{pid}/status") as f:
    caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
  return bool(caught & (1 << (signal.SIGTERM - 1)))


def _wait_for(proc: subprocess.Popen, ready, what: str) -> None:
  deadline = time.time() + TIMEOUT_S
  while not ready():
    if proc.poll() is not None:
      pytest.fail(f"exited {proc.returncode} before {what}:\n{proc.stderr.read()[-3000:]}")
    if time.time() > deadline:
      proc.kill()
      pytest.fail(f"timed out waiting for {what}")
    time.sleep(0.05)


def _train_steps_logged(model_dir: pathlib.Path) -> int:
  path = model_dir / "metrics.jsonl"
  if not path.exists():
    return 0
  return max((json.loads(l)["step"] for l in path.read_text().splitlines() if '"train/' in l), default=0)


def _stop(proc: subprocess.Popen) -> tuple[str, str]:
  proc.send_signal(signal.SIGTERM)
  return proc.communicate(timeout=TIMEOUT_S)


@pytest.mark.timeout(TIMEOUT_S)
def test_sigterm_at_start_up_exits_0_and_writes_nothing(tmp_path):
  """Right after the handler is in (while flags parse and jax imports): exit 0, one line."""
  model_dir = tmp_path / "run"
  proc = _popen([sys.executable, "-m", "prompt_tuning_jax.train", *_gin_flags(model_dir)])
  _wait_for(proc, lambda: _catches_sigterm(proc.pid), "the SIGTERM handler was installed")
  out, err = _stop(proc)
  assert proc.returncode == 0, err[-3000:]
  assert STOPPED in out and "done" not in out, out
  assert "Traceback" not in err, err[-3000:]
  assert not model_dir.exists()


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S)
def test_sigterm_while_data_loads_exits_0_without_a_checkpoint(tmp_path):
  """After the backbone loaded and config.gin was written (the data pipeline is being built):
  exit 0, no train_state, no prompt, no `done`."""
  model_dir = tmp_path / "run"
  proc = _popen([sys.executable, "-m", "prompt_tuning_jax.train", *_gin_flags(model_dir)])
  _wait_for(proc, lambda: (model_dir / "config.gin").exists(), "config.gin was written")
  out, err = _stop(proc)
  assert proc.returncode == 0, err[-3000:]
  assert STOPPED in out and "done" not in out and "preempted" not in out, out
  assert "Traceback" not in err, err[-3000:]
  assert not (model_dir / "train_state").exists() or not os.listdir(model_dir / "train_state")
  assert not (model_dir / "prompt.npy").exists()
  assert _train_steps_logged(model_dir) == 0


_LIBRARY_TRAIN = """
import argparse, sys
from prompt_tuning_jax import cli
cli.parse(argparse.ArgumentParser(), sys.argv[1:])
from prompt_tuning_jax.trainer import loop
loop.train(cli.build_config(loop.TrainConfig))
print("returned")
"""


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S)
def test_library_train_installs_no_handler_so_sigterm_kills_it(tmp_path):
  """`loop.train()` called from other code, mid-run: the default SIGTERM action ends it."""
  model_dir = tmp_path / "run"
  proc = _popen([sys.executable, "-c", _LIBRARY_TRAIN, *_gin_flags(model_dir)])
  _wait_for(proc, lambda: _train_steps_logged(model_dir) >= 1, "the first step was logged")
  assert not _catches_sigterm(proc.pid)
  out, err = _stop(proc)
  assert proc.returncode == -signal.SIGTERM, (proc.returncode, err[-3000:])
  assert "returned" not in out and "preempted" not in out
