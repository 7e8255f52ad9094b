"""Finished runs -> the paper's tables (Markdown, CSV) and plots (PNG), ours beside theirs.

A run's score is read from its MODEL_DIR/metrics.jsonl: the eval line with the best value
of the run's early-stopping metric (for multi-metric tasks the mean of their metrics, as the
paper selects; the first one on ties, as training keeps it), or best/best.json when there
is no log. A SuperGLUE task's score is the mean of its metrics (CB: macro-F1 and accuracy;
MultiRC: F1a and EM; ReCoRD: F1 and EM), the SuperGLUE score the mean over tasks. Each
grid point has several seeds: cells show mean ± std over the finished seeds (plots: a band
of one std). Averages over fewer tasks than asked for say so: "71.3 (5/8)". Unfinished
runs leave their cells empty.
"""
from __future__ import annotations

import json
import os
import statistics
from typing import Any, Sequence

from prompt_tuning_jax.checkpoints import fs
from prompt_tuning_jax.evaluators.superglue_metrics import TASK_METRICS
from prompt_tuning_jax.paper import domain_shift, published, results
from prompt_tuning_jax.paper import experiments as grid

VARIANTS = {
    "main": lambda s: "Prompt Tuning",
    "model_tuning": lambda s: "Model Tuning",
    "multitask_model_tuning": lambda s: "Model Tuning (Multi-task)",
    "prompt_length": lambda s: f"P={s.prompt_length}",
    "init": lambda s: {"uniform": "Random Uniform", "sampled_vocab": "Sampled Vocab",
                       "class_labels": "Class Label"}[s.init],
    "frozen_model": lambda s: {"span_corruption": "Span Corruption",
                               "span_corruption_sentinel": "Span Corruption + Sentinel",
                               "lm_adapted": "LM Adaptation (100K)"}[s.frozen],
    "lm_adaptation": lambda s: f"{s.lm_steps // 1000}K",
    "delta_methods": lambda s: s.method,
    "demo": lambda s: "demo",
}


def task_score(task: str, scores: dict[str, float] | None, metric: str = "accuracy") -> float | None:
  """SuperGLUE task score (mean of its metrics); other tasks: `metric`."""
  if scores is None:
    return None
  names = TASK_METRICS.get(task, (metric,))
  if not all(n in scores for n in names):
    return None
  return statistics.fmean(float(scores[n]) for n in names)


def run_score(run: grid.Run) -> float | None:
  s = run.setting
  return task_score(s.task, results.best_eval(run.output_dir, s.metric), s.metric)


# ------------------------------------------------------------------------------- tables

def multitask_scores(run: grid.Run, tasks: Sequence[str] = grid.SUPERGLUE_TASKS) -> dict[str, float]:
  """Per-task selection of one multi-task run: each task's score at ITS best eval
  (`eval/<task>/<metric>` lines; multi-metric tasks selected on their mean)."""
  out = {}
  for t in tasks:
    names = tuple(f"{t}/{m}" for m in TASK_METRICS[t])
    ev = results.best_eval(run.output_dir, names)
    if ev:
      out[t] = statistics.fmean(float(ev[n]) for n in names)
  return out


def _scores(runs: Sequence[grid.Run], experiment: str) -> dict[tuple[str, str, str], dict[int, float]]:
  """(size, variant, task) -> {seed: score}, for finished-or-evaluated train runs."""
  out: dict[tuple[str, str, str], dict[int, float]] = {}
  for r in runs:
    if r.kind != "train" or r.setting.method == "lm_adaptation":
      continue
    if r.setting.method == "multitask_model_tuning":
      by_task = multitask_scores(r)
    else:
      by_task = {} if (score := run_score(r)) is None else {r.setting.task: score}
    for t, score in by_task.items():  # the variant label only where there is a score
      out.setdefault((r.setting.size, VARIANTS[experiment](r.setting), t), {})[r.setting.seed] = score
  return out


def _task_cell(by_seed: dict[int, float] | None) -> str:
  return results.mean_std(list(by_seed.values())) if by_seed else ""


