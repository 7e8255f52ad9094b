"""Multi-host training shown on one machine.

Two processes joined by `jax.distributed` (coordinator on 127.0.0.1, 2 CPU devices each)
train the real tiny T5X fixture for a few steps with pure data parallelism (mesh 4 x 1:
each process feeds half of every batch), checkpoint, and are relaunched to resume on a
2 x 2 mesh (data across the processes, model within each), so the restore also
reshards. They must end where one process training straight through ends: same
per-step losses (so the same global batches) and the same prompt, to float32 tolerance
(the device counts differ, so reductions may round differently).
"""
from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from test_loop import tiny_config

from prompt_tuning_jax.text import data
from prompt_tuning_jax.prompt import wrapper
from prompt_tuning_jax.trainer import loop

HERE = pathlib.Path(__file__).resolve().parent
WORKER = HERE / "multihost_worker.py"
STEPS = 2  # per launch: the second launch resumes at STEPS and trains to 2 * STEPS
LAUNCH_TIMEOUT_S = 300
NUM_PROCESSES = 2


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _tail(path: pathlib.Path, n: int = 3000) -> str:
  """The informative end of a worker's log (TF/XLA banners and Gloo chatter dropped)."""
  lines = [l for l in path.read_text(errors="replace").splitlines()
           if not l.startswith(("I0000", "W0000", "[Gloo]", "WARNING: All log messages"))]
  return "\n".join(lines)[-n:]


def _launch_once(model_dir: pathlib.Path, steps: int, partitions: int, logs: pathlib.Path,
                 ) -> tuple[list[tuple[int | None, pathlib.Path, pathlib.Path]], bool]:
  """Start both processes and wait for both, killing the survivor when one fails (it
  would block at the next collective). Returns [(rc, stdout, stderr)], timed_out."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
             PYTHONPATH=os.pathsep.join([str(HERE.parents[1]), os.environ.get("PYTHONPATH", "")]),
             TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
  port = str(_free_port())
  logs.mkdir(parents=True, exist_ok=True)
  procs, files = [], []
  for pid in range(NUM_PROCESSES):
    out, err = logs / f"worker{pid}.out", logs / f"worker{pid}.err"
    with open(out, "w") as fo, open(err, "w") as fe:
      procs.append(subprocess.Popen(
          [sys.executable, str(WORKER), str(pid), str(NUM_PROCESSES), port, str(model_dir), str(steps),
           str(STEPS), str(partitions)], env=env, cwd=HERE.parents[1], stdout=fo, stderr=fe))
    files.append((out, err))
  deadline = time.time() + LAUNCH_TIMEOUT_S
  timed_out = True
  try:
    while time.time() < deadline:
      codes = [p.poll() for p in procs]
      if all(c is not None for c in codes) or any(c not in (None, 0) for c in codes):
        timed_out = False
        break
      time.sleep(0.2)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  return [(p.returncode, out, err) for p, (out, err) in zip(procs, files)], timed_out


def _launch(model_dir: pathlib.Path, steps: int, partitions: int, logs: pathlib.Path) -> list[dict]:
  """Run the two-process job to `steps`; returns each process's RESULT dict, in order."""
  results, timed_out = _launch_once(model_dir, steps, partitions, logs)
  if any(rc != 0 and "already in use" in err.read_text(errors="replace").lower() for rc, _, err in results):
    results, timed_out = _launch_once(model_dir, steps, partitions, logs / "retry")  # port was taken
  if any(rc != 0 for rc, _, _ in results):
    why = f"timed out after {LAUNCH_TIMEOUT_S} s" if timed_out else "failed"
    report = "\n".join(f"--- worker {pid}: rc={rc} (-9: killed by the test), stderr tail:\n{_tail(err)}"
                        for pid, (rc, _, err) in enumerate(results))
    pytest.fail(f"two-process training to step {steps} (num_partitions={partitions}) {why}:\n{report}")
  parsed = []
  for pid, (_, out, err) in enumerate(results):
    lines = [l for l in out.read_text().splitlines() if l.startswith("RESULT ")]
    assert lines, (f"worker {pid} printed no RESULT line; stdout:\n{out.read_text()[-2000:]}\n"
                   f"stderr:\n{_tail(err)}")
    parsed.append(json.loads(lines[-1][len("RESULT "):]))
  return parsed


