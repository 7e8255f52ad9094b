"""Table 1 (domain shift): our SQuAD-trained runs' out-of-domain F1 beside the paper's.

Each run keeps the eval with the best SQuAD dev F1 (the early-stopping rule, paper footnote
11) and reads the six MRQA out-of-domain F1 scores logged at that eval
(`eval/<name>/f1`, written by `tasks.mrqa.domain_shift_evaluator`).
"""
from __future__ import annotations

import os
from typing import Any, Sequence

from prompt_tuning_jax.paper import experiments as grid
from prompt_tuning_jax.paper import published, results

DATASETS = ("squad", "textbookqa", "bioasq", "race", "relationextraction", "duorc", "drop")
METHODS = ("model_tuning", "prompt_tuning")


def selected_f1(runs: Sequence[grid.Run], method: str, size: str) -> dict[str, list[float]]:
  """dataset -> F1 of each finished seed at its best SQuAD dev eval."""
  out: dict[str, list[float]] = {d: [] for d in DATASETS}
  for r in runs:
    if r.kind != "train" or r.setting.method != method or r.setting.size != size:
      continue
    ev = results.best_eval(r.output_dir, r.setting.metric)
    if not ev:
      continue
    for d in DATASETS:
      key = "f1" if d == "squad" else f"{d}/f1"
      if key in ev:
        out[d].append(float(ev[key]))
  return out


def table(runs: Sequence[grid.Run], sizes: Sequence[str]) -> results.Table:
  header = ["dataset", "size", "model tuning (ours)", "prompt tuning (ours)", "model tuning (paper)",
            "prompt tuning (paper)", "runs done"]
  rows = []
  for z in sizes:
    ours = {m: selected_f1(runs, m, z) for m in METHODS}
    for d in DATASETS:
      paper = [published.table1(d, m) if z == "xxl" else None for m in METHODS]
      done = sum(len(ours[m][d]) for m in METHODS)
      rows.append([d, z] + [results.mean_std(ours[m][d]) for m in METHODS] +
                  [f"{p[0].value:.1f} ± {p[1].value:.1f}" if p else "" for p in paper] +
                  [f"{done}/{sum(1 for r in runs if r.kind == 'train' and r.setting.size == z)}"])
  notes = [f"Paper: {published.TABLE1_SOURCE}. Ours: F1 mean ± std over seeds at each run's eval with the best "
           "SQuAD dev F1 (footnote 11); the out-of-domain sets are never trained on. Model tuning starts from the "
           "public T5.1.1 checkpoint, prompt tuning freezes the LM-adapted one (section 3.1)."]
  return results.Table("domain_shift: " + grid.EXPERIMENTS["domain_shift"].reproduces, header, rows, notes)


def plot(runs: Sequence[grid.Run], size: str, path: str) -> str:
  """Grouped bars of F1 per dataset, ours (± std error bars) and the paper's, per method."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np
  fig, ax = plt.subplots(figsize=(8, 3.8))
  x = np.arange(len(DATASETS))
  width = 0.2
  for k, m in enumerate(METHODS):
    ours = selected_f1(runs, m, size)
    means = [np.mean(ours[d]) if ours[d] else np.nan for d in DATASETS]
    stds = [np.std(ours[d], ddof=1) if len(ours[d]) > 1 else 0.0 for d in DATASETS]
    label = m.replace("_", " ")
    ax.bar(x + (2 * k - 1.5) * width, means, width, yerr=stds, capsize=2, label=f"{label} (ours)")
    paper = [published.table1(d, m) for d in DATASETS] if size == "xxl" else [None] * len(DATASETS)
    ax.bar(x + (2 * k - 0.5) * width, [p[0].value if p else np.nan for p in paper], width,
           yerr=[p[1].value if p else 0.0 for p in paper], capsize=2, alpha=0.5, label=f"{label} (paper)")
  ax.set_xticks(x, DATASETS, rotation=20, fontsize=8)
  ax.set_ylabel("F1")
  ax.set_title(f"Table 1: train on SQuAD, T5 {size}", fontsize=10)
  ax.legend(fontsize=7, ncol=2)
  ax.grid(alpha=0.3, axis="y")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def table_and_plot(runs: Sequence[grid.Run], sizes: Sequence[str], out_dir: str) -> tuple[Any, str | None]:
  png = None
  if "://" not in out_dir:
    png = plot(runs, sizes[-1], os.path.join(out_dir, "domain_shift.png"))
  return table(runs, sizes), png