def average_stats(scores: dict, size: str, variant: str, tasks: Sequence[str]) -> tuple[float, float | None, int]:
  """(mean over tasks of the seed means, std over seeds of the per-seed averages or None, tasks done).

  The std uses only seeds finished on every task; with fewer than two such seeds it is None.
  """
  per_task = [scores.get((size, variant, t)) or {} for t in tasks]
  means = [statistics.fmean(d.values()) for d in per_task if d]
  if not means:
    return float("nan"), None, 0
  common = set.intersection(*(set(d) for d in per_task)) if all(per_task) else set()
  seed_avgs = [statistics.fmean(d[k] for d in per_task) for k in sorted(common)]
  std = statistics.stdev(seed_avgs) if len(seed_avgs) > 1 else None
  return statistics.fmean(means), std, len(means)


def _average_cell(scores: dict, size: str, variant: str, tasks: Sequence[str]) -> str:
  mean, std, done = average_stats(scores, size, variant, tasks)
  if not done:
    return ""
  text = results.fmt(mean) + ("" if std is None else f" ± {std:.1f}")
  return text if done == len(tasks) else f"{text} ({done}/{len(tasks)})"


def per_task_table(experiment: str, runs: Sequence[grid.Run], sizes: Sequence[str],
                   tasks: Sequence[str]) -> results.Table:
  """Rows: model sizes; columns: tasks and their mean (Figure 1's numbers per task)."""
  scores, variant = _scores(runs, experiment), VARIANTS[experiment](runs[0].setting)
  if experiment == "multitask_model_tuning":
    tasks = [t for t in tasks if t in grid.SUPERGLUE_TASKS] or list(grid.SUPERGLUE_TASKS)
  header = ["size"] + list(tasks) + ["average", "tasks done"]
  rows = []
  for z in sizes:
    cells = [_task_cell(scores.get((z, variant, t))) for t in tasks]
    done = sum(bool(c) for c in cells)
    rows.append([z] + cells + [_average_cell(scores, z, variant, tasks), f"{done}/{len(tasks)}"])
  seeds = sorted({r.setting.seed for r in runs if r.kind == "train"})
  selection = ("each task at its own best eval of the one multi-task run (per-task selection)"
               if experiment == "multitask_model_tuning" else "each run's eval with the best early-stopping metric")
  notes = [f"{variant}, dev set, mean ± std over seeds {seeds} (the finished ones) of {selection} "
           "(multi-metric tasks: their mean); 'average' over the eight "
           "SuperGLUE tasks is the SuperGLUE score, its std over seeds finished on every task."]
  if experiment in ("model_tuning", "multitask_model_tuning"):
    notes.append("Starts from the public T5.1.1 checkpoints (span corruption, checkpoint_1000000), as section 3.1. "
                 "Figure 1 prints no numbers for this curve.")
  if experiment == "main":
    paper = [published.table3_printed(t, "average") for t in tasks]
    paper.append(published.table3_printed("superglue", "average") if list(tasks) == list(grid.SUPERGLUE_TASKS)
                 else None)  # the paper's average is over all eight tasks
    rows.append(["xxl (paper)"] + [p or "" for p in paper] + [""])
    notes.append(f"'xxl (paper)': {published.TABLE3_SOURCE}, mean of five single prompts, as printed: "
                 "CB acc. / F1, MultiRC EM / F1a, ReCoRD EM / F1; empty where the paper prints no number. "
                 "Figure 1 itself is a plot without printed values.")
  return results.Table(f"{experiment}: {grid.EXPERIMENTS[experiment].reproduces}", header, rows, notes)


def ablation_table(experiment: str, runs: Sequence[grid.Run], sizes: Sequence[str],
                   tasks: Sequence[str]) -> results.Table:
  """Rows: model sizes; columns: the ablated values; cells: mean task score (Figure 3)."""
  scores = _scores(runs, experiment)
  variants = list(dict.fromkeys(VARIANTS[experiment](r.setting) for r in runs if r.kind == "train"))
  rows = []
  for z in sizes:
    rows.append([z] + [_average_cell(scores, z, var, tasks) for var in variants])
  notes = [f"Mean SuperGLUE dev task score over {len(tasks)} task(s), ± std over seeds; '(k/n)': only k "
           "done. The paper plots this figure without printed values."]
  return results.Table(f"{experiment}: {grid.EXPERIMENTS[experiment].reproduces}", ["size"] + variants, rows, notes)


