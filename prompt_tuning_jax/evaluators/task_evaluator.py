"""Evaluate a (prompted) model on SeqIO tasks' eval splits with the tasks' own metrics.

Three modes: 'greedy' and 'beam' decode text and map it back through the task's
postprocessor; 'rank' scores each of the task's label strings and picks the most
likely (rank classification, one encoder pass per example). Rank needs a fixed label
set (see `candidate_labels`); tasks without one (ReCoRD, WSC) fall back to greedy and
the metrics JSON says so. `invalid_rate` is the fraction of outputs that map to no label.

`Evaluator` is the training loop's eval hook; `MultiTaskEvaluator` runs several tasks
in shared batches, each example with its own task's prompt from a bank [T, P, d].
Both can write `<task>.metrics.json`, `<task>.predictions.jsonl` and TensorBoard scalars.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import logging
import re
from typing import TYPE_CHECKING, Any, Sequence

import jax
import numpy as np

from prompt_tuning_jax.parallel import distributed, sharding

from prompt_tuning_jax.text import data, quiet
from prompt_tuning_jax.text import vocab as vocab_lib
from prompt_tuning_jax.checkpoints import fs
from prompt_tuning_jax.evaluators import sharded, submission
from prompt_tuning_jax.evaluators.config import EvalConfig
from prompt_tuning_jax.evaluators.predictor import (
  Outputs,
  Predictor,
  outputs_from_scores,
  outputs_from_tokens,
  run_by_length,
)
from prompt_tuning_jax.model import t5
from prompt_tuning_jax.trainer import metric_writer

if TYPE_CHECKING:  # seqio imports TensorFlow: only where the eval data is read (data.get_task)
  import seqio

Array = jax.Array
UNK_TARGET = "<unk>"  # target of unlabeled (test) rows


def as_text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def exact_match_accuracy(targets: list[Any], predictions: list[Any]) -> dict[str, float]:
  return {"accuracy": 100.0 * float(np.mean([t == p for t, p in zip(targets, predictions)]))}


def is_invalid(prediction: Any) -> bool:
  """Postprocessed output that is no label: -1 / None, or a dict whose 'value' is."""
  if isinstance(prediction, dict):
    prediction = prediction.get("value", 0)
  return prediction is None or (isinstance(prediction, (int, np.integer)) and prediction == -1)


# ------------------------------------------------------------------------- candidates

def candidate_labels(task: seqio.Task, examples: Sequence[dict], *, module: str | None = None,
                     explicit: Sequence[str] | None = None) -> tuple[tuple[str, ...] | None, str]:
  """The label strings rank classification chooses among, and where they came from.

  Looked up in order: `explicit`; a `label_names` attribute on the task; the
  `label_names` keyword of a `functools.partial` postprocessor (SuperGLUE's
  classification tasks); the registering module's `LABEL_NAMES[key]` for a key that is
  a word of the task name (e.g. MultiRC). Any set found is used only if every labeled
  eval target is one of its strings: WSC's targets are referent texts, not its
  False/True labels, and ReCoRD has no set, so both return None (-> greedy).
  """
  found, source = None, "none"
  post = getattr(task, "postprocessor", None)
  if explicit is not None:
    found, source = tuple(explicit), "explicit"
  elif getattr(task, "label_names", None):
    found, source = tuple(task.label_names), "task.label_names"
  elif isinstance(post, functools.partial) and post.keywords.get("label_names"):
    found, source = tuple(post.keywords["label_names"]), "postprocessor label_names"
  elif module:
    table = getattr(importlib.import_module(module), "LABEL_NAMES", None) or {}
    words = set(re.split(r"[_\W]+", task.name))
    keys = [k for k in table if k in words]
    if len(keys) == 1:
      found, source = tuple(table[keys[0]]), f"{module}.LABEL_NAMES[{keys[0]!r}]"
  if found is None:
    return None, f"task {task.name!r} exposes no fixed label set"
  stray = sorted({as_text(ex["targets_pretokenized"]) for ex in examples} - set(found) - {UNK_TARGET})
  if stray:
    return None, (f"eval targets of {task.name!r} are not all labels {found} (from {source}), "
                  f"e.g. {stray[:3]}")
  return found, source


# ---------------------------------------------------------------------------- one task

@dataclasses.dataclass
class TaskData:
  """One task's eval split, tokenized, with its rank candidates (if any)."""
  task: seqio.Task
  examples: list[dict]
  inputs: np.ndarray            # [N, L]
  labels: tuple[str, ...] | None
  candidates: np.ndarray | None  # [C, T'] label ids, when rank is possible
  rank_note: str
  decode_length: int = 8  # the split's longest target (or DataConfig.eval_targets_length)

  @property
  def name(self) -> str:
    return self.task.name

  @property
  def vocab(self) -> seqio.Vocabulary:
    return self.task.output_features["targets"].vocabulary

  def mode_for(self, mode: str) -> str:
    """The mode actually used: rank falls back to greedy without candidates."""
    return "greedy" if mode == "rank" and self.candidates is None else mode


