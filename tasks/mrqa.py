"""SQuAD and MRQA 2019 as SeqIO tasks for the paper's domain-shift study (Table 1): train
on SQuAD, select on SQuAD dev F1 (paper footnote 11), score zero-shot on six out-of-domain
dev sets.

Format: T5's `squad` preprocessor exactly (t5.data.preprocessors.squad, which the paper's
appendix A.3 names for SQuAD and MRQA): question, context and every answer get spaces
around each punctuation character and runs of whitespace collapsed to one space
(`pad_punctuation`), then `question: <q> context: <c>` -> the first padded answer; evaluation
keeps every padded answer and scores SQuAD-normalised EM and token F1, max over the answers.
Tested byte for byte against t5==0.9.4 (tests/tasks/test_mrqa.py).

Data, as the paper (appendix A.3): SQuAD from TFDS `squad/v1.1:3.0.0` (offline:
`PTJ_SQUAD_DIR` / `set_squad_dir`, a folder holding the official `train-v1.1.json` and
`dev-v1.1.json`, the files TFDS builds it from); the out-of-domain sets are the dev files the
MRQA shared task distributes, from TFDS `mrqa/<config>` (their `test` split, exposed here as
`validation`) or, offline, `PTJ_MRQA_DIR` (or `set_data_dir`) = a folder holding them as
downloaded, `<dir>/dev/<Name>.jsonl.gz`.

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
ENV_SQUAD_DIR = "PTJ_SQUAD_DIR"
SQUAD_TFDS = "squad/v1.1:3.0.0"  # the paper's SQuAD (appendix A.3), as T5's squad_v010_allanswers
SQUAD_FILES = {"train": "train-v1.1.json", "validation": "dev-v1.1.json"}
SQUAD_SPLITS = ("train", "validation")
# out-of-domain name -> (TFDS mrqa config, {our split: TFDS split}, official file name)
DATASETS: dict[str, tuple[str, dict[str, str], str]] = {
    "textbookqa": ("textbook_qa", {"validation": "test"}, "TextbookQA.jsonl.gz"),
    "bioasq": ("bio_asq", {"validation": "test"}, "BioASQ.jsonl.gz"),
    "race": ("race", {"validation": "test"}, "RACE.jsonl.gz"),
    "relationextraction": ("relation_extraction", {"validation": "test"}, "RelationExtraction.jsonl.gz"),
    "duorc": ("duo_rc", {"validation": "test"}, "DuoRC.ParaphraseRC.jsonl.gz"),
    "drop": ("drop", {"validation": "test"}, "DROP.jsonl.gz"),
}
OUT_OF_DOMAIN = ("textbookqa", "bioasq", "race", "relationextraction", "duorc", "drop")
TFDS_VERSION = "1.0.0"
SQUAD_HOST, MRQA_HOST = "rajpurkar.github.io", "s3.us-east-2.amazonaws.com"  # where TFDS downloads each from
_OFFICIAL_SPLIT = {"train": "train", "validation": "dev"}
_settings: dict[str, str | None] = {"data_dir": None, "squad_dir": None}


class MrqaDataError(ValueError):
  """A local MRQA file is missing or malformed (the message names file and line)."""


def task_name(name: str) -> str:
  return f"mrqa_{name}"


def set_data_dir(path: str | os.PathLike | None) -> None:
  """Read the official .jsonl.gz files from `path` instead of TFDS (None: back to TFDS)."""
  _settings["data_dir"] = None if path is None else str(path)


def get_data_dir() -> str | None:
  return _settings["data_dir"] or os.environ.get(ENV_DATA_DIR) or None


def set_squad_dir(path: str | os.PathLike | None) -> None:
  """Read SQuAD v1.1 from the official `{train,dev}-v1.1.json` in `path` instead of TFDS."""
  _settings["squad_dir"] = None if path is None else str(path)


def get_squad_dir() -> str | None:
  return _settings["squad_dir"] or os.environ.get(ENV_SQUAD_DIR) or None


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


def read_squad_json(path: str | os.PathLike) -> list[dict[str, Any]]:
  """An official SQuAD v1.1 file (`{"data": [{"paragraphs": [{"context", "qas": [{"id",
  "question", "answers": [{"text"}]}]}]}]}`) -> flat rows, one per question, in file order."""
  import json
  path = Path(path)
  if not path.exists():
    raise MrqaDataError(f"SQuAD file {path} not found (expected the official train-v1.1.json / dev-v1.1.json, "
                        f"set by ${ENV_SQUAD_DIR})")
  try:
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    rows = [{"qid": str(qa["id"]), "question": qa["question"], "context": par["context"],
             "answers": [a["text"] for a in qa["answers"]]}
            for article in data for par in article["paragraphs"] for qa in par["qas"]]
  except (ValueError, KeyError, TypeError) as e:
    raise MrqaDataError(f"{path}: not an official SQuAD v1.1 file ({type(e).__name__}: {e})") from None
  if not rows or not all(isinstance(r["question"], str) and isinstance(r["context"], str) and r["answers"]
                         and all(isinstance(a, str) for a in r["answers"]) for r in rows):
    raise MrqaDataError(f"{path}: needs questions with a string question, context and at least one answer text")
  return rows


def rows_to_dataset(rows: Sequence[Mapping[str, Any]]) -> tf.data.Dataset:
  """Flat rows -> the TFDS mrqa feature names we use (answers ragged)."""
  answers = tf.RaggedTensor.from_row_lengths(
      tf.constant([a for r in rows for a in r["answers"]], tf.string, [sum(len(r["answers"]) for r in rows)]),
      tf.constant([len(r["answers"]) for r in rows], tf.int64, [len(rows)]))
  return tf.data.Dataset.from_tensor_slices({
      "qid": tf.constant([r["qid"] for r in rows], tf.string), "question": tf.constant([r["question"] for r in rows]),
      "context": tf.constant([r["context"] for r in rows]), "answers": answers})


def _squad_dataset(split: str, shuffle_files: bool = False, seed: int | None = None) -> tf.data.Dataset:
  """SQuAD v1.1 (TFDS squad/v1.1:3.0.0, or the official JSON files) in our row schema."""
  if split not in SQUAD_SPLITS:
    raise ValueError(f"task 'mrqa_squad' has splits {list(SQUAD_SPLITS)}, not {split!r}")
  local = get_squad_dir()
  if local:
    return rows_to_dataset(read_squad_json(Path(local) / SQUAD_FILES[split]))
  check_prepared("squad")
  import tensorflow_datasets as tfds
  ds = tfds.load(SQUAD_TFDS, split=split, shuffle_files=shuffle_files, data_dir=sources.get_tfds_data_dir(),
                 read_config=tfds.ReadConfig(shuffle_seed=seed))
  return ds.map(lambda x: {"qid": x["id"], "question": x["question"], "context": x["context"],
                           "answers": x["answers"]["text"]})


def check_prepared(name: str) -> None:
  """Raises MrqaDataError in seconds when set `name` reads TFDS and TFDS cannot serve it offline
  (not prepared, no download); nothing when the official files are read instead."""
  if name == "squad":
    if not get_squad_dir():
      sources.check_tfds_prepared(
          SQUAD_TFDS, sources.get_tfds_data_dir(), host=SQUAD_HOST, error=MrqaDataError,
          local_setting=f"{ENV_SQUAD_DIR} (or set_squad_dir) at a folder holding the official "
                        f"{' and '.join(SQUAD_FILES.values())}")
  elif not get_data_dir():
    sources.check_tfds_prepared(
        f"mrqa/{DATASETS[name][0]}:{TFDS_VERSION}", sources.get_tfds_data_dir(), host=MRQA_HOST,
        error=MrqaDataError, local_setting=f"{ENV_DATA_DIR} (or set_data_dir) at a folder in the official MRQA "
                                           f"layout <dir>/dev/{DATASETS[name][2]}")  # out-of-domain sets: dev only


class MrqaSource(seqio.FunctionDataSource):
  """One MRQA set's loader (TFDS or the official files), with the offline check the commands
  run before any model loads (`check_prepared(splits)`, as `sources.SuperGlueSource`)."""

  def __init__(self, name: str):
    self._name = name
    super().__init__(_dataset_fn(name), splits=task_splits(name))

  def check_prepared(self, splits: Sequence[str]) -> None:
    if any(s in self.splits for s in splits):
      check_prepared(self._name)


def _dataset_fn(name: str) -> Callable[..., tf.data.Dataset]:
  if name == "squad":
    return _squad_dataset
  tfds_config, splits, file_name = DATASETS[name]

  def load(split: str, shuffle_files: bool = False, seed: int | None = None) -> tf.data.Dataset:
    if split not in splits:
      raise ValueError(f"task {task_name(name)!r} has splits {sorted(splits)}, not {split!r}")
    local = get_data_dir()
    if local:
      return rows_to_dataset(read_official(Path(local) / _OFFICIAL_SPLIT[split] / file_name))
    check_prepared(name)
    import tensorflow_datasets as tfds
    ds = tfds.load(f"mrqa/{tfds_config}:{TFDS_VERSION}", split=splits[split], shuffle_files=shuffle_files,
                   data_dir=sources.get_tfds_data_dir(), read_config=tfds.ReadConfig(shuffle_seed=seed))
    return ds.map(lambda x: {k: x[k] for k in ("qid", "question", "context", "answers")})

  return load


# ------------------------------------------------------------------ text, postprocess, metric

def pad_punctuation(text: tf.Tensor) -> tf.Tensor:
  """A space on each side of every ASCII punctuation character, then every run of whitespace
  as one space (T5's SQuAD text normalisation; the same two regexes)."""
  return tf.strings.regex_replace(tf.strings.regex_replace(text, r"([[:punct:]])", r" \1 "), r"\s+", " ")


def join_words(parts: Sequence[tf.Tensor | str]) -> tf.Tensor:
  """Parts joined by one space, runs of whitespace collapsed (T5's `_string_join`)."""
  return tf.strings.regex_replace(tf.strings.join(parts, separator=" "), r"\s+", " ")


@seqio.map_over_dataset
def squad_text(x: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  """T5's `squad` format: 'question: <q> context: <c>' over punctuation-padded text -> the first
  padded answer; all padded answers kept for the metric."""
  answers = pad_punctuation(x["answers"])
  inputs = join_words(["question:", pad_punctuation(x["question"]), "context:", pad_punctuation(x["context"])])
  return {"inputs": inputs, "targets": answers[0], "answers": answers, "qid": x["qid"]}


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
      full, source=MrqaSource(name),
      preprocessors=[squad_text, seqio.preprocessors.tokenize, seqio.CacheDatasetPlaceholder(),
                     seqio.preprocessors.append_eos_after_trim],
      output_features=superglue.output_features(vocabulary), postprocess_fn=qa_postprocess,
      metric_fns=[squad_metric])


def task_splits(name: str) -> tuple[str, ...]:
  return SQUAD_SPLITS if name == "squad" else tuple(DATASETS[name][1])


def register_mrqa() -> None:
  """Registers `mrqa_squad` and `mrqa_<name>` for every out-of-domain name (re-registering is safe)."""
  vocabulary = vocab_lib.load_vocabulary()
  for name in ("squad",) + OUT_OF_DOMAIN:
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