def _ensemble_scores(run: grid.Run, members: Sequence[grid.Run], task: str) -> tuple[Any, Any, Any]:
  """(mean of single prompts, best single prompt, majority vote) task scores."""
  text = grid.read_text(run.done_file)
  if text:
    m = json.loads(text)["metrics"]
    singles = [v for k in range(len(members))
               if (v := task_score(task, {n.split("/", 1)[1]: x for n, x in m.items()
                                         if n.startswith(f"member_{k}/")})) is not None]
    vote = task_score(task, {n.split("/", 1)[1]: x for n, x in m.items() if n.startswith("vote/")})
  else:
    singles = [v for r in members if (v := run_score(r)) is not None]
    vote = None
  if not singles:
    return None, None, vote
  return statistics.fmean(singles), max(singles), vote


def ensemble_table(runs: Sequence[grid.Run], sizes: Sequence[str], tasks: Sequence[str]) -> results.Table:
  header = ["size", "task", "average (ours)", "best (ours)", "ensemble (ours)",
            "average (paper)", "best (paper)", "ensemble (paper)"]
  rows = []
  for z in sizes:
    columns: list[list[float]] = [[], [], []]
    for t in tasks:
      members = [r for r in runs if r.kind == "train" and r.setting.size == z and r.setting.task == t]
      evals = [r for r in runs if r.kind == "eval" and r.name == f"ensemble/{z}/{t}"]
      ours = _ensemble_scores(evals[0], members, t)
      for col, v in zip(columns, ours):
        if v is not None:
          col.append(v)
      paper = [published.table3_printed(t, c) if z == "xxl" else None for c in published.TABLE3_COLUMNS]
      rows.append([z, t] + [results.fmt(v) for v in ours] + [p or "" for p in paper])
    paper = [published.table3_printed("superglue", c) if z == "xxl" and list(tasks) == list(grid.SUPERGLUE_TASKS)
             else None for c in published.TABLE3_COLUMNS]
    rows.append([z, "SuperGLUE"] + [results.mean_of(c, len(tasks)) for c in columns] + [p or "" for p in paper])
  notes = [f"Paper: {published.TABLE3_SOURCE}, each cell as printed (CB acc. / F1, MultiRC EM / F1a, ReCoRD "
           "EM / F1). Ours: each seed's best prompt (early stopping on dev), multi-metric tasks as the mean of "
           "their metrics; 'ensemble' is the majority vote of `python -m prompt_tuning_jax.eval` with the five "
           "prompts."]
  return results.Table("ensemble: " + grid.EXPERIMENTS["ensemble"].reproduces, header, rows, notes)


def transfer_table(runs: Sequence[grid.Run], sizes: Sequence[str], tasks: Sequence[str]) -> results.Table:
  header = ["train -> eval", "size", "method", "accuracy (ours)", "F1 (ours)", "accuracy (paper)",
            "F1 (paper)", "runs done"]
  rows = []
  for src in tasks:
    tgt = grid.TRANSFER_TARGETS[src]
    for z in sizes:
      for method in ("model_tuning", "prompt_tuning"):
        mine = [r for r in runs if r.setting.task == src and r.setting.size == z and r.setting.method == method]
        picked = [e for r in mine if (e := results.best_eval(r.output_dir, r.setting.metric)) and "target/accuracy" in e]
        cells = [results.mean_std([e[f"target/{m}"] for e in picked]) for m in ("accuracy", "f1")]
        paper = [(published.table2(src, tgt, method, m), published.table2_std(src, tgt, method, m))
                 if z == "xxl" else (None, None) for m in ("accuracy", "f1")]
        rows.append([f"{src.upper()} -> {tgt.upper()}", z, method.replace("_", " ")] + cells +
                    [f"{mean.printed} ± {std.printed}" if mean else "" for mean, std in paper] +
                    [f"{len(picked)}/{len(mine)}"])
  notes = [f"Paper: {published.TABLE2_SOURCE}, mean ± std as printed. Ours: mean ± std over seeds of the "
           "target's dev scores at the step with the best SOURCE dev mean of accuracy and F1 (the two metrics "
           "Table 2 reports; the target is never trained on)."]
  return results.Table("transfer: " + grid.EXPERIMENTS["transfer"].reproduces, header, rows, notes)