def load_task_data(data_config: data.DataConfig, *, split: str | None = None,
                   task_name: str | None = None, labels: Sequence[str] | None = None) -> TaskData:
  """Read and tokenize the eval split of `task_name` (default: the config's task)."""
  cfg = data_config if task_name is None else dataclasses.replace(data_config, mixture_or_task_name=task_name)
  task = data.get_task(cfg)
  if not isinstance(task, quiet.import_seqio().Task):
    raise ValueError(f"MIXTURE_OR_TASK_NAME={cfg.mixture_or_task_name!r} is a mixture; evaluate its "
                     f"tasks ({[t.name for t in task.tasks]}) with MultiTaskEvaluator")
  examples = data.eval_examples(cfg, split)
  if not examples:
    raise ValueError(f"task {task.name!r} split {split or cfg.eval_split!r} has no examples")
  inputs = vocab_lib.pad_ids([data.cut_eval_inputs(ex["inputs"], cfg.eval_inputs_length) for ex in examples])
  found, note = candidate_labels(task, examples, module=cfg.mixture_or_task_module, explicit=labels)
  cands = None
  if found is not None:
    cands = vocab_lib.encode_batch(task.output_features["targets"].vocabulary, found, cfg.eval_targets_length,
                                   trim=True)
  return TaskData(task, examples, inputs, found, cands, note, data.eval_decode_length(cfg, examples))


def compute_metrics(task_data: TaskData, texts: Sequence[str]) -> tuple[dict[str, float], list[Any]]:
  """The task's metric functions on postprocessed outputs, plus `invalid_rate` (0-1)."""
  task = task_data.task
  preds = [task.postprocess_fn(t, example=ex, is_target=False) for t, ex in zip(texts, task_data.examples)]
  scores: dict[str, float] = {"invalid_rate": float(np.mean([is_invalid(p) for p in preds]))}
  if all(is_unlabeled(ex) for ex in task_data.examples):  # a test split: predictions only
    return scores, preds
  targets = [task.postprocess_fn(as_text(ex["targets_pretokenized"]), example=ex, is_target=True)
             for ex in task_data.examples]
  for fn in list(task.predict_metric_fns) or [exact_match_accuracy]:
    scores.update({k: float(getattr(v, "value", v)) for k, v in fn(targets, preds).items()})
  return scores, preds


def is_unlabeled(example: dict) -> bool:
  """A test row: label -1, or the '<unk>' target of a task without labels."""
  return int(example.get("label", 0)) == -1 or as_text(example.get("targets_pretokenized", "")) == UNK_TARGET


def prediction_records(task_data: TaskData, outputs: Outputs, preds: Sequence[Any]) -> list[dict]:
  """One JSON-able dict per example: inputs, targets, output, score, prediction, ..."""
  records = []
  for i, ex in enumerate(task_data.examples):
    rec = {"index": i, "idx": submission.source_idx(ex), "inputs": as_text(ex.get("inputs_pretokenized", "")),
           "targets": as_text(ex.get("targets_pretokenized", "")), "output": outputs.texts[i],
           "score": float(outputs.scores[i]), "prediction": preds[i], "invalid": is_invalid(preds[i])}
    if outputs.beams is not None:
      rec["beams"] = [{"output": t, "score": s} for t, s in outputs.beams[i]]
    if outputs.candidate_scores is not None:
      rec["candidate_scores"] = {lab: float(s)
                                 for lab, s in zip(task_data.labels, outputs.candidate_scores[i])}
    records.append(rec)
  return records