def _train_metrics(model_dir: pathlib.Path) -> list[dict]:
  rows = [json.loads(l) for l in open(model_dir / "metrics.jsonl")]
  return [r for r in rows if "train/cross_entropy" in r]


def test_each_host_reads_its_rows_of_the_single_host_batches():
  """Host 1 of 2 gets rows [4, 8) of the global batch a single host would build, also
  after a resume (skip_batches), so multi-host runs see the same data."""
  cfg = tiny_config("unused").data
  whole = next(data.train_batches(cfg, skip_batches=3))
  second_half = next(data.train_batches(cfg, skip_batches=3, shard_id=1, num_shards=2))
  assert set(second_half) == set(whole) == {"encoder_input_tokens", "decoder_input_tokens",
                                            "decoder_target_tokens", "decoder_loss_weights"}
  for key, value in whole.items():
    assert value.shape[0] == 8, key
    np.testing.assert_array_equal(second_half[key], value[4:], err_msg=key)
  assert not np.array_equal(whole["encoder_input_tokens"][:4], whole["encoder_input_tokens"][4:])
  with pytest.raises(ValueError, match=r"shard_id must be in \[0, 2\), got 2"):
    next(data.train_batches(cfg, shard_id=2, num_shards=2))


@pytest.mark.slow
@pytest.mark.timeout(3 * LAUNCH_TIMEOUT_S)
def test_two_processes_train_checkpoint_resume_and_match_one_process(tmp_path):
  multi = tmp_path / "multi"
  first = _launch(multi, STEPS, 1, tmp_path / "logs1")
  assert [r["pid"] for r in first] == [0, 1]
  assert all((r["process_count"], r["device_count"], r["step"]) == (2, 4, STEPS) for r in first)
  assert [(r["mesh"], r["rows"]) for r in first] == [({"data": 4, "model": 1}, [4 * i, 4 * i + 4])
                                                     for i in range(2)]
  assert (multi / "train_state" / str(STEPS)).is_dir(), f"no checkpoint under {multi / 'train_state'}"
  second = _launch(multi, 2 * STEPS, 2, tmp_path / "logs2")
  assert [(r["mesh"], r["rows"], r["step"]) for r in second] == [
      ({"data": 2, "model": 2}, [4 * i, 4 * i + 4], 2 * STEPS) for i in range(2)]
  assert (multi / "train_state" / str(2 * STEPS)).is_dir()
  # Both processes hold the same (replicated) prompt, and the primary exported it once.
  np.testing.assert_array_equal(second[0]["prompt"], second[1]["prompt"])
  exported = np.load(multi / "prompt.npy")
  np.testing.assert_array_equal(exported, np.asarray(second[0]["prompt"], np.float32))
  assert not np.allclose(first[0]["prompt"], exported), "the resumed launch did not train"
  # The relaunch resumed at STEPS (a restart would log steps 1.. again); one writer only.
  multi_metrics = _train_metrics(multi)
  assert [r["step"] for r in multi_metrics] == list(range(1, 2 * STEPS + 1))

  single_dir = tmp_path / "single"
  single = loop.train(tiny_config(single_dir, train_steps=2 * STEPS, checkpoint_period=STEPS))
  single_metrics = _train_metrics(single_dir)
  assert len(single_metrics) == len(multi_metrics) == 2 * STEPS
  for m, s in zip(multi_metrics, single_metrics):  # same global batch at every step
    np.testing.assert_allclose(m["train/cross_entropy"], s["train/cross_entropy"], rtol=1e-5,
                               err_msg=f"step {m['step']}: multi-host loss differs from single-process")
  single_prompt = np.asarray(wrapper.get_prompt(single.trainable), np.float32)
  np.testing.assert_allclose(exported, single_prompt, rtol=1e-5, atol=1e-6)
