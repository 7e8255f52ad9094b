"""Every check before any change (issue 19): a run refused for the kind of a run-folder
entry or for a foreign checkpoint leaves MODEL_DIR byte for byte as it was (leftover
temporary folders included), and a metrics file cut short by a kill is repaired on resume.
"""
import json
import logging
import os

import pytest
from test_loop import tiny_config

from prompt_tuning_jax.checkpoints import train_state
from prompt_tuning_jax.prompt import wrapper
from prompt_tuning_jax.trainer import loop, metric_writer


def _tree(root):
  """Every file (with its bytes) and every folder under root."""
  out = {}
  for d, dirs, names in os.walk(root):
    for name in dirs:
      out[os.path.relpath(os.path.join(d, name), root) + "/"] = None
    for name in names:
      path = os.path.join(d, name)
      out[os.path.relpath(path, root)] = open(path, "rb").read()
  return out


@pytest.mark.parametrize("entry", ["train_state", "numpy_checkpoints", "best", "metrics.jsonl"])
def test_a_wrong_kind_of_entry_is_refused_before_anything_loads_or_changes(tmp_path, entry, monkeypatch):
  model_dir = tmp_path / "run"
  model_dir.mkdir()
  if entry.endswith(".jsonl"):
    (model_dir / entry).mkdir()
  else:
    (model_dir / entry).write_text("not a folder")
  before = _tree(model_dir)
  monkeypatch.setattr(loop, "_Run", lambda cfg: pytest.fail("the backbone loaded before the folder check"))
  with pytest.raises(NotADirectoryError, match=rf"{model_dir / entry} is a (file|folder); a run keeps a"):
    loop.train(tiny_config(model_dir))
  assert _tree(model_dir) == before


@pytest.mark.slow  # two tiny training runs
def test_a_foreign_checkpoint_is_refused_before_leftover_temp_folders_are_removed(tmp_path):
  model_dir = tmp_path / "run"
  loop.train(tiny_config(model_dir, train_steps=1, checkpoint_period=1))
  leftover = model_dir / "train_state/3.orbax-checkpoint-tmp-1765000000"
  (leftover / "state").mkdir(parents=True)
  (leftover / "state/partial").write_bytes(b"half a save")
  with open(model_dir / "metrics.jsonl", "a") as f:
    f.write('{"step": 2, "train/loss": 13.5')  # and a cut line, repaired only by a run that goes ahead
  before = _tree(model_dir)
  with pytest.raises(train_state.CheckpointFingerprintError, match="trainable"):
    loop.train(tiny_config(model_dir, train_steps=2, prompt=wrapper.PromptConfig(length=6)))
  assert _tree(model_dir) == before
  result = loop.train(tiny_config(model_dir, train_steps=2, checkpoint_period=1))  # the matching run goes on
  assert result.step == 2 and not leftover.exists()
  rows = [json.loads(line) for line in open(model_dir / "metrics.jsonl")]
  assert [r["step"] for r in rows] == [1, 2]


def _lines(path):
  return [json.loads(line) for line in open(path)]


def test_a_truncated_last_metrics_line_is_dropped_with_a_warning(tmp_path, caplog):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1, "train/loss": 12.0}\n{"step": 2, "train/loss": 13.514155567')
  with caplog.at_level(logging.WARNING):
    writer = metric_writer.MetricsWriter(str(tmp_path), tensorboard=False)
  assert any(str(path) in r.getMessage() and "dropping its last line" in r.getMessage() for r in caplog.records)
  writer.write(2, {"loss": 11.0}, prefix="train")
  writer.close()
  assert _lines(path) == [{"step": 1, "train/loss": 12.0}, {"step": 2, "train/loss": 11.0}]


def test_a_complete_last_line_missing_its_newline_is_kept(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1, "train/loss": 12.0}')
  writer = metric_writer.MetricsWriter(str(tmp_path), tensorboard=False)
  writer.write(2, {"loss": 11.0}, prefix="train")
  writer.close()
  assert [r["step"] for r in _lines(path)] == [1, 2]


def test_a_truncated_metrics_line_on_gcs_is_dropped(gcs_emulator, caplog):
  from prompt_tuning_jax.checkpoints import fs
  model_dir = fs.join(gcs_emulator, "truncated_metrics")
  fs.atomic_write(fs.join(model_dir, "metrics.jsonl"), '{"step": 1, "train/loss": 12.0}\n{"step": 2, "tra')
  with caplog.at_level(logging.WARNING):
    writer = metric_writer.MetricsWriter(model_dir, tensorboard=False)
  assert any("dropping its last line" in r.getMessage() for r in caplog.records)
  writer.write(2, {"loss": 11.0}, prefix="train")
  writer.close()
  text = fs.read_text(fs.join(model_dir, "metrics.jsonl"))
  assert [json.loads(line)["step"] for line in text.splitlines()] == [1, 2]


def _history(path, steps):
  path.write_text("".join(json.dumps({"step": s, "train/loss": float(s)}) + "\n" for s in steps)
                  + json.dumps({"step": 3, "eval/accuracy": 50.0}) + "\n")


def test_a_resumed_run_drops_the_lines_after_its_checkpoint(tmp_path, caplog):
  """Steps 4-5 were logged, then the run died; it resumes from the checkpoint at 3 and logs
  4-5 again: each step keeps one line."""
  path = tmp_path / "metrics.jsonl"
  _history(path, [1, 2, 3, 4, 5])
  with caplog.at_level(logging.WARNING):
    writer = metric_writer.MetricsWriter(str(tmp_path), tensorboard=False, resume_step=3)
  assert any("dropping 2 lines written after step 3" in r.getMessage() for r in caplog.records)
  assert [(r["step"], sorted(r)) for r in _lines(path)] == [
      (1, ["step", "train/loss"]), (2, ["step", "train/loss"]), (3, ["step", "train/loss"]),
      (3, ["eval/accuracy", "step"])]  # the file is cut before anything new is written
  writer.write(4, {"loss": 0.5}, prefix="train")
  writer.close()
  assert [r["step"] for r in _lines(path)] == [1, 2, 3, 3, 4] and _lines(path)[-1]["train/loss"] == 0.5


def test_a_run_restarting_from_step_0_keeps_no_old_lines(tmp_path):
  path = tmp_path / "metrics.jsonl"
  _history(path, [1, 2])
  metric_writer.MetricsWriter(str(tmp_path), tensorboard=False, resume_step=0).close()
  assert path.read_text() == ""


def test_lines_after_the_checkpoint_are_dropped_on_gcs_too(gcs_emulator):
  from prompt_tuning_jax.checkpoints import fs
  model_dir = fs.join(gcs_emulator, "orphaned_metrics")
  fs.atomic_write(fs.join(model_dir, "metrics.jsonl"),
                  "".join(json.dumps({"step": s, "train/loss": 1.0}) + "\n" for s in (1, 2, 3)))
  writer = metric_writer.MetricsWriter(model_dir, tensorboard=False, resume_step=1)
  assert [json.loads(x)["step"] for x in fs.read_text(fs.join(model_dir, "metrics.jsonl")).splitlines()] == [1]
  writer.write(2, {"loss": 0.25}, prefix="train")
  writer.close()
  rows = [json.loads(x) for x in fs.read_text(fs.join(model_dir, "metrics.jsonl")).splitlines()]
  assert [(r["step"], r["train/loss"]) for r in rows] == [(1, 1.0), (2, 0.25)]
