"""Training under faults: non-finite steps, damaged or half-written checkpoints, a full
disk, and a refused resume that must leave MODEL_DIR untouched.

References are independent runs: a fallback or a rerun after a failed save must end on
the prompt an undisturbed run of the same config produced, bit for bit.
"""
import errno
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from orbax.checkpoint._src.handlers import json_checkpoint_handler
from test_loop import FIXTURE, tiny_config

from prompt_tuning_jax import train
from prompt_tuning_jax.checkpoints import train_state
from prompt_tuning_jax.trainer import loop
from prompt_tuning_jax.trainer import step as step_lib


def _strict_json_lines(path):
  def refuse(name):
    raise AssertionError(f"{path} holds bare {name}: not JSON")
  return [json.loads(line, parse_constant=refuse) for line in open(path)]


def _poison_call(monkeypatch, bad_call):
  """The `bad_call`-th step sees NaN frozen weights (a loss blow-up mid-run)."""
  real = step_lib.jit_train_step

  def make(*args, **kwargs):
    fn, calls = real(*args, **kwargs), [0]

    def call(state, frozen, batch):
      calls[0] += 1
      if calls[0] == bad_call:
        frozen = jax.tree.map(lambda x: x * jnp.nan, frozen)
      return fn(state, frozen, batch)
    return call
  monkeypatch.setattr(step_lib, "jit_train_step", make)


def _saved_prompt(model_dir, step):
  manager = ocp.CheckpointManager(os.path.join(model_dir, "train_state"))
  state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  return np.asarray(state["params"]["encoder"]["prompt"]["prompt"]["prompt"])


def test_nan_initial_prompt_stops_at_step_1_naming_the_metric(tmp_path):
  nan_init = lambda rng, shape, embedding: jnp.full(shape, jnp.nan)  # noqa: E731
  with pytest.raises(loop.NonFiniteError, match=r"step 1: loss=nan and grad_norm=nan"):
    loop.train(tiny_config(tmp_path / "run", prompt_init=nan_init, checkpoint_period=1))
  assert not (tmp_path / "run/prompt.npy").exists()
  assert not (tmp_path / "run/train_state").exists()  # the bad state is never saved
  (record,) = _strict_json_lines(tmp_path / "run/metrics.jsonl")
  assert record["step"] == 1 and record["train/loss"] is None and record["train/grad_norm"] is None
  assert "train/loss" in record["train/nonfinite"] and "train/grad_norm" in record["train/nonfinite"]


@pytest.mark.slow  # several tiny training runs
def test_nan_mid_run_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  _poison_call(monkeypatch, bad_call=3)
  with pytest.raises(loop.NonFiniteError, match=r"step 3: loss=nan") as err:
    loop.train(tiny_config(tmp_path / "run", train_steps=5, checkpoint_period=1))
  assert "train_state" in str(err.value)
  assert sorted(os.listdir(tmp_path / "run/train_state")) == ["1", "2"]
  assert np.isfinite(_saved_prompt(tmp_path / "run", 2)).all()
  assert not (tmp_path / "run/prompt.npy").exists()
  rows = _strict_json_lines(tmp_path / "run/metrics.jsonl")
  assert [r["step"] for r in rows] == [1, 2, 3] and rows[-1]["train/loss"] is None


@pytest.mark.slow  # several tiny training runs
def test_skip_mode_drops_the_bad_update_and_finishes(tmp_path, monkeypatch):
  _poison_call(monkeypatch, bad_call=3)
  result = loop.train(tiny_config(tmp_path / "run", train_steps=4, checkpoint_period=1, on_nonfinite="skip"))
  assert result.step == 4
  rows = {r["step"]: r for r in _strict_json_lines(tmp_path / "run/metrics.jsonl")}
  assert rows[3]["train/loss"] is None and "train/loss" in rows[3]["train/nonfinite"]
  assert "train/nonfinite" not in rows[4] and rows[4]["train/loss"] is not None
  np.testing.assert_array_equal(_saved_prompt(tmp_path / "run", 3), _saved_prompt(tmp_path / "run", 2))
  assert np.abs(_saved_prompt(tmp_path / "run", 4) - _saved_prompt(tmp_path / "run", 3)).max() > 0
  assert np.isfinite(np.load(tmp_path / "run/prompt.npy")).all()


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  """An undisturbed 4-step run (checkpoints at 2 and 4): the reference prompt."""
  model_dir = tmp_path_factory.mktemp("straight") / "run"
  loop.train(tiny_config(model_dir, train_steps=4, checkpoint_period=2))
  return model_dir


