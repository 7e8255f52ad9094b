"""SuperGLUE's official metrics, the leaderboard average, and a JSON-lines log.

Pure Python/numpy, on label-space values: class indices for classification
(a prediction outside the label set, e.g. -1 for text that is no label, counts
as wrong), strings for ReCoRD. Scores are percentages (0-100), as T5 and the
SuperGLUE leaderboard report them.

Conventions for degenerate inputs (documented, and tested):
* An F1 whose denominator is zero (no positive targets and no positive
  predictions) is 0.0, as scikit-learn's `zero_division=0`; the same holds per
  class inside the macro-F1 and for Matthews correlation with a zero
  denominator (all predictions or all targets one class).
* Empty inputs, or targets and predictions of different lengths, raise
  ValueError: a score over no examples is a bug upstream, not a number.
"""
from __future__ import annotations

import collections
import json
import math
import os
import re
import string
from pathlib import Path
from typing import Any, Hashable, Mapping, Optional, Sequence

import numpy as np

# The metrics each task contributes to the SuperGLUE average (the leaderboard
# averages a task's metrics first, then the eight tasks equally; the AX-b and
# AX-g diagnostics are reported apart and are not in the average).
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "boolq": ("accuracy",),
    "cb": ("macro_f1", "accuracy"),
    "copa": ("accuracy",),
    "multirc": ("f1a", "em"),
    "record": ("f1", "em"),
    "rte": ("accuracy",),
    "wic": ("accuracy",),
    "wsc": ("accuracy",),
}
SUPERGLUE_AVERAGE_TASKS = tuple(TASK_METRICS)
_PUNCTUATION = frozenset(string.punctuation)


def _as_arrays(targets: Sequence[Any], predictions: Sequence[Any], name: str
               ) -> tuple[np.ndarray, np.ndarray]:
  t, p = np.asarray(targets), np.asarray(predictions)
  if t.ndim != 1 or p.ndim != 1 or len(t) != len(p):
    raise ValueError(f"{name}: targets and predictions must be 1-D of equal "
                     f"length; got shapes {t.shape} and {p.shape}")
  if len(t) == 0:
    raise ValueError(f"{name}: no examples (empty targets and predictions)")
  return t, p


def _f1(tp: int, fp: int, fn: int) -> float:
  denom = 2 * tp + fp + fn
  return 0.0 if denom == 0 else 2.0 * tp / denom


def accuracy(targets: Sequence[int], predictions: Sequence[int]) -> float:
  """Percent of predictions equal to the target."""
  t, p = _as_arrays(targets, predictions, "accuracy")
  return 100.0 * float(np.mean(t == p))


def binary_f1(targets: Sequence[int], predictions: Sequence[int],
              positive: int = 1) -> float:
  """F1 (percent) of the `positive` class; invalid predictions count as wrong.

  Targets must be 0/1. A prediction that is neither 0 nor 1 is scored as the
  opposite of its target (a false negative or a false positive), as T5's
  `f1_score_with_invalid` does.
  """
  t, p = _as_arrays(targets, predictions, "binary_f1")
  if not np.isin(t, (0, 1)).all():
    raise ValueError(f"binary_f1: targets must be 0 or 1, found "
                     f"{sorted(set(t.tolist()) - {0, 1})}")
  p = np.where(np.isin(p, (0, 1)), p, 1 - t)
  tp = int(np.sum((p == positive) & (t == positive)))
  fp = int(np.sum((p == positive) & (t != positive)))
  fn = int(np.sum((p != positive) & (t == positive)))
  return 100.0 * _f1(tp, fp, fn)


def macro_f1(targets: Sequence[int], predictions: Sequence[int],
             num_classes: int) -> float:
  """Unweighted mean over classes 0..num_classes-1 of per-class F1 (percent).

  An invalid prediction is a false negative for the target's class and a false
  positive for no class (scikit-learn with `labels=range(num_classes)`).
  """
  t, p = _as_arrays(targets, predictions, "macro_f1")
  scores = []
  for c in range(num_classes):
    tp = int(np.sum((p == c) & (t == c)))
    fp = int(np.sum((p == c) & (t != c)))
    fn = int(np.sum((p != c) & (t == c)))
    scores.append(_f1(tp, fp, fn))
  return 100.0 * float(np.mean(scores))


def matthews_corrcoef(targets: Sequence[int], predictions: Sequence[int]
                      ) -> float:
  """Matthews correlation x 100 for 0/1 labels (AX-b); invalid = wrong."""
  t, p = _as_arrays(targets, predictions, "matthews_corrcoef")
  p = np.where(np.isin(p, (0, 1)), p, 1 - t)
  tp = float(np.sum((p == 1) & (t == 1)))
  tn = float(np.sum((p == 0) & (t == 0)))
  fp = float(np.sum((p == 1) & (t == 0)))
  fn = float(np.sum((p == 0) & (t == 1)))
  denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
  return 0.0 if denom == 0 else 100.0 * (tp * tn - fp * fn) / denom


