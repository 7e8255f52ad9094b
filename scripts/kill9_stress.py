"""Kill -9 a real tiny training run at random moments, resume it, compare the prompt.

  python scripts/kill9_stress.py [--trials 10] [--steps 8] [--seed 0] [--parallel 2] [--workdir DIR]

One uninterrupted run gives the reference `prompt.npy`. Each trial starts the same run
in a subprocess and SIGKILLs it: odd trials while a random checkpoint is being written
(its `<step>.orbax-checkpoint-tmp` folder exists under train_state/), even trials after a random
number of logged steps plus a random delay. The trial is then rerun to completion (the
resume path: leftover temp folders removed, newest intact step restored) and its final
prompt compared bit for bit with the reference; the kill leaves the run lock
(MODEL_DIR/run.lock) behind, and the rerun must take it over as stale and release it at the
end. Not part of CI: it takes minutes. The
runs share a JAX compilation cache (same executables, so the same bits) and `--parallel`
trials run at once.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import pathlib
import random
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHILD = """
import sys
sys.path.insert(0, {tests!r})
from test_loop import tiny_config
from prompt_tuning_jax.trainer import loop
loop.train(tiny_config({model_dir!r}, train_steps={steps}, checkpoint_period=2, log_period=1))
"""


def _start(model_dir: pathlib.Path, steps: int) -> subprocess.Popen:
  code = CHILD.format(tests=str(ROOT / "tests" / "trainer"), model_dir=str(model_dir), steps=steps)
  cache = model_dir.parent / "jax_cache"
  env = dict(os.environ, PYTHONUNBUFFERED="1", JAX_COMPILATION_CACHE_DIR=str(cache),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)


def _finish(model_dir: pathlib.Path, steps: int) -> str:
  """Run to the end; its stderr."""
  proc = _start(model_dir, steps)
  _, err = proc.communicate(timeout=600)
  if proc.returncode != 0:
    raise RuntimeError(f"run in {model_dir} failed:\n{err.decode()[-3000:]}")
  return err.decode()


def _tmp_dirs(model_dir: pathlib.Path) -> list[str]:
  state = model_dir / "train_state"
  try:
    return [e.name for e in os.scandir(state) if ".orbax-checkpoint-tmp" in e.name]
  except FileNotFoundError:
    return []


def _logged_steps(model_dir: pathlib.Path) -> int:
  try:
    return sum(1 for _ in open(model_dir / "metrics.jsonl"))
  except FileNotFoundError:
    return 0


def _kill_when(proc: subprocess.Popen, ready, timeout_s: float = 600) -> bool:
  """SIGKILL `proc` as soon as `ready()`; False if the run ended first."""
  deadline = time.time() + timeout_s
  while proc.poll() is None and time.time() < deadline:
    if ready():
      proc.send_signal(signal.SIGKILL)
      proc.wait()
      return True
    time.sleep(0.0005)
  proc.wait()
  return False


def trial(model_dir: pathlib.Path, steps: int, during_checkpoint: bool, rng: random.Random) -> dict:
  proc = _start(model_dir, steps)
  if during_checkpoint:
    at = rng.choice(range(2, steps, 2))  # a checkpoint before the last step: resume restores an older one
    killed = _kill_when(proc, lambda: any(n.startswith(f"{at}.") for n in _tmp_dirs(model_dir)))
    moment = f"checkpoint {at} write"
  else:
    after, delay = rng.randint(1, steps - 1), rng.uniform(0, 0.05)
    killed = _kill_when(proc, lambda: _logged_steps(model_dir) >= after and (time.sleep(delay) or True))
    moment = f"after step {after} + {delay * 1000:.0f} ms"
  left, lock_left = _tmp_dirs(model_dir), (model_dir / "run.lock").exists()
  err = _finish(model_dir, steps)
  return {"moment": moment, "killed": killed, "temp_left_by_kill": left,
          "temp_after_resume": _tmp_dirs(model_dir), "lock_left_by_kill": lock_left,
          "stale_lock_taken_over": "taking over the stale run lock" in err,
          "lock_after_resume": (model_dir / "run.lock").exists()}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--trials", type=int, default=10)
  parser.add_argument("--steps", type=int, default=8)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--parallel", type=int, default=2)
  parser.add_argument("--workdir", default=None)
  args = parser.parse_args()
  rng = random.Random(args.seed)
  work = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="kill9_stress_"))
  t0 = time.time()
  _finish(work / "reference", args.steps)
  reference = np.load(work / "reference" / "prompt.npy")
  rngs = [random.Random(rng.random()) for _ in range(args.trials)]

  def run(i: int) -> tuple[dict, bool]:
    result = trial(work / f"trial_{i}", args.steps, during_checkpoint=i % 2 == 1, rng=rngs[i])
    return result, np.array_equal(np.load(work / f"trial_{i}" / "prompt.npy"), reference)

  identical = 0
  with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
    for i, (result, same) in enumerate(pool.map(run, range(args.trials))):
      identical += same
      print(f"trial {i}: kill at {result['moment']}: killed={result['killed']} "
            f"temp dirs left by the kill={result['temp_left_by_kill']} after resume={result['temp_after_resume']} "
            f"lock left by the kill={result['lock_left_by_kill']} taken over={result['stale_lock_taken_over']} "
            f"lock after resume={result['lock_after_resume']} bit-identical={same}", flush=True)
  print(f"{identical} of {args.trials} resumed runs reached a prompt bit-identical to the uninterrupted run "
        f"({time.time() - t0:.0f} s, work in {work})")
  return 0 if identical == args.trials else 1


if __name__ == "__main__":
  sys.exit(main())
