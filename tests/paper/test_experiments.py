"""The paper reproduction kit: run grids, commands that are valid gin, skipping finished
runs, tables and plots from run outputs, and one real tiny run through the launcher."""
import json
import os
import pathlib
import shlex
import subprocess
import sys

import pytest

import gin
from prompt_tuning_jax import cli, reproduce
from prompt_tuning_jax.paper import experiments, report

REPO = pathlib.Path(__file__).resolve().parents[2]
MAIN = "prompt_tuning/lm_adapted/class_labels/p100/seed0"


@pytest.fixture
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def _runs(name, root, **kw):
  return experiments.expand(experiments.EXPERIMENTS[name], str(root), **kw)


def _by_name(runs):
  return {r.name: r for r in runs}


# -------------------------------------------------------------------------- the grid

def test_main_dry_run_lists_every_run_with_its_command(tmp_path, capsys):
  assert reproduce.main(["--experiment=main", f"--root={tmp_path}", "--dry-run"]) == 0
  out = capsys.readouterr().out
  runs = _runs("main", tmp_path)
  assert len(runs) == 120 and out.count(" todo ") == 120  # 8 tasks x 5 sizes x 3 seeds
  rte = _by_name(runs)[f"{MAIN}/small/rte"]
  assert list(rte.command) == [
      "python", "-m", "prompt_tuning_jax.train", "--gin_file=models/t5_1_1_small.gin",
      "--gin_file=paper/main.gin", f"--gin.MODEL_DIR={tmp_path}/{MAIN}/small/rte",
      "--gin.MIXTURE_OR_TASK_NAME=superglue_rte_taskless", "--gin.EARLY_STOPPING_METRIC=accuracy",
      '--gin.CLASS_LABELS=["entailment", "not_entailment"]']
  record = _by_name(runs)["prompt_tuning/lm_adapted/class_labels/p100/seed2/xxl/record"]
  assert list(record.command[3:]) == [  # footnote 7's init words; selection on mean(F1, EM)
      "--gin_file=models/t5_1_1_xxl.gin", "--gin_file=paper/main.gin",
      f"--gin.MODEL_DIR={tmp_path}/prompt_tuning/lm_adapted/class_labels/p100/seed2/xxl/record",
      "--gin.MIXTURE_OR_TASK_NAME=superglue_record_taskless", '--gin.EARLY_STOPPING_METRIC=("f1", "em")',
      '--gin.TASK_FEATURE_LENGTHS={"inputs": 512, "targets": 16}',  # answers longer than 8 pieces (samples)
      '--gin.CLASS_LABELS=["commonsense", "reasoning", "reading", "comprehension"]', "--gin.SEED=2"]
  assert shlex.join(rte.command) in out and shlex.join(record.command) in out
  assert {(r.setting.size, r.setting.task, r.setting.seed) for r in runs} == {
      (z, t, k) for z in experiments.SIZES for t in experiments.SUPERGLUE_TASKS for k in (0, 1, 2)}
  assert len(_runs("main", tmp_path, seeds=[0, 5, 7, 9])) == 160


def test_run_counts_and_shared_runs(tmp_path):
  counts = {n: len(_runs(n, tmp_path)) for n, e in experiments.EXPERIMENTS.items() if not e.hidden}
  assert counts == {"main": 120, "model_tuning": 120, "multitask_model_tuning": 15, "prompt_length": 600,
                    "init": 360, "frozen_model": 360, "lm_adaptation": 490, "ensemble": 48, "transfer": 12,
                    "domain_shift": 6, "delta_methods": 840}
  # lm_adaptation: 8 tasks x 5 sizes x 4 lengths x 3 seeds + 10 adaptation runs (10K, 50K per size)
  assert sum(r.setting.method == "lm_adaptation" for r in _runs("lm_adaptation", tmp_path)) == 10
  main = {r.output_dir for r in _runs("main", tmp_path)}
  for ablation in ("prompt_length", "init", "frozen_model", "lm_adaptation"):  # their default point is the main run
    assert main <= {r.output_dir for r in _runs(ablation, tmp_path)}
  ensemble = _by_name(_runs("ensemble", tmp_path))["ensemble/xxl/rte"]
  prompts = [a.split("=", 1)[1] for a in ensemble.command if a.startswith("--prompt=")]
  assert prompts[0] == f"{tmp_path}/{MAIN}/xxl/rte/best/prompt.npy"
  assert [p.split("/")[-5] for p in prompts] == [f"seed{k}" for k in range(5)]


