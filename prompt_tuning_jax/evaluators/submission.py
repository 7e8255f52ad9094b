"""SuperGLUE leaderboard files from test-split predictions: one `<Task>.jsonl` per task.

Rows follow the leaderboard's layout (as jiant writes it): `{"idx": i, "label": ...}` with
BoolQ/WiC labels "true"/"false", WSC "True"/"False", COPA 0/1, CB/RTE/AX-b/AX-g the label
names, ReCoRD the answer text per query with its `idx` as a string (jiant's writer), and
MultiRC one row per paragraph with its questions' answers nested (`{"idx", "passage":
{"questions": [{"idx", "answers": [{"idx", "label"}]}]}}`). Every test example gets a label:
an output that maps to no label is written as the task's first label and counted in
`invalid`. After each file, `<output_dir>/superglue.zip` is rewritten to hold every
`<Task>.jsonl` present, at the top of the archive under the names the leaderboard expects
(BoolQ.jsonl, CB.jsonl, ..., AX-b.jsonl, AX-g.jsonl), the archive it takes as one upload.
"""
from __future__ import annotations

import collections
import io
import json
import re
import zipfile
from typing import Any, Mapping, Sequence

from prompt_tuning_jax.checkpoints import fs
from prompt_tuning_jax.evaluators import superglue_metrics

LEADERBOARD_FILES = {"boolq": "BoolQ", "cb": "CB", "copa": "COPA", "multirc": "MultiRC", "record": "ReCoRD",
                     "rte": "RTE", "wic": "WiC", "wsc": "WSC", "axb": "AX-b", "axg": "AX-g"}
_LABELS = {"boolq": ("false", "true"), "wic": ("false", "true"), "wsc": ("False", "True"), "copa": (0, 1),
           "cb": ("entailment", "contradiction", "neutral"), "rte": ("entailment", "not_entailment"),
           "axb": ("entailment", "not_entailment"), "axg": ("entailment", "not_entailment")}
_TASK_NAME = re.compile(r"^superglue_([a-z]+?)(_sample)?(_taskless)?$")


def task_key(task_name: str) -> str | None:
  """'superglue_rte_taskless' -> 'rte'; None for a task outside the leaderboard."""
  match = _TASK_NAME.match(task_name)
  return match.group(1) if match and match.group(1) in LEADERBOARD_FILES else None


def source_idx(example: Mapping[str, Any]) -> Any:
  """The SuperGLUE `idx` an example came from: an int, or MultiRC's / ReCoRD's nested ids."""
  if "idx" in example:
    return int(example["idx"])
  nested = {k.split("/", 1)[1]: int(v) for k, v in example.items() if k.startswith("idx/")}
  return nested or None


def _label(key: str, pred: Any) -> tuple[Any, bool]:
  """(leaderboard label, valid?) of a postprocessed prediction (class index, or 1/0/-1 for WSC)."""
  value = pred.get("value") if isinstance(pred, dict) else pred
  labels = _LABELS.get(key, ("False", "True"))
  valid = isinstance(value, int) and 0 <= value < len(labels)
  return labels[value if valid else 0], valid


def leaderboard_rows(key: str, examples: Sequence[Mapping[str, Any]], preds: Sequence[Any]) -> tuple[list, int]:
  """-> (rows in the leaderboard's layout, number of invalid outputs written as a default)."""
  if key == "record":  # one example per query on the test split (no answers to expand)
    rows = {str(int(ex["idx/query"])): pred["text"] for ex, pred in zip(examples, preds)}
    return [{"idx": q, "label": text} for q, text in rows.items()], 0
  invalid = 0
  if key == "multirc":
    tree: dict[int, dict[int, list]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for ex, pred in zip(examples, preds):
      label, ok = _label(key, pred)
      invalid += not ok
      tree[int(ex["idx/paragraph"])][int(ex["idx/question"])].append(
          {"idx": int(ex["idx/answer"]), "label": 1 if label == "True" else 0})
    return [{"idx": p, "passage": {"questions": [{"idx": q, "answers": a} for q, a in qs.items()]}}
            for p, qs in tree.items()], invalid
  rows = []
  for ex, pred in zip(examples, preds):
    label, ok = _label(key, pred)
    invalid += not ok
    rows.append({"idx": int(ex["idx"]), "label": label})
  return rows, invalid


def write_submission(output_dir: str, task_name: str, examples: Sequence[Mapping[str, Any]],
                     preds: Sequence[Any]) -> dict[str, Any] | None:
  """Write `<output_dir>/<Task>.jsonl` -> a summary (file, rows, invalid, AX-g parity), or None
  for a task that is not on the leaderboard."""
  key = task_key(task_name)
  if key is None:
    return None
  rows, invalid = leaderboard_rows(key, examples, preds)
  path = fs.join(output_dir, LEADERBOARD_FILES[key] + ".jsonl")  # local or gs://
  fs.atomic_write(path, "".join(json.dumps(row) + "\n" for row in rows))
  summary = {"file": path, "rows": len(rows), "invalid": invalid, "zip": write_zip(output_dir)}
  if key == "axg" and examples and all("pair_id" in ex for ex in examples):
    summary["gender_parity"] = superglue_metrics.gender_parity([int(ex["pair_id"]) for ex in examples],
                                                                [r["label"] for r in rows])
  return summary


ZIP_NAME = "superglue.zip"


def write_zip(output_dir: str) -> str:
  """`<output_dir>/superglue.zip` of every leaderboard file present there (flat, leaderboard
  names, in LEADERBOARD_FILES order), written atomically -> its path."""
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
    for name in LEADERBOARD_FILES.values():
      path = fs.join(output_dir, name + ".jsonl")
      if fs.exists(path):
        archive.writestr(name + ".jsonl", fs.read_bytes(path))
  path = fs.join(output_dir, ZIP_NAME)
  fs.atomic_write(path, buf.getvalue())
  return path
