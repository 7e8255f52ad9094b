"""Prompt tuning end to end on the real tiny T5X fixture and a bundled SuperGLUE sample.

Invariants from the original release's tests: an update changes only the prompt, the
frozen weights are bit-identical to the checkpoint, the loss goes down; plus resume after
kill -9 reaching the same prompt bit for bit, and refusal of foreign checkpoints.
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

from prompt_tuning_jax.text import data
from prompt_tuning_jax.checkpoints import t5x, train_state, validation
from prompt_tuning_jax.model.config import SIZES
from prompt_tuning_jax.model import t5
from prompt_tuning_jax.prompt import PROMPT_PATTERN, initializers, wrapper
from prompt_tuning_jax.trainer import loop, optim

FIXTURE = pathlib.Path(__file__).parents[1] / "testdata/t5x_checkpoints/test_t5_tiny.checkpoint_0"


def tiny_config(model_dir, **overrides) -> loop.TrainConfig:
  base = loop.TrainConfig(
      model_dir=str(model_dir), initial_checkpoint_path=str(FIXTURE), t5=SIZES["tiny_inline"],
      data=data.DataConfig("superglue_rte_sample_taskless", "prompt_tuning_jax.tasks", {"inputs": 32, "targets": 4}, batch_size=8),
      prompt=wrapper.PromptConfig(length=5), prompt_init=initializers.sampled_vocab(), train_steps=10,
      eval_period=1000, checkpoint_period=1000, log_period=1, progress_bar=False)
  return dataclasses.replace(base, **overrides)


def _flat(tree):
  return traverse_util.flatten_dict(jax.device_get(tree), sep="/")


def test_ten_steps_change_only_the_prompt_and_lower_the_loss(tmp_path):
  result = loop.train(tiny_config(tmp_path / "run"))
  assert result.step == 10
  assert list(_flat(result.trainable)) == ["encoder/prompt/prompt/prompt"]
  losses = [json.loads(l) for l in open(tmp_path / "run/metrics.jsonl")]
  ce = [r["train/cross_entropy"] for r in losses if "train/cross_entropy" in r]
  assert len(ce) == 10 and ce[-1] < ce[0]
  exported = np.load(tmp_path / "run/prompt.npy")
  assert exported.shape == (5, 8)
  np.testing.assert_array_equal(exported, np.asarray(result.trainable["encoder"]["prompt"]["prompt"]["prompt"]))
  assert (tmp_path / "run/numpy_checkpoints/checkpoint_10/encoder.prompt.prompt.prompt").exists()


def test_the_progress_bar_shows_the_logged_loss_and_the_latest_eval(tmp_path, capsys):
  """The bar's `loss` is metrics.jsonl's train/loss (summed over target tokens, as T5X; the
  bar once showed the per-token cross-entropy under that name); after each evaluation the
  bar shows its metrics."""
  evaluator = lambda cfg, model: (lambda params, step: {"accuracy": 0.5 + step / 100})  # noqa: E731
  loop.train(tiny_config(tmp_path / "run", train_steps=4, eval_period=2, progress_bar=True, evaluator=evaluator))
  bar = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
  rows = [json.loads(line) for line in open(tmp_path / "run/metrics.jsonl")]
  logged = [r for r in rows if "train/loss" in r][-1]
  assert logged["step"] == 4 and "4/4" in bar
  shown = dict(re.findall(r"(\w+)=([^,\]\s]+)", bar))
  assert float(shown["loss"]) == pytest.approx(logged["train/loss"], rel=1e-5)
  assert float(shown["ce"]) == pytest.approx(logged["train/cross_entropy"], rel=1e-3)
  assert abs(logged["train/loss"] - logged["train/cross_entropy"]) > 1  # two different numbers
  assert shown["eval_accuracy"] == "0.54"


def test_frozen_weights_stay_bit_identical_to_the_checkpoint(tmp_path):
  cfg = tiny_config(tmp_path / "run", train_steps=1)
  run = loop._Run(cfg)
  before = np.array(wrapper.get_prompt(jax.device_get(run.state.params)))
  loaded = t5x.read_t5x_checkpoint(str(FIXTURE)).params
  run.state, _ = run.train_step(run.state, run.frozen, _one_batch(cfg))
  frozen = _flat(run.frozen)
  want = traverse_util.flatten_dict(loaded, sep="/")
  assert set(frozen) == set(want)
  for key, value in want.items():
    np.testing.assert_array_equal(frozen[key], value, err_msg=key)
  after = np.array(wrapper.get_prompt(jax.device_get(run.state.params)))
  assert np.abs(after - before).max() > 0


def _one_batch(cfg):
  from prompt_tuning_jax.parallel import sharding
  run_mesh = sharding.make_mesh(cfg.partition)
  return sharding.make_global_batch(next(data.train_batches(cfg.data)), run_mesh, cfg.data.batch_size)


@pytest.mark.slow
def test_gradients_flow_only_to_the_trainable_subtree():
  """The compiled prompt step has no weight-gradient matmuls: it does about 2/3 of the
  model-tuning step's FLOPs (forward + activation grads, no weight grads)."""
  from prompt_tuning_jax.trainer import step as step_lib
  cfg = SIZES["tiny_inline"].replace(vocab_size=64, emb_dim=64, num_heads=4, head_dim=16, mlp_dim=256)
  model = wrapper.make_model(cfg, wrapper.PromptConfig(length=4))
  params = jax.device_get(model.init(jax.random.PRNGKey(0), *(np.ones((1, 2), np.int32),) * 3)["params"])
  params = jax.tree.map(np.asarray, __import__("flax").linen.unbox(params))
  rng = np.random.RandomState(0)
  batch = data.encdec_features(rng.randint(1, 64, (8, 64)), rng.randint(1, 64, (8, 8)))

  def flops(patterns):
    oc = optim.OptimConfig(trainable_patterns=patterns)
    opt = optim.make_optimizer(oc)
    trainable, frozen = optim.split_params(params, patterns)
    state = step_lib.init_state(trainable, opt, jax.random.PRNGKey(0))
    fn = step_lib.jit_train_step(model, opt, step_lib.LossConfig())
    return fn.lower(state, frozen, batch).compile().cost_analysis()["flops"]

  prompt_flops, model_flops = flops((PROMPT_PATTERN,)), flops((".*",))
  assert prompt_flops < 0.75 * model_flops


