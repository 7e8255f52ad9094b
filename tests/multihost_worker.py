"""One process of a multi-host training job on this machine (launched by
test_multihost_training.py, twice per launch, with JAX_PLATFORMS=cpu).

usage: multihost_worker.py PROCESS_ID NUM_PROCESSES PORT MODEL_DIR TRAIN_STEPS CHECKPOINT_PERIOD

Joins `jax.distributed` over 127.0.0.1:PORT, trains `test_training.tiny_config` to
TRAIN_STEPS (resuming from MODEL_DIR), and prints one `RESULT {json}` line with what
this process saw, so the test can compare the processes with each other and with a
single-process run.
"""
from __future__ import annotations

import json
import pathlib
import sys


def main(argv: list[str]) -> None:
  pid, nproc, port, model_dir, steps, period = argv[1:]
  from prompt_tuning_jax import distributed
  if not distributed.initialize(f"127.0.0.1:{port}", int(nproc), int(pid)):
    raise SystemExit("distributed.initialize returned False")
  import jax
  import numpy as np
  sys.path.insert(0, str(pathlib.Path(__file__).parent))
  from test_training import tiny_config
  from prompt_tuning_jax import prompted, training
  cfg = tiny_config(model_dir, train_steps=int(steps), checkpoint_period=int(period))
  result = training.train(cfg)
  prompt = np.asarray(prompted.get_prompt(result.trainable), np.float32)
  print("RESULT " + json.dumps(dict(
      pid=jax.process_index(), process_count=jax.process_count(), device_count=jax.device_count(),
      step=result.step, prompt=prompt.tolist())), flush=True)


if __name__ == "__main__":
  main(sys.argv)