def test_unknown_size_is_refused_with_the_flag_named(tmp_path):
  with pytest.raises(SystemExit, match=r"--sizes: unknown \['huge'\]"):
    reproduce.main(["--experiment=main", f"--root={tmp_path}", "--sizes=small,huge", "--dry-run"])


@pytest.mark.slow
def test_every_command_is_valid_gin(tmp_path, monkeypatch, clean_gin):
  cli.register_configurables()
  import prompt_tuning_jax.tasks.glue  # noqa: F401  (imported by paper/transfer*.gin; before leaving the checkout)
  monkeypatch.chdir(tmp_path)  # gin files are found through the search path, from any directory
  seen = {}
  for name in experiments.EXPERIMENTS:
    for run in _runs(name, tmp_path):
      files = [a.split("=", 1)[1] for a in run.command if a.startswith("--gin_file=")]
      bindings, rest = cli.split_gin_flags(run.command[3:])
      assert all(r.split("=")[0] in ("--gin_file", "--prompt", "--mode", "--output_dir") for r in rest), rest
      gin.clear_config()
      defaults = ["runs/eval.gin"] if run.kind == "eval" else []  # what eval.main parses first
      cli.parse_gin(defaults + files, bindings, [str(cli.GIN_DIR)])  # unknown macros refused
      if run.kind == "train":
        assert gin.query_parameter("%MODEL_DIR") == run.output_dir
        seen[run.name] = {k: _query(k) for k in (
            "%PROMPT_LENGTH", "%CLASS_LABELS", "%INITIAL_CHECKPOINT_PATH", "%TRANSFER_TARGET",
            "%SEED", "OptimConfig.learning_rate", "%BATCH_SIZE", "%TRAIN_STEPS")}
  rte = seen[f"{MAIN}/small/rte"]
  assert (rte["%PROMPT_LENGTH"], rte["%CLASS_LABELS"], rte["OptimConfig.learning_rate"], rte["%BATCH_SIZE"],
          rte["%TRAIN_STEPS"]) == (100, ["entailment", "not_entailment"], 0.3, 32, 30000)
  cb1 = seen["prompt_tuning/lm_adapted/class_labels/p1/seed0/base/cb"]
  assert (cb1["%PROMPT_LENGTH"], cb1["%CLASS_LABELS"]) == (1, ["entailment"])
  assert seen["prompt_tuning/span_corruption/class_labels/p100/seed0/xl/wic"]["%INITIAL_CHECKPOINT_PATH"] == \
      "gs://t5-data/pretrained_models/t5x/t5_1_1_xl/checkpoint_1000000"
  assert seen[f"{MAIN}/xl/wic"]["%INITIAL_CHECKPOINT_PATH"] == \
      "gs://t5-data/pretrained_models/t5x/t5_1_1_lm100k_xl/checkpoint_1100000"
  mt = seen["model_tuning/span_corruption/seed0/large/boolq"]  # section 3.1: the public T5.1.1 checkpoints
  assert mt["OptimConfig.learning_rate"] == 1e-3
  assert mt["%INITIAL_CHECKPOINT_PATH"] == "gs://t5-data/pretrained_models/t5x/t5_1_1_large/checkpoint_1000000"
  multi = seen["multitask_model_tuning/span_corruption/seed0/xxl/superglue"]
  assert multi["%INITIAL_CHECKPOINT_PATH"] == "gs://t5-data/pretrained_models/t5x/t5_1_1_xxl/checkpoint_1000000"
  assert multi["%BATCH_SIZE"] == 2048  # x 512 = 2^20 tokens (footnote 4)
  sentinel = "prompt_tuning/span_corruption_sentinel/class_labels/p100/seed0/base/rte"
  assert seen[sentinel]["%INITIAL_CHECKPOINT_PATH"].endswith("t5_1_1_base/checkpoint_1000000")
  assert seen["prompt_tuning/lm_adapted/class_labels/p100/seed3/xxl/copa"]["%SEED"] == 3
  qqp = seen["prompt_tuning/lm_adapted/class_labels/p100/seed2/xxl/qqp_to_mrpc"]
  assert (qqp["%TRANSFER_TARGET"], qqp["%CLASS_LABELS"]) == ("glue_mrpc_from_qqp_taskless",
                                                             ["not_duplicate", "duplicate"])