def multirc_scores(targets: Sequence[int], predictions: Sequence[int],
                   groups: Sequence[Hashable]) -> dict[str, float]:
  """MultiRC: F1 over all answer options ('f1a') and per-question exact match.

  Args:
    targets, predictions: one 0/1 label per answer option ([N]).
    groups: the question each answer belongs to ([N]), e.g. a
      (paragraph idx, question idx) tuple; 'em' is the percent of questions
      whose every answer is predicted correctly.
  """
  t, p = _as_arrays(targets, predictions, "multirc_scores")
  if len(groups) != len(t):
    raise ValueError(f"multirc_scores: {len(groups)} groups for {len(t)} "
                     "answers; give one group per answer")
  correct: dict[Hashable, bool] = {}
  for g, ti, pi in zip(groups, t.tolist(), p.tolist()):
    correct[g] = correct.get(g, True) and ti == pi
  return {"f1a": binary_f1(t, p),
          "em": 100.0 * float(np.mean(list(correct.values())))}


def gender_parity(pair_ids: Sequence[Hashable], predictions: Sequence[Any]) -> float:
  """AX-g gender parity (percent): the share of Winogender pairs (examples sharing a
  `pair_id`, differing only in the pronoun's gender) whose predictions all agree."""
  if len(pair_ids) != len(predictions) or not pair_ids:
    raise ValueError(f"gender_parity: need equal, non-zero numbers of pair ids and predictions; "
                     f"got {len(pair_ids)} and {len(predictions)}")
  groups: dict[Hashable, set] = collections.defaultdict(set)
  for pair, pred in zip(pair_ids, predictions):
    groups[pair].add(pred)
  return 100.0 * float(np.mean([len(preds) == 1 for preds in groups.values()]))


def normalize_squad(text: str) -> str:
  """SQuAD answer normalization: lowercase, drop punctuation and articles."""
  text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
  text = re.sub(r"\b(a|an|the)\b", " ", text)
  return " ".join(text.split())


def _token_f1(gold: str, pred: str) -> float:
  gold_toks, pred_toks = gold.split(), pred.split()
  same = sum((collections.Counter(gold_toks) &
              collections.Counter(pred_toks)).values())
  if same == 0:
    return 0.0
  precision, recall = same / len(pred_toks), same / len(gold_toks)
  return 2 * precision * recall / (precision + recall)


def record_scores(answers: Sequence[Sequence[str]], predictions: Sequence[str],
                  groups: Optional[Sequence[Hashable]] = None
                  ) -> dict[str, float]:
  """ReCoRD: max exact match ('em') and max token F1 ('f1') over gold answers.

  Args:
    answers: all gold answer strings of each query ([N] lists).
    predictions: one predicted entity string per query ([N]).
    groups: optional query ids ([N]); only the first example of each group
      counts (training duplicates a query once per answer).
  """
  if groups is not None:
    if len(groups) != len(answers):
      raise ValueError(f"record_scores: {len(groups)} groups for "
                       f"{len(answers)} examples")
    seen, keep = set(), []
    for i, g in enumerate(groups):
      if g not in seen:
        seen.add(g)
        keep.append(i)
    answers = [answers[i] for i in keep]
    predictions = [predictions[i] for i in keep]
  if len(answers) != len(predictions) or not answers:
    raise ValueError(f"record_scores: need equal, non-zero numbers of answer "
                     f"lists and predictions; got {len(answers)} and "
                     f"{len(predictions)}")
  em, f1 = [], []
  for i, (golds, pred) in enumerate(zip(answers, predictions)):
    if not golds:
      raise ValueError(f"record_scores: example {i} has no gold answers")
    golds = [normalize_squad(g) for g in golds]
    pred = normalize_squad(pred)
    em.append(max(float(g == pred) for g in golds))
    f1.append(max(_token_f1(g, pred) for g in golds))
  return {"em": 100.0 * float(np.mean(em)), "f1": 100.0 * float(np.mean(f1))}


def task_score(task: str, metrics: Mapping[str, float]) -> float:
  """A task's leaderboard number: the mean of its metrics in `TASK_METRICS`."""
  if task not in TASK_METRICS:
    raise ValueError(f"task {task!r} is not in the SuperGLUE average; "
                     f"expected one of {SUPERGLUE_AVERAGE_TASKS}")
  missing = [m for m in TASK_METRICS[task] if m not in metrics]
  if missing:
    raise ValueError(f"task {task!r}: metrics {missing} missing; found "
                     f"{sorted(metrics)}")
  return float(np.mean([metrics[m] for m in TASK_METRICS[task]]))


def superglue_average(task_metrics: Mapping[str, Mapping[str, float]],
                      require_all: bool = True) -> float:
  """The SuperGLUE score: mean over the eight tasks of `task_score`.

  Keys of `task_metrics` outside the average (e.g. 'axb') are ignored. With
  `require_all=False` the mean runs over the tasks present (a partial score).
  """
  present = [t for t in SUPERGLUE_AVERAGE_TASKS if t in task_metrics]
  missing = [t for t in SUPERGLUE_AVERAGE_TASKS if t not in task_metrics]
  if (missing and require_all) or not present:
    raise ValueError(f"superglue_average: tasks {missing} missing; the "
                     f"average needs {SUPERGLUE_AVERAGE_TASKS}")
  return float(np.mean([task_score(t, task_metrics[t]) for t in present]))


def _to_builtin(value: Any) -> Any:
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, Path):
    return str(value)
  raise TypeError(f"write_jsonl: cannot serialize {type(value).__name__}")


def write_jsonl(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
  """Appends `record` as one JSON line (numpy values become Python values).

  Parent folders are created. Non-finite floats are written as NaN/Infinity
  (Python's json default) so a diverged loss stays visible in the log.
  """
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  line = json.dumps(dict(record), sort_keys=True, default=_to_builtin)
  with path.open("a", encoding="utf-8") as f:
    f.write(line + "\n")