def write_results(output_dir: str, name: str, summary: dict, records: Sequence[dict],
                  step: int | None = None) -> tuple[str, str]:
  """`<name>[.step_<s>].metrics.json` and `.predictions.jsonl` under output_dir."""
  stem = fs.join(output_dir, name if step is None else f"{name}.step_{step}")  # local or gs://
  fs.atomic_write(stem + ".metrics.json", json.dumps(summary, indent=2, sort_keys=True, default=_json_default))
  fs.atomic_write(stem + ".predictions.jsonl",
                  "".join(json.dumps(rec, sort_keys=True, default=_json_default) + "\n" for rec in records))
  return stem + ".metrics.json", stem + ".predictions.jsonl"


def _json_default(value: Any) -> Any:
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, (np.ndarray, tuple, set)):
    return list(np.asarray(value).tolist()) if isinstance(value, np.ndarray) else list(value)
  return str(value)


# --------------------------------------------------------------------------- evaluators

def predict_tasks(predictor: Predictor, params: Any, sets: Sequence[TaskData],
                  prompt_ids: Sequence[int | None], *, mode: str, batch_size: int) -> list[Outputs]:
  """Outputs for every example of every set; examples of different sets share batches.

  Sets whose effective mode is the same run together, interleaved round-robin so a
  batch mixes tasks; each example carries its set's prompt id (None: no bank).
  """
  if any(i is None for i in prompt_ids) and len(sets) > 1:
    raise ValueError("several tasks in one batch need a prompt id per task (a prompt bank)")
  results: list[Outputs | None] = [None] * len(sets)
  for effective in ("rank", "greedy", "beam"):
    group = [k for k, s in enumerate(sets) if s.mode_for(mode) == effective]
    if not group:
      continue
    order = sorted(((i, k) for k in group for i in range(len(sets[k].examples))))
    inputs = vocab_lib.pad_ids([sets[k].inputs[i] for i, k in order])
    ids = None if prompt_ids[group[0]] is None else np.asarray([prompt_ids[k] for _, k in order], np.int32)
    if effective == "rank" and len(group) == 1:  # one label set shared by the batch
      shared = sets[group[0]].candidates
      out = run_by_length(lambda x, p: predictor.score_async(params, x, shared, p), [inputs, ids], batch_size)
    elif effective == "rank":  # per-example label sets, 0-padded to a common [C, T]
      width = max(sets[k].candidates.shape[1] for k in group)
      count = max(sets[k].candidates.shape[0] for k in group)
      cands = np.zeros((len(order), count, width), np.int32)
      for row, (_, k) in enumerate(order):
        c = sets[k].candidates
        cands[row, : c.shape[0], : c.shape[1]] = c
      out = run_by_length(lambda x, c, p: predictor.score_async(params, x, c, p), [inputs, cands, ids], batch_size)
    else:
      out = run_by_length(lambda x, p: predictor.generate_async(params, x, p, mode=effective), [inputs, ids],
                          batch_size)
    for k in group:
      rows = [row for row, (_, kk) in enumerate(order) if kk == k]
      if effective == "rank":
        results[k] = outputs_from_scores(sets[k].labels, out[rows][:, : len(sets[k].labels)])
      else:
        results[k] = outputs_from_tokens(sets[k].vocab, out[0][rows], out[1][rows])
  return results