def _query(name):
  try:
    return gin.query_parameter(name)
  except ValueError:
    return None


def test_verbalizers_and_task_names_match_the_registered_tasks(tmp_path):
  import seqio

  import prompt_tuning_jax.tasks as tasks
  import prompt_tuning_jax.tasks.glue  # noqa: F401
  for task in experiments.SUPERGLUE_TASKS:
    if task in experiments.VERBALIZERS:
      assert experiments.VERBALIZERS[task] == tasks.LABEL_NAMES[task]
  for task in ("qqp", "mrpc"):
    assert experiments.VERBALIZERS[task] == tasks.glue.LABEL_NAMES[task]
  names = set(seqio.TaskRegistry.names())
  for name in ("main", "transfer"):
    for run in _runs(name, tmp_path):
      for flag in run.command:
        if flag.startswith(("--gin.MIXTURE_OR_TASK_NAME=", "--gin.TRANSFER_TARGET=")):
          assert flag.split("=", 1)[1] in names


# ------------------------------------------------------------------- finished or not

def _write_metrics(model_dir, lines):
  os.makedirs(model_dir, exist_ok=True)
  with open(os.path.join(model_dir, "metrics.jsonl"), "w") as f:
    for step, values in lines:
      f.write(json.dumps({"step": step, **{f"eval/{k}": v for k, v in values.items()}}) + "\n")


def test_status_needs_final_step_and_prompt_or_marker(tmp_path):
  runs = _by_name(_runs("main", tmp_path, sizes=["small"], tasks=["rte"]) +
                  _runs("model_tuning", tmp_path, sizes=["small"], tasks=["rte"]))
  pt, mt = runs[f"{MAIN}/small/rte"], runs["model_tuning/span_corruption/seed0/small/rte"]
  assert experiments.status(pt) == "todo"
  _write_metrics(pt.output_dir, [(1000, {"accuracy": 50.0})])
  assert experiments.status(pt) == "started"
  _write_metrics(pt.output_dir, [(1000, {"accuracy": 50.0}), (30000, {"accuracy": 60.0})])
  assert experiments.status(pt) == "started"  # final step but no prompt.npy yet
  (pathlib.Path(pt.output_dir) / "prompt.npy").write_bytes(b"x")
  assert experiments.status(pt) == "done"
  _write_metrics(mt.output_dir, [(29000, {"accuracy": 50.0})])
  assert experiments.status(mt) == "started"
  (pathlib.Path(mt.output_dir) / experiments.DONE_MARKER).write_text("{}")
  assert experiments.status(mt) == "done"
  short = _by_name(_runs("main", tmp_path, sizes=["small"], tasks=["rte"], extra=["--gin.TRAIN_STEPS=1000"]))
  os.remove(os.path.join(pt.output_dir, "metrics.jsonl"))
  _write_metrics(pt.output_dir, [(1000, {"accuracy": 50.0})])
  assert experiments.status(short[f"{MAIN}/small/rte"]) == "done" and experiments.status(pt) == "started"


def test_launcher_skips_done_runs_runs_the_rest_and_stops_on_failure(tmp_path, monkeypatch):
  runs = _runs("ensemble", tmp_path, tasks=["rte"])  # 5 seeds, then the ensemble eval
  (pathlib.Path(runs[0].output_dir)).mkdir(parents=True)
  (pathlib.Path(runs[0].output_dir) / experiments.DONE_MARKER).write_text("{}")
  calls = []

  def fake_run(argv, cwd, env):
    calls.append((argv, cwd, env["PYTHONPATH"].split(os.pathsep)[0]))
    return subprocess.CompletedProcess(argv, 3 if "SEED=3" in " ".join(argv) else 0)

  monkeypatch.setattr(experiments.subprocess, "run", fake_run)
  outcomes = experiments.launch_local(runs, log=lambda _: None)  # seeds 0..4, then the eval
  assert [outcomes[r.name] for r in runs[:4]] == ["skipped", "ran", "ran", "failed (3)"]
  assert runs[4].name not in outcomes  # stopped at the first failure
  assert calls[0] == ([sys.executable, *runs[1].command[1:]], str(cli.GIN_DIR), str(REPO))
  marker = json.loads((pathlib.Path(runs[1].output_dir) / experiments.DONE_MARKER).read_text())
  assert marker["command"] == list(runs[1].command)
  calls.clear()
  outcomes = experiments.launch_local(runs, keep_going=True, log=lambda _: None)
  assert [outcomes[r.name] for r in runs] == ["skipped", "skipped", "skipped", "failed (3)", "ran", "blocked"]
  assert len(calls) == 2  # seeds 3 and 4; the eval waits for seed 3