@pytest.mark.slow  # several tiny training runs
def test_damaged_newest_step_falls_back_with_a_warning(tmp_path, straight, caplog):
  model_dir = tmp_path / "run"
  shutil.copytree(straight, model_dir)
  os.remove(model_dir / "prompt.npy")
  shutil.rmtree(model_dir / "train_state/4/state")
  result = loop.train(tiny_config(model_dir, train_steps=4, checkpoint_period=2))
  damaged = str(model_dir / "train_state" / "4")
  assert any(damaged in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records)
  assert result.step == 4
  np.testing.assert_array_equal(np.load(model_dir / "prompt.npy"), np.load(straight / "prompt.npy"))
  assert any(n.startswith("4.damaged-") for n in os.listdir(model_dir / "train_state"))


@pytest.mark.slow  # several tiny training runs
def test_disk_full_save_leaves_no_temp_dir_and_the_rerun_completes(tmp_path, straight, monkeypatch):
  """A filesystem stand-in: writing step 4's metadata raises ENOSPC, as a full disk does."""
  real = json_checkpoint_handler.JsonCheckpointHandler._save_fn

  async def full_disk(self, x, directory):
    if "4.orbax-checkpoint-tmp" in str(directory):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))
    return await real(self, x, directory)

  monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", full_disk)
  model_dir = tmp_path / "run"
  with pytest.raises(OSError, match="No space left on device") as err:
    loop.train(tiny_config(model_dir, train_steps=4, checkpoint_period=2))
  assert err.value.errno == errno.ENOSPC and str(model_dir / "train_state") in str(err.value)
  assert sorted(os.listdir(model_dir / "train_state")) == ["2"]
  assert not [p for p, _, _ in os.walk(model_dir) if "tmp" in os.path.basename(p)]
  assert not (model_dir / "prompt.npy").exists()
  monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", real)
  result = loop.train(tiny_config(model_dir, train_steps=4, checkpoint_period=2))
  assert result.step == 4 and sorted(os.listdir(model_dir / "train_state")) == ["2", "4"]
  np.testing.assert_array_equal(np.load(model_dir / "prompt.npy"), np.load(straight / "prompt.npy"))


def test_leftover_temp_dirs_are_removed_only_once_the_checks_passed(tmp_path):
  leftover = tmp_path / "run/train_state/6.orbax-checkpoint-tmp"
  (leftover / "state").mkdir(parents=True)
  checkpointer = train_state.TrainCheckpointer(str(tmp_path / "run"), keep=2, fingerprint={})
  assert checkpointer.restore({}) is None and leftover.exists()  # opening and checking change nothing
  checkpointer.tidy()
  assert not leftover.exists()


def _snapshot(root):
  files = (os.path.join(d, f) for d, _, names in os.walk(root) for f in names)
  return {os.path.relpath(p, root): open(p, "rb").read() for p in files}


@pytest.mark.slow  # several tiny training runs
def test_refused_resume_writes_nothing_under_model_dir(tmp_path):
  model_dir = tmp_path / "run"

  def run(prompt_length):
    train.main(["--gin_file=tests/tiny_inline.gin", "--gin_file=runs/prompt_tuning.gin",
                f"--gin.MODEL_DIR={model_dir}", "--gin.MIXTURE_OR_TASK_NAME=superglue_rte_sample_taskless",
                "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 4}", f"--gin.INITIAL_CHECKPOINT_PATH={FIXTURE}",
                "--gin.TRAIN_STEPS=1", "--gin.BATCH_SIZE=8", f"--gin.PROMPT_LENGTH={prompt_length}",
                "--gin.TrainConfig.progress_bar=False", "--gin.TrainConfig.checkpoint_period=1"])

  run(3)
  before = _snapshot(model_dir)
  with pytest.raises(train_state.CheckpointFingerprintError, match=r"trainable"):
    run(4)
  assert _snapshot(model_dir) == before
  assert "PROMPT_LENGTH = 3" in (model_dir / "config.gin").read_text()