def runs_table(runs: Sequence[grid.Run]) -> results.Table:
  """One row per train run: what it is, where, and its selected dev scores."""
  header = ["run", "status", "step", "metric", "value", "task score"]
  rows = []
  for r in runs:
    if r.kind != "train":
      continue
    ev = results.best_eval(r.output_dir, r.setting.metric)
    rows.append([r.name, grid.status(r), str(ev["step"]) if ev else "", "+".join(results.metric_names(r.setting.metric)),
                 results.fmt(results.selection_value(ev, r.setting.metric) if ev else None), results.fmt(run_score(r))])
  return results.Table("runs", header, rows)


# -------------------------------------------------------------------------------- plots

def size_series(runs: Sequence[grid.Run], experiment: str, sizes: Sequence[str],
                tasks: Sequence[str]) -> dict[str, dict[str, float]]:
  """variant -> {size: mean task score}, only where every requested task is done."""
  return {var: {z: m for z, (m, _) in by.items()} for var, by in size_stats(runs, experiment, sizes, tasks).items()}


def size_stats(runs: Sequence[grid.Run], experiment: str, sizes: Sequence[str],
               tasks: Sequence[str]) -> dict[str, dict[str, tuple[float, float | None]]]:
  """variant -> {size: (mean task score, std over seeds or None)} where every task is done."""
  scores = _scores(runs, experiment)
  variants = dict.fromkeys(VARIANTS[experiment](r.setting) for r in runs if r.kind == "train")
  out: dict[str, dict[str, tuple[float, float | None]]] = {}
  for var in variants:
    for z in sizes:
      mean, std, done = average_stats(scores, z, var, tasks)
      if done == len(tasks):
        out.setdefault(var, {})[z] = (mean, std)
  return out