def test_tpu_launcher_queues_the_experiment_on_the_vm(tmp_path, capfd):
  assert reproduce.main(["--experiment=main", "--launcher=tpu", "--root=gs://bucket/paper", "--sizes=small",
                         "--tpu_args=--dry-run --name pt --zone europe-west4-a", "--gin.NUM_PARTITIONS=2"]) == 0
  out = capfd.readouterr().out
  assert "main: 24 runs, queued on the TPU VM" in out
  remote = out.strip().splitlines()[-1]  # run_tpu.sh --dry-run prints the gcloud command
  assert remote.startswith("gcloud compute tpus tpu-vm ssh pt --zone europe-west4-a --worker=all")
  for part in ("python -m prompt_tuning_jax.reproduce", "--experiment=main", "--root=gs://bucket/paper",
               "--sizes=small", "--gin.NUM_PARTITIONS=2", "--launcher=local", "logs/reproduce_main.log"):
    assert part in remote


# ------------------------------------------------------------------------- aggregate

def _fake_prompt_runs(root):
  runs = _by_name(_runs("prompt_length", root, sizes=["small", "base"], tasks=["rte", "cb"]))
  # RTE small: best accuracy 75 first reached at step 2000 (a later tie does not count).
  _write_metrics(runs[f"{MAIN}/small/rte"].output_dir,
                 [(1000, {"accuracy": 60.0}), (2000, {"accuracy": 75.0}), (3000, {"accuracy": 75.0})])
  # RTE small, seed 1: 79 -> the cell is mean +- std of (75, 79) = 77.0 +- 2.8
  _write_metrics(runs[f"{MAIN.replace('seed0', 'seed1')}/small/rte"].output_dir, [(1000, {"accuracy": 79.0})])
  # CB small: picked by mean(macro-F1, accuracy): 85 at step 1000 beats 82.5 at 2000 (higher
  # accuracy) and 84 at 3000 (higher macro-F1).
  _write_metrics(runs[f"{MAIN}/small/cb"].output_dir,
                 [(1000, {"macro_f1": 80.0, "accuracy": 90.0}), (2000, {"macro_f1": 70.0, "accuracy": 95.0}),
                  (3000, {"macro_f1": 82.0, "accuracy": 86.0})])
  best = pathlib.Path(runs[f"{MAIN}/base/rte"].output_dir) / "best"  # no log: best.json only
  best.mkdir(parents=True)
  (best / "best.json").write_text(json.dumps({"step": 4000, "metric": "accuracy", "value": 66.0}))
  p1 = "prompt_tuning/lm_adapted/class_labels/p1/seed0/small"
  _write_metrics(runs[f"{p1}/rte"].output_dir, [(1000, {"accuracy": 50.0})])
  _write_metrics(runs[f"{p1}/cb"].output_dir, [(1000, {"macro_f1": 50.0, "accuracy": 70.0})])
  mt = _by_name(_runs("model_tuning", root, sizes=["small"], tasks=["rte", "cb"]))
  _write_metrics(mt["model_tuning/span_corruption/seed0/small/rte"].output_dir, [(1000, {"accuracy": 80.0})])
  _write_metrics(mt["model_tuning/span_corruption/seed0/small/cb"].output_dir,
                 [(1000, {"macro_f1": 88.0, "accuracy": 92.0})])


