"""A finished run's results as the tables read them: its eval history, the eval its
early-stopping rule selects, and table cells (mean ± std over seeds).

Shared by the report and the domain-shift table, so neither imports the other's module.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import statistics
from typing import Sequence

from prompt_tuning_jax.checkpoints import fs
from prompt_tuning_jax.paper import experiments as grid


@dataclasses.dataclass
class Table:
  title: str
  header: list[str]
  rows: list[list[str]]
  notes: list[str] = dataclasses.field(default_factory=list)

  def markdown(self) -> str:
    lines = [f"### {self.title}", "", "| " + " | ".join(self.header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(self.header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in self.rows]
    return "\n".join(lines + [""] + [f"- {n}" for n in self.notes])

  def csv(self) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(self.header)
    writer.writerows(self.rows)
    return buf.getvalue()


def fmt(value: float | None) -> str:
  return "" if value is None else f"{value:.1f}"


def mean_std(values: Sequence[float]) -> str:
  """'75.0 ± 1.2' over seeds (sample std), '75.0' for one value, '' for none."""
  if not values:
    return ""
  if len(values) == 1:
    return fmt(values[0])
  return f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f}"


def metric_names(metric: str | Sequence[str]) -> tuple[str, ...]:
  return (metric,) if isinstance(metric, str) else tuple(metric)


def selection_value(scores: dict[str, float], metric: str | Sequence[str]) -> float | None:
  """The early-stopping value of an eval: its metric, or the mean of several."""
  names = metric_names(metric)
  if not all(n in scores for n in names):
    return None
  return statistics.fmean(float(scores[n]) for n in names)


def mean_of(values: Sequence[float], expected: int) -> str:
  """Mean, marked '(k/n)' when only k of the n expected values exist."""
  if not values:
    return ""
  text = fmt(statistics.fmean(values))
  return text if len(values) == expected else f"{text} ({len(values)}/{expected})"


def eval_history(model_dir: str) -> list[dict[str, float]]:
  """The eval lines of metrics.jsonl, 'eval/' stripped: [{'step': s, 'accuracy': v, ...}]."""
  text = grid.read_text(fs.join(model_dir, "metrics.jsonl")) or ""
  out = []
  for line in text.splitlines():
    record = json.loads(line) if line.strip() else {}
    evals = {k[len("eval/"):]: v for k, v in record.items() if k.startswith("eval/")}
    if evals:
      out.append(dict(evals, step=record.get("step")))
  return out


def best_eval(model_dir: str, metric: str | Sequence[str]) -> dict[str, float] | None:
  """The eval with the best `metric` (mean of several; first on ties), or best/best.json's value."""
  evals = [e for e in eval_history(model_dir) if selection_value(e, metric) is not None]
  if evals:
    return max(evals, key=lambda e: selection_value(e, metric))
  best = grid.read_text(fs.join(model_dir, "best", "best.json"))
  if best:
    best = json.loads(best)
    if isinstance(metric, str) and best.get("metric") == metric:
      return {"step": best["step"], metric: best["value"]}
  return None
