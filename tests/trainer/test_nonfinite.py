"""The non-finite guard looks at what would be committed (issue 19): a step whose loss and
gradient are finite but whose update overflows (lr 1e39: the new prompt is Inf) or whose
norms overflow (lr 1e38: prompt values of 1e38, their norm Inf) is never applied; 'stop'
ends the run with nothing non-finite saved, 'skip' drops and counts it and refuses to
export a run that trained nothing; a saved state holding NaN/Inf is refused as damage.
"""
import dataclasses
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from test_loop import _one_batch, tiny_config

from prompt_tuning_jax.checkpoints import train_state
from prompt_tuning_jax.prompt import wrapper
from prompt_tuning_jax.trainer import loop


def _lr(model_dir, lr, **overrides):
  cfg = tiny_config(model_dir, **overrides)
  return dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, learning_rate=lr))


def _all_saved_arrays(model_dir):
  """Every array saved under a run folder: .npy files, numpy checkpoints, train states."""
  out = {}
  for root, _, names in os.walk(model_dir):
    for name in names:
      path = os.path.join(root, name)
      if name.endswith(".npy") or "numpy_checkpoints" in path:
        out[path] = np.load(path)
  state_dir = os.path.join(model_dir, "train_state")
  if os.path.isdir(state_dir):
    manager = ocp.CheckpointManager(state_dir)
    for step in manager.all_steps():
      state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
      for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        out[f"train_state/{step}{jax.tree_util.keystr(path)}"] = np.asarray(leaf)
  return out


@pytest.mark.parametrize("lr, culprit", [(1e39, r"update_norm=inf"), (1e38, r"param_norm=inf")])
def test_the_step_never_applies_an_update_that_would_not_be_finite(tmp_path, lr, culprit):
  """Step 1 at these rates: loss and gradient finite (the old guard let them through)."""
  run = loop._Run(_lr(tmp_path / "run", lr))
  before = np.array(jax.device_get(wrapper.get_prompt(run.state.params)))
  run.state, metrics = run.train_step(run.state, run.frozen, _one_batch(run.cfg))
  host = {k: float(v) for k, v in jax.device_get(metrics).items()}
  assert np.isfinite(host["loss"]) and np.isfinite(host["grad_norm"])
  assert host["all_finite"] == 0.0 and not np.isfinite(host["param_norm"])
  assert culprit.split("=")[0] in loop.nonfinite_culprits(host)
  np.testing.assert_array_equal(np.array(jax.device_get(wrapper.get_prompt(run.state.params))), before)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(run.state.opt_state)))


@pytest.mark.parametrize("lr, culprit", [(1e39, r"update_norm=inf"), (1e38, r"param_norm=inf")])
def test_stop_names_the_step_and_metric_and_saves_nothing_non_finite(tmp_path, lr, culprit):
  model_dir = tmp_path / "run"
  expected = rf"step 1: .*{culprit}.*not finite.*not applied.*no checkpoint was saved"
  with pytest.raises(loop.NonFiniteError, match=expected) as err:
    loop.train(_lr(model_dir, lr, train_steps=3, checkpoint_period=1))
  assert str(model_dir / "train_state") in str(err.value)
  assert not (model_dir / "train_state").exists() and not (model_dir / "prompt.npy").exists()
  assert not _all_saved_arrays(model_dir)
  assert not (model_dir / "run.lock").exists()  # released on the exception


def test_skip_drops_every_update_and_refuses_to_export_an_untrained_run(tmp_path):
  model_dir = tmp_path / "run"
  with pytest.raises(loop.NonFiniteError, match=r"every update of this run was non-finite and skipped "
                                                 r"\(steps 1-3\); nothing trained, so nothing was exported"):
    loop.train(_lr(model_dir, 1e39, train_steps=3, checkpoint_period=1, on_nonfinite="skip"))
  assert not (model_dir / "prompt.npy").exists()
  saved = _all_saved_arrays(model_dir)
  assert saved and all(np.isfinite(v).all() for v in saved.values())  # the untouched initial state