def _is_png(path):
  data = pathlib.Path(path).read_bytes()
  return len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_aggregate_builds_tables_and_plots(tmp_path):
  _fake_prompt_runs(tmp_path)
  assert reproduce.main(["aggregate", f"--root={tmp_path}", "--experiment=main,prompt_length",
                         "--sizes=small,base", "--tasks=rte,cb"]) == 0
  results = tmp_path / "results"
  main_md, main_csv = (results / "main.md").read_text(), (results / "main.csv").read_text()
  assert "| small | 77.0 ± 2.8 | 85.0 | 81.0 | 2/2 |" in main_md
  assert "| base | 66.0 |  | 66.0 (1/2) | 1/2 |" in main_md
  assert "| xxl (paper) | 92.6 | 99.3 / 99.0 |  |  |" in main_md  # CB as printed: acc. / F1, no derived mean
  assert main_csv.splitlines()[:3] == ["size,rte,cb,average,tasks done", "small,77.0 ± 2.8,85.0,81.0,2/2",
                                       "base,66.0,,66.0 (1/2),1/2"]
  runs_csv = (results / "main_runs.csv").read_text()
  assert f"{MAIN}/small/rte,started,2000,accuracy,75.0,75.0" in runs_csv
  assert f"{MAIN}/small/cb,started,1000,macro_f1+accuracy,85.0,85.0" in runs_csv
  ablation = (results / "prompt_length.csv").read_text().splitlines()
  assert ablation == ["size,P=1,P=5,P=20,P=100,P=150", "small,55.0,,,81.0,", "base,,,,66.0 (1/2),"]
  assert _is_png(results / "figure1.png") and _is_png(results / "prompt_length.png")
  assert report.size_series(_runs("model_tuning", tmp_path, sizes=["small"], tasks=["rte", "cb"]),
                            "model_tuning", ["small"], ["rte", "cb"]) == {"Model Tuning": {"small": 85.0}}


def test_aggregate_ensemble_and_transfer_tables(tmp_path):
  runs = _runs("ensemble", tmp_path, tasks=["rte", "cb"])
  for k, r in enumerate(r for r in runs if r.kind == "train" and r.setting.task == "rte"):
    _write_metrics(r.output_dir, [(1000, {"accuracy": 90.0 + k})])
  eval_run = _by_name(runs)["ensemble/xxl/rte"]
  os.makedirs(eval_run.output_dir)
  members = {f"member_{k}/accuracy": 80.0 + 2 * k for k in range(5)}
  with open(eval_run.done_file, "w") as f:
    json.dump({"metrics": {**members, "vote/accuracy": 95.0, "member_mean/accuracy": 84.0}}, f)
  transfer = _by_name(_runs("transfer", tmp_path))
  pt = "prompt_tuning/lm_adapted/class_labels/p100"
  _write_metrics(transfer[f"{pt}/seed0/xxl/qqp_to_mrpc"].output_dir, [  # 1000: best QQP accuracy, 2000: best mean
      (1000, {"accuracy": 86.0, "f1": 60.0, "target/accuracy": 70.0, "target/f1": 80.0}),
      (2000, {"accuracy": 85.0, "f1": 80.0, "target/accuracy": 74.0, "target/f1": 82.0})])
  _write_metrics(transfer[f"{pt}/seed1/xxl/qqp_to_mrpc"].output_dir, [
      (1000, {"accuracy": 86.0, "f1": 80.0, "target/accuracy": 78.0, "target/f1": 86.0})])
  report.aggregate(str(tmp_path), ["ensemble"], tasks=["rte", "cb"])
  report.aggregate(str(tmp_path), ["transfer"])
  ens = (tmp_path / "results" / "ensemble.csv").read_text().splitlines()
  assert ens[1] == "xxl,rte,84.0,88.0,95.0,92.6,93.5,93.5"  # from the eval's member/vote scores
  assert ens[2] == "xxl,cb,,,,99.3 / 99.0,100.00 / 100.00,100.0 / 100.0"  # Table 3 CB as printed
  assert ens[3] == "xxl,SuperGLUE,84.0 (1/2),88.0 (1/2),95.0 (1/2),,,"
  tr = (tmp_path / "results" / "transfer.csv").read_text().splitlines()
  # seed 0 picks step 2000 (best QQP mean of accuracy and F1): MRPC 74 / 82; seed 1: 78 / 86; std 2.83
  assert "QQP -> MRPC,xxl,prompt tuning,76.0 ± 2.8,84.0 ± 2.8,76.3 ± 0.1,84.3 ± 0.3,2/3" in tr
  assert "QQP -> MRPC,xxl,model tuning,,,73.1 ± 0.9,81.2 ± 2.1,0/3" in tr
  assert "MRPC -> QQP,xxl,prompt tuning,,,75.4 ± 0.8,69.7 ± 0.3,0/3" in tr