class MultiTaskEvaluator:
  """Several tasks evaluated in shared batches; task i uses prompt `prompt_ids[i]`."""

  def __init__(self, data_config: data.DataConfig, model: t5.Transformer, eval_config: EvalConfig,
               task_names: Sequence[str], *, prompt_ids: Sequence[int | None] | None = None,
               placement: sharded.Placement | None = None):
    self.mode = eval_config.mode
    self.sets = [load_task_data(data_config, split=eval_config.split, task_name=n,
                                labels=eval_config.task_labels(n)) for n in task_names]
    self.prompt_ids = list(prompt_ids) if prompt_ids is not None else list(range(len(self.sets)))
    if len(self.prompt_ids) != len(self.sets):
      raise ValueError(f"{len(self.prompt_ids)} prompt ids for {len(self.sets)} tasks")
    self.batch_size = eval_config.batch_size or data_config.batch_size
    self.output_dir = eval_config.output_dir
    self.split = eval_config.split or data_config.eval_split
    self.predictor = make_predictor(model, eval_config, max(s.decode_length for s in self.sets), placement)
    for s in self.sets:
      if s.mode_for(self.mode) != self.mode:
        logging.warning("rank classification is not possible for %s (%s); using greedy decoding",
                        s.name, s.rank_note)

  def evaluate(self, params: Any, step: int | None = None) -> dict[str, dict[str, float]]:
    """-> {task name: metrics}; writes files and TensorBoard scalars given output_dir."""
    outputs = predict_tasks(self.predictor, params, self.sets, self.prompt_ids, mode=self.mode,
                            batch_size=self.batch_size)
    results = {}
    for s, pid, out in zip(self.sets, self.prompt_ids, outputs):
      scores, preds = compute_metrics(s, out.texts)
      results[s.name] = scores
      if self.output_dir and distributed.is_primary():
        summary = {"task": s.name, "split": self.split, "mode": s.mode_for(self.mode),
                   "requested_mode": self.mode, "rank_candidates": s.rank_note, "step": step,
                   "prompt_id": pid, "num_examples": len(s.examples), "metrics": scores}
        if self.split == "test":  # the leaderboard's files, beside the predictions
          summary["submission"] = submission.write_submission(fs.join(self.output_dir, "submission"),
                                                              s.name, s.examples, preds)
        write_results(self.output_dir, s.name, summary, prediction_records(s, out, preds), step)
    if self.output_dir and distributed.is_primary():
      writer = metric_writer.MetricsWriter(self.output_dir)
      for name, scores in results.items():
        writer.write(step or 0, scores, prefix=f"eval/{name}")
      writer.close()
    return results


class Evaluator:
  """One task's eval split: `evaluator(params, step) -> metrics` (the training hook)."""

  def __init__(self, data_config: data.DataConfig, model: t5.Transformer, eval_config: EvalConfig = EvalConfig(),
               *, prompt_id: int | None = None, placement: sharded.Placement | None = None):
    name = data_config.mixture_or_task_name
    self._multi = MultiTaskEvaluator(data_config, model, eval_config, [name], prompt_ids=[prompt_id],
                                     placement=placement)
    self.task_data = self._multi.sets[0]

  @property
  def mode(self) -> str:
    """The mode in use (rank falls back to greedy for tasks without labels)."""
    return self.task_data.mode_for(self._multi.mode)

  def __call__(self, params: Any, step: int | None = None) -> dict[str, float]:
    return self._multi.evaluate(params, step)[self.task_data.name]


def make_train_evaluator(train_config: Any, model: t5.Transformer, eval_config: EvalConfig = EvalConfig(),
                         ) -> Evaluator:
  """The training loop's eval hook: the run's task, eval split and batch size, on the run's
  mesh (`make_mesh` is deterministic, so this is the loop's mesh): rows split over 'data';
  how to decode from `eval_config` (gin: `make_train_evaluator.eval_config = @EvalConfig()`)."""
  placement = sharded.Placement(sharding.make_mesh(train_config.partition), train_config.partition.rules)
  return Evaluator(train_config.data, model, eval_config, placement=placement)


def make_predictor(model: t5.Transformer, eval_config: EvalConfig, decode_length: int,
                   placement: sharded.Placement | None = None) -> Predictor:
  """The decoding driver for `eval_config` on `placement`; max length defaults to
  `decode_length`, the longest target of the split(s) (the original's untruncated evaluation)."""
  max_len = eval_config.max_decode_length or decode_length
  return Predictor(model, max_decode_length=max_len, num_beams=eval_config.num_beams, alpha=eval_config.alpha,
                   placement=placement)
