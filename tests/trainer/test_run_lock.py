"""One run per run folder (issue 19), with real processes: a second run on a held MODEL_DIR
is refused in seconds naming the holder (host, pid, since); after a kill -9 of the holder
the next run takes the stale lock over, says so, and finishes where an undisturbed run
does, bit for bit. On local disk (flock) and on a real Cloud Storage emulator.
"""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from test_gcs_training import REPO, STEPS, TIMEOUT_S, _start, straight  # noqa: F401  (a fixture)

from prompt_tuning_jax.checkpoints import fs
from prompt_tuning_jax.prompt import files as prompt_files
from prompt_tuning_jax.trainer import run_lock

HOST = socket.gethostname()
_HOLDER = "import sys, time\nfrom prompt_tuning_jax.trainer import run_lock\n" \
          "run_lock.RunLock(sys.argv[1])\nprint('held', flush=True)\ntime.sleep(600)\n"


def _holder(model_dir: str) -> subprocess.Popen:
  """Another process holding the lock of model_dir (until killed)."""
  proc = subprocess.Popen([sys.executable, "-c", _HOLDER, model_dir], cwd=REPO, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  line = proc.stdout.readline()
  assert line == "held\n", proc.stderr.read()[-3000:]
  return proc


def _refusal_pattern(model_dir: str, pid: int) -> str:
  return (rf"{re.escape(model_dir)} is in use by another run \(host {re.escape(HOST)}, pid {pid}, "
          rf"since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC; lock {re.escape(fs.join(model_dir, 'run.lock'))}\)")


def _kill_9(proc: subprocess.Popen) -> None:
  proc.send_signal(signal.SIGKILL)
  proc.wait()


@pytest.fixture(params=["local", "gcs"])
def model_dir(request, tmp_path) -> str:
  if request.param == "local":
    return str(tmp_path / "run")
  return fs.join(request.getfixturevalue("gcs_emulator"), f"lock_{tmp_path.name}")


def test_a_held_folder_is_refused_naming_the_holder_and_a_killed_holder_is_taken_over(model_dir, caplog):
  holder = _holder(model_dir)
  try:
    with pytest.raises(run_lock.RunLockedError, match=_refusal_pattern(model_dir, holder.pid)):
      run_lock.RunLock(model_dir)
  finally:
    _kill_9(holder)
  assert fs.exists(fs.join(model_dir, "run.lock"))  # left behind by the killed holder
  with caplog.at_level(logging.WARNING):
    lock = run_lock.RunLock(model_dir)
  assert any(f"taking over the stale run lock {fs.join(model_dir, 'run.lock')} left by host {HOST}, pid "
             f"{holder.pid}" in r.getMessage() for r in caplog.records)
  record = json.loads(fs.read_bytes(fs.join(model_dir, "run.lock")))
  assert record["pid"] == os.getpid() and record["host"] == HOST
  lock.release()
  assert not fs.exists(fs.join(model_dir, "run.lock"))
  run_lock.RunLock(model_dir).release()  # free again


def test_a_process_may_take_its_own_lock_again_and_it_is_released_with_the_outer_hold(tmp_path):
  """The train command holds the lock from before its data checks; loop.train takes it again."""
  model_dir = str(tmp_path / "run")
  with run_lock.hold(model_dir) as outer:
    with run_lock.hold(model_dir) as inner:
      assert inner is outer
    assert (tmp_path / "run/run.lock").exists()
    with pytest.raises(run_lock.RunLockedError):
      run_lock.RunLock(model_dir)  # anyone else (here: a second lock object) is refused
  assert not (tmp_path / "run").exists()


def test_a_lock_made_folder_is_removed_again_when_the_run_is_refused(tmp_path):
  lock = run_lock.RunLock(str(tmp_path / "new" / "run"))
  assert (tmp_path / "new/run/run.lock").exists()
  lock.release()
  assert not (tmp_path / "new").exists()


def test_gcs_lock_of_another_host_is_stale_only_without_a_heartbeat(gcs_emulator, caplog):
  model_dir = fs.join(gcs_emulator, "lock_other_host")
  record = {"host": "elsewhere", "pid": 1, "since": "2026-01-01 00:00:00 UTC", "token": "t"}
  fs.create_new(fs.join(model_dir, "run.lock"), json.dumps(record).encode())
  with pytest.raises(run_lock.RunLockedError, match=r"host elsewhere, pid 1, since 2026-01-01 00:00:00 UTC"):
    run_lock.RunLock(model_dir)  # just written: fresh
  time.sleep(1.5)
  with caplog.at_level(logging.WARNING):
    lock = run_lock.RunLock(model_dir, stale_after_s=1.0)
  assert any("left by host elsewhere, pid 1" in r.getMessage() and "no heartbeat for" in r.getMessage()
             for r in caplog.records)
  assert json.loads(fs.read_bytes(fs.join(model_dir, "run.lock")))["pid"] == os.getpid()
  lock.release()
  assert not fs.exists(fs.join(model_dir, "run.lock"))


# ----- two real training runs on one folder

def _train_until_refused_then_kill_and_take_over(model_dir: str, checkpoint_exists) -> tuple[str, float]:
  first = _start(model_dir)
  try:
    deadline = time.time() + TIMEOUT_S
    while not fs.exists(fs.join(model_dir, "run.lock")):
      assert first.poll() is None and time.time() < deadline, first.stderr.read()[-3000:]
      time.sleep(0.2)
    t0 = time.time()
    second = _start(model_dir)
    out, err = second.communicate(timeout=TIMEOUT_S)
    seconds = time.time() - t0
    assert second.returncode == 2, err[-3000:]
    assert first.poll() is None, "the first run died while the second was refused"
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(r"error: " + _refusal_pattern(model_dir, first.pid) + r": wait for it to finish or "
                        r"stop it, or use another MODEL_DIR", last), last
    assert "Traceback" not in err and not out.strip()
    while not checkpoint_exists():
      assert first.poll() is None and time.time() < deadline, first.stderr.read()[-3000:]
      time.sleep(0.2)
  finally:
    _kill_9(first)
  third = _start(model_dir)
  out, err = third.communicate(timeout=TIMEOUT_S)
  assert third.returncode == 0, err[-3000:]
  assert f"taking over the stale run lock {fs.join(model_dir, 'run.lock')} left by host {HOST}, pid " \
         f"{first.pid}" in err
  assert f"done: step {STEPS}" in out
  assert not fs.exists(fs.join(model_dir, "run.lock"))
  return last, seconds


@pytest.mark.slow
@pytest.mark.timeout(5 * TIMEOUT_S)
def test_two_runs_on_one_local_folder(tmp_path, straight):  # noqa: F811
  model_dir = str(tmp_path / "run")
  line, seconds = _train_until_refused_then_kill_and_take_over(
      model_dir, lambda: os.path.exists(os.path.join(model_dir, "train_state", "2")))
  print(f"\nlocal: second run refused in {seconds:.1f} s: {line}")
  np.testing.assert_array_equal(np.load(os.path.join(model_dir, "prompt.npy")), np.load(straight / "prompt.npy"))


@pytest.mark.slow
@pytest.mark.timeout(5 * TIMEOUT_S)
def test_two_runs_on_one_gcs_folder(gcs_emulator, straight):  # noqa: F811
  model_dir = fs.join(gcs_emulator, "two_runs")
  line, seconds = _train_until_refused_then_kill_and_take_over(
      model_dir, lambda: fs.exists(fs.join(model_dir, "train_state", "2", "commit_success.txt")))
  print(f"\ngs://: second run refused in {seconds:.1f} s: {line}")
  np.testing.assert_array_equal(prompt_files.load_npy(fs.join(model_dir, "prompt.npy")),
                                np.load(straight / "prompt.npy"))
