"""Two processes joined by `jax.distributed` on localhost train with MODEL_DIR=gs://bucket/...
on a real local Cloud Storage emulator, are both killed with SIGKILL after a checkpoint, and
are relaunched: the resumed prompt equals an uninterrupted two-process run on local disk
bit for bit (same mesh, same devices, so the same arithmetic).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from test_multihost_training import HERE, LAUNCH_TIMEOUT_S, NUM_PROCESSES, WORKER, _free_port, _launch, _tail

from prompt_tuning_jax.checkpoints import fs
from prompt_tuning_jax.prompt import files as prompt_files

STEPS, PERIOD = 4, 2

pytestmark = pytest.mark.slow


def _launch_and_kill(model_dir: str, logs) -> None:
  """Start both workers; SIGKILL both once checkpoint PERIOD is committed on gs://."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
             PYTHONPATH=os.pathsep.join([str(HERE.parents[1]), os.environ.get("PYTHONPATH", "")]),
             TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
  port = str(_free_port())
  logs.mkdir(parents=True, exist_ok=True)
  procs = []
  for pid in range(NUM_PROCESSES):
    with open(logs / f"worker{pid}.out", "w") as fo, open(logs / f"worker{pid}.err", "w") as fe:
      procs.append(subprocess.Popen([sys.executable, str(WORKER), str(pid), str(NUM_PROCESSES), port, model_dir,
                                     str(STEPS), str(PERIOD), "1"], env=env, cwd=HERE.parents[1], stdout=fo, stderr=fe))
  marker = fs.join(model_dir, "train_state", str(PERIOD), "commit_success.txt")
  deadline = time.time() + LAUNCH_TIMEOUT_S
  try:
    while not fs.exists(marker):
      failed = [p.returncode for p in procs if p.poll() is not None]
      if failed or time.time() > deadline:
        pytest.fail(f"workers ended {failed} or timed out before checkpoint {PERIOD}:\n"
                    + "\n".join(_tail(logs / f"worker{i}.err") for i in range(NUM_PROCESSES)))
      time.sleep(0.2)
  finally:
    for p in procs:
      if p.poll() is None:
        p.send_signal(signal.SIGKILL)
      p.wait()


@pytest.mark.timeout(4 * LAUNCH_TIMEOUT_S)
def test_two_processes_on_gcs_kill_9_resume_bit_identical(gcs_emulator, tmp_path):
  run = fs.join(gcs_emulator, "multi")
  _launch_and_kill(run, tmp_path / "logs_killed")
  assert not fs.exists(fs.join(run, "prompt.npy"))
  resumed = _launch(run, STEPS, 1, tmp_path / "logs_resumed")
  assert [(r["process_count"], r["step"]) for r in resumed] == [(2, STEPS)] * 2
  reference_dir = tmp_path / "reference"
  _launch(reference_dir, STEPS, 1, tmp_path / "logs_reference")  # the same job, straight through
  want = np.load(reference_dir / "prompt.npy")
  np.testing.assert_array_equal(prompt_files.load_npy(fs.join(run, "prompt.npy")), want)
  np.testing.assert_array_equal(np.asarray(resumed[1]["prompt"], np.float32), want)  # process 1 agrees
  assert {"metrics.jsonl", "train_state", "numpy_checkpoints"} <= set(fs.listdir(run))
  assert not (HERE.parents[1] / "gs:").exists()