# ---------------------------------------------------------------- a real tiny run

@pytest.mark.slow
def test_real_tiny_run_through_the_local_launcher_then_aggregate(tmp_path, capsys):
  """The hidden demo experiment (bundled demo model and task) for 3 steps, then its table."""
  assert (experiments.DEMO_CHECKPOINT / "checkpoint").exists(), f"demo model missing: {experiments.DEMO_CHECKPOINT}"
  overrides = ["--gin.TRAIN_STEPS=3", "--gin.TrainConfig.progress_bar=False"]
  args = ["--experiment=demo", f"--root={tmp_path}"] + overrides
  assert reproduce.main(args) == 0
  model_dir = tmp_path / "demo"
  assert (model_dir / experiments.DONE_MARKER).exists() and (model_dir / "prompt.npy").exists()
  best = json.loads((model_dir / "best" / "best.json").read_text())
  assert best["step"] == 3 and best["metric"] == "accuracy"
  capsys.readouterr()
  assert reproduce.main(args) == 0  # finished: skipped, nothing runs
  assert "done already: demo" in capsys.readouterr().out
  assert reproduce.main(["aggregate", "--experiment=demo", f"--root={tmp_path}"] + overrides) == 0
  csv_rows = (tmp_path / "results" / "demo.csv").read_text().splitlines()
  assert csv_rows == ["size,demo,average,tasks done", f"demo,{best['value']:.1f},{best['value']:.1f},1/1"]


def test_extra_flags_reach_each_command_only_where_its_gin_knows_them(tmp_path, clean_gin):
  """Eval runs get the extras whose macros gin/runs/eval.gin knows, so none is refused."""
  extra = ["--gin.NUM_PARTITIONS=2", "--gin.TRAIN_STEPS=10", "--gin.BATCH_SIZE=16", "--gin.T5Config.dtype='float32'"]
  runs = _runs("ensemble", tmp_path, sizes=["small"], tasks=["rte"], extra=extra)
  evals = [r for r in runs if r.kind == "eval"]
  assert evals and all(r.kind == "train" for r in runs if r not in evals)
  for run in runs:
    files = [a.split("=", 1)[1] for a in run.command if a.startswith("--gin_file=")]
    bindings, _ = cli.split_gin_flags(run.command[3:])
    gin.clear_config()
    cli.parse_gin((["runs/eval.gin"] if run.kind == "eval" else []) + files, bindings, [str(cli.GIN_DIR)])
    assert gin.query_parameter("%BATCH_SIZE") == 16
  # NUM_PARTITIONS and BATCH_SIZE reach eval (runs/frozen_model.gin, runs/eval.gin); TRAIN_STEPS does not.
  assert [a for a in evals[0].command if a.startswith("--gin.") and a in extra] == extra[:1] + extra[2:]


def test_aggregate_every_experiment_on_an_empty_root(tmp_path):
  """Every listed experiment (new ones included) tabulates with no finished runs: empty cells, no error."""
  names = [n for n, e in experiments.EXPERIMENTS.items() if not e.hidden]
  for name in names:
    exp = experiments.EXPERIMENTS[name]
    superglue = exp.tasks == experiments.SUPERGLUE_TASKS
    written = report.aggregate(str(tmp_path), [name], sizes=["small"] if len(exp.sizes) > 1 else None,
                               tasks=["rte"] if superglue else None, seeds=[0])
    assert list(written) == [name]
  lm = (tmp_path / "results" / "lm_adaptation.csv").read_text().splitlines()
  assert lm == ["size,0K,10K,50K,100K", "small,,,,"]
  frozen = (tmp_path / "results" / "frozen_model.csv").read_text().splitlines()
  assert frozen[0] == "size,Span Corruption,Span Corruption + Sentinel,LM Adaptation (100K)"
