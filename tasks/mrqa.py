"""MRQA 2019 as SeqIO tasks for the paper's domain-shift study (Table 1): train on SQuAD,
select on SQuAD dev, score zero-shot on six out-of-domain dev sets.

Format: T5's SQuAD text format, which has no task name (so it is already "taskless"):
`question: <q> context: <c>` -> the first gold answer (training); evaluation keeps every
gold answer and scores SQuAD-normalised exact match and token F1, max over the answers.

Data: TFDS `mrqa/<config>` by default (SQuAD: train/validation; the out-of-domain sets'
dev data is TFDS's `test` split, exposed here as `validation`). Offline: set
`PTJ_MRQA_DIR` (or `set_data_dir`) to a folder holding the official MRQA files as
downloaded, `<dir>/train/SQuAD.jsonl.gz` and `<dir>/dev/<Name>.jsonl.gz`.

Tasks: `mrqa_squad` (train, validation) and `mrqa_<name>` (validation) for the names in
`OUT_OF_DOMAIN`; `domain_shift_evaluator` (gin) is the training eval hook of Table 1.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import seqio
import tensorflow as tf

import gin
from prompt_tuning_jax.text import jsonl
from prompt_tuning_jax.text import vocab as vocab_lib
from prompt_tuning_jax.evaluators import superglue_metrics
from prompt_tuning_jax.tasks import sources, superglue

ENV_DATA_DIR = "PTJ_MRQA_DIR"
# name -> (TFDS config, {our split: TFDS split}, official file name)
DATASETS: dict[str, tuple[str, dict[str, str], str]] = {
    "squad": ("squad", {"train": "train", "validation": "validation"}, "SQuAD.jsonl.gz"),
    "textbookqa": ("textbook_qa", {"validation": "test"}, "TextbookQA.jsonl.gz"),
    "bioasq": ("bio_asq", {"validation": "test"}, "BioASQ.jsonl.gz"),
    "race": ("race", {"validation": "test"}, "RACE.jsonl.gz"),
    "relationextraction": ("relation_extraction", {"validation": "test"}, "RelationExtraction.jsonl.gz"),
    "duorc": ("duo_rc", {"validation": "test"}, "DuoRC.ParaphraseRC.jsonl.gz"),
    "drop": ("drop", {"validation": "test"}, "DROP.jsonl.gz"),
}
OUT_OF_DOMAIN = ("textbookqa", "bioasq", "race", "relationextraction", "duorc", "drop")
TFDS_VERSION = "1.0.0"
_OFFICIAL_SPLIT = {"train": "train", "validation": "dev"}
_settings: dict[str, str | None] = {"data_dir": None}


class MrqaDataError(ValueError):
  """A local MRQA file is missing or malformed (the message names file and line)."""


def task_name(name: str) -> str:
  return f"mrqa_{name}"


def set_data_dir(path: str | os.PathLike | None) -> None:
  """Read the official .jsonl.gz files from `path` instead of TFDS (None: back to TFDS)."""
  _settings["data_dir"] = None if path is None else str(path)


def get_data_dir() -> str | None:
  return _settings["data_dir"] or os.environ.get(ENV_DATA_DIR) or None


# ---------------------------------------------------------------------------- local files

def read_official(path: str | os.PathLike) -> list[dict[str, Any]]:
  """An official MRQA .jsonl.gz (header line, then one context per line) -> flat rows
  {'qid', 'question', 'context', 'answers'}, one per question, in file order."""
  path = Path(path)
  if not path.exists():
    raise MrqaDataError(f"MRQA file {path} not found (expected the official layout "
                        f"<dir>/{{train,dev}}/<Name>.jsonl.gz, set by ${ENV_DATA_DIR})")
  rows = []
  for n, record in jsonl.iter_jsonl(path, error=MrqaDataError):  # errors name file:line
    if "header" in record:
      continue
    rows += _context_rows(record, f"{path}:{n}")
  if not rows:
    raise MrqaDataError(f"{path}: no questions")
  return rows


def _context_rows(record: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
  """One official context record -> its question rows; field types checked, naming `where`."""
  context, qas = record.get("context"), record.get("qas")
  if not isinstance(context, str) or not isinstance(qas, list):
    raise MrqaDataError(f"{where}: not an MRQA context record (needs a string 'context' and a list 'qas')")
  rows = []
  for qa in qas:
    answers = qa.get("answers") if isinstance(qa, dict) else None
    if (not isinstance(qa, dict) or not isinstance(qa.get("question"), str) or "qid" not in qa
        or not isinstance(answers, list) or not all(isinstance(a, str) for a in answers)):
      raise MrqaDataError(f"{where}: each of 'qas' needs 'qid', a string 'question' and a list of string "
                          f"'answers', found {qa!r:.80}")
    rows.append({"qid": str(qa["qid"]), "question": qa["question"], "context": context, "answers": answers})
  return rows


def rows_to_dataset(rows: Sequence[Mapping[str, Any]]) -> tf.data.Dataset:
  """Flat rows -> the TFDS mrqa feature names we use (answers ragged)."""
  answers = tf.RaggedTensor.from_row_lengths(
      tf.constant([a for r in rows for a in r["answers"]], tf.string, [sum(len(r["answers"]) for r in rows)]),
      tf.constant([len(r["answers"]) for r in rows], tf.int64, [len(rows)]))
  return tf.data.Dataset.from_tensor_slices({
      "qid": tf.constant([r["qid"] for r in rows], tf.string), "question": tf.constant([r["question"] for r in rows]),
      "context": tf.constant([r["context"] for r in rows]), "answers": answers})


def _dataset_fn(name: str) -> Callable[..., tf.data.Dataset]:
  tfds_config, splits, file_name = DATASETS[name]

  def load(split: str, shuffle_files: bool = False, seed: int | None = None) -> tf.data.Dataset:
    if split not in splits:
      raise ValueError(f"task {task_name(name)!r} has splits {sorted(splits)}, not {split!r}")
    local = get_data_dir()
    if local:
      return rows_to_dataset(read_official(Path(local) / _OFFICIAL_SPLIT[split] / file_name))
    import tensorflow_datasets as tfds
    ds = tfds.load(f"mrqa/{tfds_config}:{TFDS_VERSION}", split=splits[split], shuffle_files=shuffle_files,
                   data_dir=sources.get_tfds_data_dir(), read_config=tfds.ReadConfig(shuffle_seed=seed))
    return ds.map(lambda x: {k: x[k] for k in ("qid", "question", "context", "answers")})

  return load


# ------------------------------------------------------------------ text, postprocess, metric

@seqio.map_over_dataset
def squad_text(x: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  """T5's SQuAD format: 'question: <q> context: <c>' -> the first answer; all answers kept."""
  return {"inputs": tf.strings.join(["question:", x["question"], "context:", x["context"]], separator=" "),
          "targets": x["answers"][0], "answers": x["answers"], "qid": x["qid"]}


