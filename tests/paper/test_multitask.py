"""Figure 1's "Model Tuning (Multi-task)": one run per size over T5's mixture, each task read
at ITS best eval (per-task selection), from the public T5.1.1 checkpoint."""
import json
import os

import pytest

from prompt_tuning_jax import reproduce
from prompt_tuning_jax.paper import experiments, report


def _write(model_dir, lines):
  os.makedirs(model_dir, exist_ok=True)
  with open(os.path.join(model_dir, "metrics.jsonl"), "w") as f:
    for step, values in lines:
      f.write(json.dumps({"step": step, **{f"eval/{k}": v for k, v in values.items()}}) + "\n")


def test_dry_run_names_the_public_checkpoint_and_the_mixture(tmp_path, capsys):
  assert reproduce.main(["--experiment=multitask_model_tuning", f"--root={tmp_path}", "--sizes=xxl",
                         "--dry-run"]) == 0
  out = capsys.readouterr().out
  assert "3 runs" in out and "--gin_file=paper/t5_1_1_span_corruption_xxl.gin" in out
  assert "--gin_file=paper/multitask_model_tuning.gin" in out


def test_each_task_is_scored_at_its_own_best_eval(tmp_path):
  runs = experiments.expand(experiments.EXPERIMENTS["multitask_model_tuning"], str(tmp_path), sizes=["small"],
                            seeds=[0])
  assert [r.name for r in runs] == ["multitask_model_tuning/span_corruption/seed0/small/superglue"]
  _write(runs[0].output_dir, [
      (1000, {"rte/accuracy": 70.0, "cb/macro_f1": 50.0, "cb/accuracy": 60.0, "boolq/accuracy": 80.0}),
      (2000, {"rte/accuracy": 60.0, "cb/macro_f1": 90.0, "cb/accuracy": 80.0, "boolq/accuracy": 70.0})])
  assert report.multitask_scores(runs[0]) == {"rte": 70.0, "cb": 85.0, "boolq": 80.0}  # rte, boolq at 1000; cb at 2000
  report.aggregate(str(tmp_path), ["multitask_model_tuning"], sizes=["small"], seeds=[0])
  table = (tmp_path / "results" / "multitask_model_tuning.csv").read_text().splitlines()
  assert table[0] == "size,boolq,cb,copa,multirc,record,rte,wic,wsc,average,tasks done"
  assert table[1] == "small,80.0,85.0,,,,70.0,,,78.3 (3/8),3/8"


@pytest.mark.slow
def test_tiny_multitask_run_logs_every_task_then_the_table_reads_it(tmp_path, monkeypatch):
  """Model tuning of the demo model on the samples' T5-format mixture for 2 steps, the
  multi-task eval hook scoring each task; the per-task table is filled from its log."""
  from prompt_tuning_jax import train
  monkeypatch.chdir(experiments.REPO_ROOT / "gin")
  out = tmp_path / "multitask"
  train.main(["--gin_file=models/demo.gin", "--gin_file=paper/multitask_model_tuning.gin", f"--gin.MODEL_DIR='{out}'",
              f"--gin.INITIAL_CHECKPOINT_PATH='{experiments.DEMO_CHECKPOINT}'",
              "--gin.MIXTURE_OR_TASK_NAME='superglue_sample'", "--gin.BATCH_SIZE=8", "--gin.TRAIN_STEPS=2",
              "--gin.EVAL_PERIOD=2", "--gin.CHECKPOINT_PERIOD=2", "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 16}",
              "--gin.multitask_evaluator.sample=True", "--gin.multitask_evaluator.tasks=('rte', 'cb')",
              "--gin.EARLY_STOPPING_METRIC=('rte/accuracy', 'cb/macro_f1', 'cb/accuracy')",
              "--gin.EVAL_INPUT_LENGTH=64"])
  lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
  evals = [line for line in lines if "eval/rte/accuracy" in line]
  assert evals and {"eval/cb/macro_f1", "eval/cb/accuracy"} <= set(evals[-1])
  run = experiments.Run("x", "train", (), str(out), setting=experiments.Setting(
      "superglue", "small", method="multitask_model_tuning", frozen="span_corruption"))
  scores = report.multitask_scores(run, tasks=("rte", "cb"))
  assert scores["rte"] == evals[-1]["eval/rte/accuracy"]
  assert scores["cb"] == (evals[-1]["eval/cb/macro_f1"] + evals[-1]["eval/cb/accuracy"]) / 2