@pytest.mark.slow
def test_resume_refuses_another_backbone_or_prompt_shape(tmp_path):
  loop.train(tiny_config(tmp_path / "run", train_steps=2, checkpoint_period=1))
  with pytest.raises(train_state.CheckpointFingerprintError, match="backbone"):
    loop.train(tiny_config(tmp_path / "run", train_steps=3, initial_checkpoint_path="random:1"))
  with pytest.raises(train_state.CheckpointFingerprintError, match="trainable"):
    loop.train(tiny_config(tmp_path / "run", train_steps=3, prompt=wrapper.PromptConfig(length=6)))


_CHILD = """
import dataclasses, sys
sys.path.insert(0, {tests!r})
from test_loop import tiny_config
from prompt_tuning_jax.trainer import loop
cfg = tiny_config({model_dir!r}, train_steps={steps}, checkpoint_period=2, log_period=1)
loop.train(cfg)
"""


def _run_child(model_dir, steps, *, kill_after_checkpoint=None):
  code = _CHILD.format(tests=str(pathlib.Path(__file__).parent), model_dir=str(model_dir), steps=steps)
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  if kill_after_checkpoint is None:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-3000:]
    return
  target = pathlib.Path(model_dir) / "train_state" / str(kill_after_checkpoint)
  deadline = time.time() + 300
  while not target.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert target.exists(), proc.stderr.read().decode()[-3000:]
  proc.send_signal(signal.SIGKILL)
  proc.wait()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_kill_9_then_resume_reaches_the_same_prompt_bit_for_bit(tmp_path):
  steps = 12
  _run_child(tmp_path / "straight", steps)
  _run_child(tmp_path / "killed", steps, kill_after_checkpoint=4)
  assert not (tmp_path / "killed/prompt.npy").exists()
  _run_child(tmp_path / "killed", steps)
  straight = np.load(tmp_path / "straight/prompt.npy")
  resumed = np.load(tmp_path / "killed/prompt.npy")
  np.testing.assert_array_equal(straight, resumed)


@pytest.mark.parametrize("mode", ["prompt", "model"])
def test_run_traces_the_model_once_and_splits_by_one_label_tree(tmp_path, monkeypatch, mode):
  """One trace (`jax.eval_shape`) of the model's init gives shapes, specs and the backbone check;
  one label tree splits values and shardings alike (no regex after it)."""
  calls = {"model_init": 0, "label_tree": 0}
  real_make_model, real_label_tree = wrapper.make_model, optim.label_tree

  def make_model(*args, **kwargs):
    model = real_make_model(*args, **kwargs)
    real_init = model.init

    def init(*a, **k):
      calls["model_init"] += 1
      return real_init(*a, **k)
    object.__setattr__(model, "init", init)
    return model

  def label_tree(*args, **kwargs):
    calls["label_tree"] += 1
    return real_label_tree(*args, **kwargs)
  monkeypatch.setattr(wrapper, "make_model", make_model)
  monkeypatch.setattr(optim, "label_tree", label_tree)
  for second_trace in (validation, "param_shapes"), (t5, "param_shapes"), (optim, "split_params"):
    monkeypatch.setattr(*second_trace, lambda *a, **k: pytest.fail("a second trace or regex split"))
  overrides = {} if mode == "prompt" else {"prompt": None, "optim": optim.MODEL_TUNING}
  run = loop._Run(tiny_config(tmp_path / "run", **overrides))
  assert calls == {"model_init": 1, "label_tree": 1}
  trainable, frozen = _flat(run.state.params), _flat(run.frozen)
  if mode == "prompt":
    assert list(trainable) == ["encoder/prompt/prompt/prompt"] and "encoder/prompt/prompt/prompt" not in frozen
  else:
    assert not frozen and "token_embedder/embedding" in trainable
  shardings = traverse_util.flatten_dict(run.state_shardings.params, sep="/")
  assert shardings.keys() == trainable.keys()
  assert traverse_util.flatten_dict(run.frozen_shardings, sep="/").keys() == frozen.keys()