@pytest.mark.slow  # two tiny training runs
def test_skip_counts_the_dropped_step_across_a_resume(tmp_path, monkeypatch):
  from test_reliability import _poison_call
  _poison_call(monkeypatch, bad_call=2)
  model_dir = tmp_path / "run"
  loop.train(tiny_config(model_dir, train_steps=3, checkpoint_period=1, on_nonfinite="skip"))
  manager = ocp.CheckpointManager(str(model_dir / "train_state"))
  meta = manager.restore(3, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  assert meta["skipped_steps"] == [2]
  assert all(np.isfinite(v).all() for v in _all_saved_arrays(model_dir).values())


def _states(directory, values, monkeypatch):
  """Train states saved as a run from before the guard would have (save's check lifted)."""
  with monkeypatch.context() as m:
    m.setattr(train_state, "nonfinite_keys", lambda leaves: [])
    ckpt = train_state.TrainCheckpointer(str(directory), keep=5, fingerprint={"f": "1"})
    for step, value in values.items():
      ckpt.save(step, {"p": jnp.full((2, 3), value)}, {"best": None})


def test_a_non_finite_state_is_never_saved(tmp_path):
  ckpt = train_state.TrainCheckpointer(str(tmp_path / "run"), keep=2, fingerprint={"f": "1"})
  with pytest.raises(train_state.NonFiniteStateError, match=r"refusing to save .* step 3 .*\['p'\]"):
    ckpt.save(3, {"p": jnp.array([1.0, jnp.inf])}, {})
  assert not (tmp_path / "run").exists()  # refused before orbax made anything


def test_a_loaded_non_finite_state_is_refused_naming_step_and_key_and_falls_back(tmp_path, monkeypatch, caplog):
  _states(tmp_path / "run", {2: 2.0, 4: np.nan}, monkeypatch)
  ckpt = train_state.TrainCheckpointer(str(tmp_path / "run"), keep=5, fingerprint={"f": "1"})
  with caplog.at_level(logging.WARNING):
    state, _ = ckpt.restore({"p": jnp.zeros((2, 3))})
  np.testing.assert_array_equal(np.asarray(state["p"]), np.full((2, 3), 2.0))
  warning = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
  assert warning and str(tmp_path / "run/train_state/4") in warning[0]
  assert "step 4 holds NaN or Inf in [\"['p']\"]" in warning[0]
  assert sorted(os.listdir(tmp_path / "run/train_state")) == ["2", "4"]  # nothing moved before tidy()
  ckpt.tidy()
  assert any(n.startswith("4.damaged-") for n in os.listdir(tmp_path / "run/train_state"))


def test_only_non_finite_states_are_refused_and_nothing_changes(tmp_path, monkeypatch):
  _states(tmp_path / "run", {4: np.inf}, monkeypatch)
  ckpt = train_state.TrainCheckpointer(str(tmp_path / "run"), keep=5, fingerprint={"f": "1"})
  with pytest.raises(train_state.DamagedCheckpointError, match=r"every training checkpoint .* is damaged"):
    ckpt.restore({"p": jnp.zeros((2, 3))})
  assert os.listdir(tmp_path / "run/train_state") == ["4"]



@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_train_command_reports_a_non_finite_stop_in_one_line_with_exit_1(tmp_path):
  """Run as a program (lr 1e39): one `error:` line naming the step, exit 1, no traceback, no
  train state or final prompt, and nothing saved under MODEL_DIR holds NaN/Inf."""
  import pathlib
  import subprocess
  import sys
  repo = pathlib.Path(__file__).resolve().parents[2]
  model_dir = tmp_path / "run"
  argv = [sys.executable, "-m", "prompt_tuning_jax.train", "--gin_file=tests/tiny_inline.gin",
          "--gin_file=runs/prompt_tuning.gin", f"--gin.MODEL_DIR={model_dir}",
          "--gin.MIXTURE_OR_TASK_NAME=superglue_rte_sample_taskless",
          "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 4}",
          "--gin.INITIAL_CHECKPOINT_PATH=tests/testdata/t5x_checkpoints/test_t5_tiny.checkpoint_0",
          "--gin.TRAIN_STEPS=3", "--gin.BATCH_SIZE=8", "--gin.PROMPT_LENGTH=3", "--gin.EVAL_PERIOD=1000",
          "--gin.CHECKPOINT_PERIOD=1", "--gin.TrainConfig.progress_bar=False", "--gin.OptimConfig.learning_rate=1e39"]
  r = subprocess.run(argv, cwd=repo, capture_output=True, text=True, timeout=570,
                     env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert r.returncode == 1, r.stderr[-3000:]
  errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "step 1" in errors[0] and "not finite" in errors[0], r.stderr[-3000:]
  assert "Traceback" not in r.stderr and "done" not in r.stdout
  assert not (model_dir / "train_state").exists() and not (model_dir / "prompt.npy").exists()
  assert all(np.isfinite(np.load(f)).all() for f in model_dir.rglob("*.npy"))  # e.g. best/ from step 0
