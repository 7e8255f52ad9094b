"""One process of a multi-host training job on this machine (launched by
test_multihost_training.py, two at a time, with JAX_PLATFORMS=cpu).

usage: multihost_worker.py PROCESS_ID NUM_PROCESSES PORT MODEL_DIR TRAIN_STEPS
                          CHECKPOINT_PERIOD NUM_PARTITIONS

Joins `jax.distributed` over 127.0.0.1:PORT, trains `test_loop.tiny_config` to
TRAIN_STEPS (resuming from MODEL_DIR) on a mesh with NUM_PARTITIONS model shards, and
prints one `RESULT {json}` line with what this process saw, so the test can compare the
processes with each other and with a single-process run.
"""
from __future__ import annotations

import json
import pathlib
import sys


def main(argv: list[str]) -> None:
  if len(argv) != 8:
    raise SystemExit(__doc__)
  pid, nproc, port, model_dir, steps, period, partitions = argv[1:]
  from prompt_tuning_jax.parallel import distributed
  if not distributed.initialize(f"127.0.0.1:{port}", int(nproc), int(pid)):
    raise SystemExit("distributed.initialize returned False")
  import jax
  import numpy as np
  sys.path.insert(0, str(pathlib.Path(__file__).parent))
  from test_loop import tiny_config

  from prompt_tuning_jax.parallel import sharding
  from prompt_tuning_jax.prompt import wrapper
  from prompt_tuning_jax.trainer import loop
  cfg = tiny_config(model_dir, train_steps=int(steps), checkpoint_period=int(period),
                    partition=sharding.PartitionConfig(num_partitions=int(partitions)))
  result = loop.train(cfg)
  prompt = np.asarray(wrapper.get_prompt(result.trainable), np.float32)
  mesh = sharding.make_mesh(cfg.partition)
  rows = sharding.data_layout(cfg.data.batch_size, mesh).rows
  print("RESULT " + json.dumps(dict(
      pid=jax.process_index(), process_count=jax.process_count(), device_count=jax.device_count(),
      mesh=dict(mesh.shape), rows=[rows.start, rows.stop], step=result.step,
      prompt=prompt.tolist())), flush=True)


if __name__ == "__main__":
  main(sys.argv)