def plot_vs_size(series: dict[str, dict[str, Any]], path: str, *, title: str,
                 points: Sequence[tuple[str, str, float]] = (), ylabel: str = "SuperGLUE dev score") -> str:
  """Score vs frozen-model parameters (log x), one line per series with a ± std band where
  the values are (mean, std) pairs; `points` are (label, size, value) reference markers
  (the paper's printed numbers)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(5.6, 3.8))
  for label, by_size in series.items():
    sizes = [z for z in grid.SIZES if z in by_size]
    x = [published.MODEL_PARAMS[z] for z in sizes]
    stats = [v if isinstance(v, tuple) else (v, None) for v in (by_size[z] for z in sizes)]
    means = [m for m, _ in stats]
    (line,) = ax.plot(x, means, marker="o", label=label)
    if any(sd for _, sd in stats):
      sds = [sd or 0.0 for _, sd in stats]
      ax.fill_between(x, [m - d for m, d in zip(means, sds)], [m + d for m, d in zip(means, sds)],
                      color=line.get_color(), alpha=0.2, linewidth=0)
  for label, size, value in points:
    ax.scatter([published.MODEL_PARAMS[size]], [value], marker="*", s=140, color="black", zorder=3, label=label)
  if not series:
    ax.text(0.5, 0.5, "no finished runs yet", transform=ax.transAxes, ha="center", va="center", color="gray")
  ax.set_xscale("log")
  ax.set_xlim(5e7, 2e10)
  ax.set_xlabel("frozen model parameters")
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=10)
  if series or points:
    ax.legend(fontsize=8, loc="lower right")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def figure1(root: str, sizes: Sequence[str], tasks: Sequence[str], extra: Sequence[str], path: str,
            seeds: Sequence[int] | None = None) -> str:
  """Figure 1: prompt tuning and model tuning vs size (± std bands), from the same root."""
  series = {}
  for name, label in (("model_tuning", "Model Tuning (ours)"),
                      ("multitask_model_tuning", "Model Tuning (Multi-task) (ours)"),
                      ("main", "Prompt Tuning (ours)")):
    runs = grid.expand(grid.EXPERIMENTS[name], root, sizes=sizes, tasks=tasks, extra=extra, seeds=seeds)
    by_size = size_stats(runs, name, sizes, tasks).get(VARIANTS[name](runs[0].setting))
    if by_size:
      series[label] = by_size
  points = []
  if list(tasks) == list(grid.SUPERGLUE_TASKS):
    points.append(("Prompt Tuning, paper Table 3", "xxl", published.TABLE3["superglue"][0]))
  return plot_vs_size(series, path, title="Figure 1: SuperGLUE dev score vs model size", points=points)


# ---------------------------------------------------------------------------- aggregate

def aggregate(root: str, experiments: Sequence[str], *, sizes: Sequence[str] | None = None,
              tasks: Sequence[str] | None = None, out_dir: str | None = None,
              extra: Sequence[str] = (), seeds: Sequence[int] | None = None) -> dict[str, list[str]]:
  """Write <out_dir>/<experiment>.{md,csv}, <experiment>_runs.csv and the PNGs
  (default out_dir: <root>/results) -> {experiment: [files written]}."""
  root = fs.abspath(root)
  out_dir = out_dir or fs.join(root, "results")
  if "://" not in out_dir:
    os.makedirs(out_dir, exist_ok=True)
  written: dict[str, list[str]] = {}
  for name in experiments:
    if name not in grid.EXPERIMENTS:
      raise ValueError(f"--experiment={name!r}; expected one of {sorted(grid.EXPERIMENTS)}")
    exp = grid.EXPERIMENTS[name]
    runs = grid.expand(exp, root, sizes=sizes, tasks=tasks, extra=extra, seeds=seeds)
    z = tuple(sizes or exp.sizes)
    t = tuple(tasks or exp.tasks)
    table, png = _table_and_plot(name, runs, root, z, t, extra, out_dir, seeds)
    files = {f"{name}.md": _page(exp, table, png), f"{name}.csv": table.csv(),
             f"{name}_runs.csv": runs_table(runs).csv()}
    for fname, text in files.items():
      grid.write_text(fs.join(out_dir, fname), text)
    written[name] = [fs.join(out_dir, f) for f in files] + ([png] if png else [])
  return written


def _table_and_plot(name: str, runs: Sequence[grid.Run], root: str, sizes: Sequence[str],
                    tasks: Sequence[str], extra: Sequence[str], out_dir: str,
                    seeds: Sequence[int] | None = None) -> tuple[results.Table, str | None]:
  plottable = "://" not in out_dir and all(z in published.MODEL_PARAMS for z in sizes)
  if name in ("main", "model_tuning", "multitask_model_tuning", "demo"):
    table = per_task_table(name, runs, sizes, tasks)
    if not plottable or name == "demo":
      return table, None
    return table, figure1(root, sizes, tasks, extra, fs.join(out_dir, "figure1.png"), seeds)
  if name == "ensemble":
    return ensemble_table(runs, sizes, tasks), None
  if name == "transfer":
    return transfer_table(runs, sizes, tasks), None
  if name == "domain_shift":
    return domain_shift.table_and_plot(runs, sizes, out_dir)
  table = ablation_table(name, runs, sizes, tasks)
  png = None
  if plottable:
    png = plot_vs_size(size_stats(runs, name, sizes, tasks), fs.join(out_dir, f"{name}.png"),
                       title=f"{grid.EXPERIMENTS[name].reproduces}")
  return table, png


def _page(exp: grid.Experiment, table: results.Table, png: str | None) -> str:
  source = exp.reproduces if exp.hidden else f"{exp.reproduces} of {published.PAPER}"
  text = f"## {exp.name}\n\nReproduces: {source}.\n\n{table.markdown()}\n"
  if png:
    text += f"\n![{exp.name}]({os.path.basename(png)})\n"
  return text