def qa_postprocess(output: Any, example: Mapping[str, Any] | None = None, is_target: bool = False) -> Any:
  """Prediction -> its text; target -> every gold answer (for the max over answers)."""
  if is_target:
    return [superglue._text(a) for a in example["answers"]]
  return superglue._text(output)


def squad_metric(targets: Sequence[Sequence[str]], predictions: Sequence[str]) -> dict[str, float]:
  """SQuAD-normalised exact match and token F1 (percent), max over each question's answers."""
  return superglue_metrics.record_scores(targets, predictions)


def _add_task(name: str, vocabulary: seqio.Vocabulary) -> None:
  full = task_name(name)
  if full in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(full)
  seqio.TaskRegistry.add(
      full, source=seqio.FunctionDataSource(_dataset_fn(name), splits=tuple(DATASETS[name][1])),
      preprocessors=[squad_text, seqio.preprocessors.tokenize, seqio.CacheDatasetPlaceholder(),
                     seqio.preprocessors.append_eos_after_trim],
      output_features=superglue.output_features(vocabulary), postprocess_fn=qa_postprocess,
      metric_fns=[squad_metric])


def register_mrqa() -> None:
  """Registers `mrqa_<name>` for every name in DATASETS (re-registering is safe)."""
  vocabulary = vocab_lib.load_vocabulary()
  for name in DATASETS:
    _add_task(name, vocabulary)


@gin.configurable
def domain_shift_evaluator(train_config: Any, model: Any, *, targets: Sequence[str] = OUT_OF_DOMAIN,
                           mode: str = "greedy") -> Callable[[Any, int], dict[str, float]]:
  """Eval hook of Table 1: SQuAD dev (early stopping reads it) plus each out-of-domain dev
  set zero-shot, its metrics prefixed '<name>/' (e.g. `eval/bioasq/f1`)."""
  import dataclasses

  from prompt_tuning_jax.evaluators import task_evaluator
  source = task_evaluator.make_train_evaluator(train_config, model, mode=mode)
  others = {n: task_evaluator.Evaluator(dataclasses.replace(train_config.data, mixture_or_task_name=task_name(n)),
                                        model, mode=mode) for n in targets}

  def evaluate(params: Any, step: int) -> dict[str, float]:
    scores = dict(source(params, step))
    for n, ev in others.items():
      scores.update({f"{n}/{k}": v for k, v in ev(params, step).items()})
    return scores

  return evaluate


register_mrqa()
