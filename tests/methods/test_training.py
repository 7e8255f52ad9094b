"""Every delta method trains on the real tiny T5X fixture through the one trainer.

The invariants of tests/trainer/test_loop.py, per method: 10 steps change only the
method's parameters (and all of its kinds of leaf), the frozen leaves stay bit-identical
to the checkpoint, the loss goes down; and LoRA resumes after kill -9 bit for bit.
"""
import dataclasses
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import traverse_util

from prompt_tuning_jax import methods

from prompt_tuning_jax.text import data
from prompt_tuning_jax.checkpoints import t5x
from prompt_tuning_jax.model.config import SIZES
from prompt_tuning_jax.methods import files as delta_files
from prompt_tuning_jax.trainer import loop, optim

FIXTURE = pathlib.Path(__file__).parents[1] / "testdata/t5x_checkpoints/test_t5_tiny.checkpoint_0"
METHODS = {
    "lora": methods.LoRA(rank=2),
    "adapters": methods.Adapters(width=4),
    "bitfit": methods.BitFit(),
    "prefix": methods.PrefixTuning(length=3, hidden=8),
    "prefix_peft": methods.PrefixTuning(length=3, hidden=8, sites=("decoder",), positions="preceding"),
    "said": methods.IntrinsicSAID(dim=16),
    "last_layers": methods.LastLayers(k=1),
    "layer_norm": methods.LayerNormScales(),
}
LEARNING_RATES = {"said": 0.1, "layer_norm": 0.1}  # one vector or a few scales: larger steps


def tiny_config(model_dir, method, **overrides) -> loop.TrainConfig:
  base = loop.TrainConfig(
      model_dir=str(model_dir), initial_checkpoint_path=str(FIXTURE), t5=SIZES["tiny_inline"],
      data=data.DataConfig("superglue_rte_sample_taskless", "prompt_tuning_jax.tasks", {"inputs": 32, "targets": 4},
                           batch_size=8),
      prompt=None, method=method, optim=optim.OptimConfig(learning_rate=LEARNING_RATES.get(method.name, 0.03)),
      train_steps=10, eval_period=1000, checkpoint_period=1000, log_period=1, progress_bar=False)
  return dataclasses.replace(base, **overrides)


def _flat(tree):
  return traverse_util.flatten_dict(jax.device_get(tree), sep="/")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(METHODS))
def test_ten_steps_change_only_the_method_and_lower_the_loss(tmp_path, name, monkeypatch):
  method = METHODS[name]
  cfg = tiny_config(tmp_path / "run", method)
  runs, before, make_run = [], {}, loop._Run

  def recording_run(c):  # the run train() builds, with a host copy of its initial params
    runs.append(make_run(c))
    before.update(_flat(runs[-1].state.params))
    return runs[-1]

  monkeypatch.setattr(loop, "_Run", recording_run)
  result = loop.train(cfg)
  run = runs[0]
  patterns = cfg.trainable_patterns
  assert before and all(any(re.fullmatch(p, k) for p in patterns) for k in before)
  after = _flat(result.trainable)
  assert set(after) == set(before)
  changed = {k for k in after if np.abs(np.asarray(after[k]) - np.asarray(before[k])).max() > 0}
  assert changed == set(after), sorted(set(after) - changed)[:5]
  frozen = _flat(run.frozen)
  checkpoint = traverse_util.flatten_dict(t5x.read_t5x_checkpoint(str(FIXTURE)).params, sep="/")
  for key, value in frozen.items():  # every frozen leaf is a checkpoint leaf, bit for bit
    np.testing.assert_array_equal(value, checkpoint[key], err_msg=key)
  assert set(frozen) | set(after) >= set(checkpoint)
  records = [json.loads(line) for line in open(tmp_path / "run/metrics.jsonl")]
  ce = [r["train/cross_entropy"] for r in records if "train/cross_entropy" in r]
  assert len(ce) == 10 and ce[-1] < ce[0], ce
  assert (tmp_path / "run" / delta_files.DELTA_FILE).exists()


_CHILD = """
import sys
sys.path.insert(0, {tests!r})
from test_training import METHODS, tiny_config
from prompt_tuning_jax.trainer import loop
loop.train(tiny_config({model_dir!r}, METHODS["lora"], train_steps={steps}, checkpoint_period=2))
"""


def _run_child(model_dir, steps, *, kill_after_checkpoint=None):
  code = _CHILD.format(tests=str(pathlib.Path(__file__).parent), model_dir=str(model_dir), steps=steps)
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  if kill_after_checkpoint is None:
    _, err = proc.communicate(timeout=1200)
    assert proc.returncode == 0, err.decode()[-3000:]
    return
  target = pathlib.Path(model_dir) / "train_state" / str(kill_after_checkpoint)
  deadline = time.time() + 1200
  while not target.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert target.exists(), proc.stderr.read().decode()[-3000:]
  proc.send_signal(signal.SIGKILL)
  proc.wait()


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_lora_kill_9_then_resume_reaches_the_same_delta_bit_for_bit(tmp_path):
  steps = 8
  _run_child(tmp_path / "straight", steps)
  _run_child(tmp_path / "killed", steps, kill_after_checkpoint=4)
  assert not (tmp_path / "killed" / delta_files.DELTA_FILE).exists()
  _run_child(tmp_path / "killed", steps)
  _, straight = delta_files.load_delta(tmp_path / "straight")
  _, resumed = delta_files.load_delta(tmp_path / "killed")
  assert set(straight) == set(resumed) and straight
  for key in straight:
    np.testing.assert_array_equal(straight[key], resumed[key], err_msg=key)
