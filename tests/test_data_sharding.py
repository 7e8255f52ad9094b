"""Per-host input: each of 4 hosts keeps its own examples before feature conversion and
must get exactly its rows of the batches one host builds, also after a resume."""
import dataclasses
import itertools

import numpy as np

from prompt_tuning_jax.text import data

CFG = data.DataConfig("superglue_rte_sample_taskless", "prompt_tuning_jax.tasks", {"inputs": 32, "targets": 4},
                      batch_size=8)


def _take(stream, n):
  return list(itertools.islice(stream, n))


def test_four_hosts_rows_equal_one_host_rows():
  whole = _take(data.train_batches(CFG, skip_batches=2), 2)
  parts = [_take(data.train_batches(CFG, skip_batches=2, shard_id=s, num_shards=4), 2) for s in range(4)]
  for b, batch in enumerate(whole):
    for key, value in batch.items():
      np.testing.assert_array_equal(np.concatenate([p[b][key] for p in parts]), value, err_msg=key)
  assert not np.array_equal(whole[0]["encoder_input_tokens"], whole[1]["encoder_input_tokens"])


def test_packed_hosts_slice_whole_batches():
  cfg = dataclasses.replace(CFG, pack=True)
  whole = next(data.train_batches(cfg, skip_batches=1))
  second = next(data.train_batches(cfg, skip_batches=1, shard_id=1, num_shards=2))
  for key, value in whole.items():
    np.testing.assert_array_equal(second[key], value[4:], err_msg=key)
