"""Table 1 (domain shift) in the reproduction kit: its runs, dry run, table and plot."""
import json
import os
import pathlib

from prompt_tuning_jax import reproduce
from prompt_tuning_jax.paper import experiments

PT = "prompt_tuning/lm_adapted/sampled_vocab/p100"


def _write(model_dir, lines):
  os.makedirs(model_dir, exist_ok=True)
  with open(os.path.join(model_dir, "metrics.jsonl"), "w") as f:
    for step, values in lines:
      f.write(json.dumps({"step": step, **{f"eval/{k}": v for k, v in values.items()}}) + "\n")


def test_dry_run_lists_both_methods_three_seeds(tmp_path, capsys):
  assert reproduce.main(["--experiment=domain_shift", f"--root={tmp_path}", "--dry-run"]) == 0
  out = capsys.readouterr().out
  assert "domain_shift (Table 1" in out and "6 runs" in out
  runs = experiments.expand(experiments.EXPERIMENTS["domain_shift"], str(tmp_path))
  assert sorted((r.setting.method, r.setting.seed) for r in runs) == [
      (m, k) for m in ("model_tuning", "prompt_tuning") for k in (0, 1, 2)]
  pt = [r for r in runs if r.name == f"{PT}/seed1/xxl/squad"][0]
  assert list(pt.command[3:]) == ["--gin_file=models/t5_1_1_xxl.gin", "--gin_file=paper/domain_shift.gin",
                                  f"--gin.MODEL_DIR={tmp_path}/{PT}/seed1/xxl/squad", "--gin.SEED=1"]
  mt = [r for r in runs if r.setting.method == "model_tuning" and r.setting.seed == 0][0]
  assert mt.name == "model_tuning/span_corruption/seed0/xxl/squad"  # the public T5.1.1 checkpoint (section 3.1)
  assert list(mt.command[3:5]) == ["--gin_file=paper/t5_1_1_span_corruption_xxl.gin",
                                   "--gin_file=paper/domain_shift_model_tuning.gin"]


def test_aggregate_reads_ood_f1_at_the_best_squad_eval(tmp_path):
  runs = {r.name: r for r in experiments.expand(experiments.EXPERIMENTS["domain_shift"], str(tmp_path))}
  for k, (f1, bio) in enumerate([(90.0, 78.0), (92.0, 80.0)]):
    # step 1000 has the better SQuAD F1 (footnote 11: selection on F1), step 2000 the better
    # mean(F1, EM): 1000 is picked, so step 2000's higher out-of-domain F1 is not
    _write(runs[f"{PT}/seed{k}/xxl/squad"].output_dir, [
        (1000, {"f1": f1, "em": 70.0, "bioasq/f1": bio, "drop/f1": 60.0}),
        (2000, {"f1": f1 - 5, "em": 99.0, "bioasq/f1": 99.0, "drop/f1": 99.0})])
  assert reproduce.main(["aggregate", "--experiment=domain_shift", f"--root={tmp_path}"]) == 0
  rows = (tmp_path / "results" / "domain_shift.csv").read_text().splitlines()
  assert rows[0] == ("dataset,size,model tuning (ours),prompt tuning (ours),model tuning (paper),"
                     "prompt tuning (paper),runs done")
  assert rows[1] == "squad,xxl,,91.0 ± 1.4,94.9 ± 0.2,94.8 ± 0.1,2/6"
  assert "bioasq,xxl,,79.0 ± 1.4,77.9 ± 0.4,79.1 ± 0.3,2/6" in rows
  assert "drop,xxl,,60.0 ± 0.0,68.9 ± 1.7,67.1 ± 1.9,2/6" in rows
  png = pathlib.Path(tmp_path / "results" / "domain_shift.png").read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
