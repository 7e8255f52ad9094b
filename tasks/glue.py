"""GLUE paraphrase tasks for the paper's zero-shot transfer (Table 2): QQP <-> MRPC.

T5's GLUE text format is `<task> <field>: <text> <field>: <text>`, fields sorted by
name: `qqp question1: ... question2: ...` -> not_duplicate / duplicate and
`mrpc sentence1: ... sentence2: ...` -> not_equivalent / equivalent (TFDS class order).
The paper's "taskless" form drops the leading task name, so these tasks build the text
without it.

Registered (data from TFDS `glue/qqp`, `glue/mrpc`, prepared under $PTJ_TFDS_DATA_DIR or
TFDS's default data dir):
  glue_qqp_taskless, glue_mrpc_taskless        train / validation / test
  glue_mrpc_from_qqp_taskless                  MRPC validation, MRPC's text, QQP's labels
  glue_qqp_from_mrpc_taskless                  QQP validation, QQP's text, MRPC's labels
The two datasets name their classes differently; a model trained on one answers in
that one's words, so the `_from_` tasks score it on the other with the words
translated (label 1 = duplicate = equivalent). Metrics: accuracy and F1 of class 1.

`transfer_evaluator` (gin) is the training eval hook of the transfer runs: the source's
dev metrics as usual plus the target's under `target/` (e.g. `eval/target/f1`).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping

import seqio
import tensorflow as tf

import gin
from prompt_tuning_jax.text import vocab as vocab_lib
from prompt_tuning_jax.evaluators import superglue_metrics
from prompt_tuning_jax.tasks import sources, superglue

LABEL_NAMES: dict[str, tuple[str, str]] = {
    "qqp": ("not_duplicate", "duplicate"),
    "mrpc": ("not_equivalent", "equivalent"),
}
FIELDS: dict[str, tuple[str, str]] = {
    "qqp": ("question1", "question2"),
    "mrpc": ("sentence1", "sentence2"),
}
TFDS_NAMES = {"qqp": "glue/qqp:2.0.0", "mrpc": "glue/mrpc:2.0.0"}
TRANSFER_PAIRS = (("qqp", "mrpc"), ("mrpc", "qqp"))


def task_name(task: str, labels_from: str | None = None) -> str:
  """'glue_qqp_taskless', or 'glue_mrpc_from_qqp_taskless' with QQP's label words."""
  middle = f"_from_{labels_from}" if labels_from else ""
  return f"glue_{task}{middle}_taskless"


@seqio.map_over_dataset
def paraphrase_text(x: Mapping[str, tf.Tensor], task: str, label_task: str) -> dict[str, tf.Tensor]:
  """GLUE row -> taskless 'f1: <text> f2: <text>', target in `label_task`'s words."""
  parts = []
  for field in FIELDS[task]:
    parts += [field + ":", x[field]]
  names = tf.constant(list(LABEL_NAMES[label_task]))
  target = tf.where(x["label"] < 0, tf.constant(superglue.UNK_TARGET),
                    tf.gather(names, tf.maximum(x["label"], 0)))
  return {"inputs": tf.strings.join(parts, separator=" "), "targets": target,
          "label": x["label"], "idx": x["idx"]}


def paraphrase_metric(targets, predictions) -> dict[str, float]:
  """Accuracy and F1 of class 1 (duplicate / equivalent); invalid outputs count as wrong."""
  return {"accuracy": superglue_metrics.accuracy(targets, predictions),
          "f1": superglue_metrics.binary_f1(targets, predictions)}


def _add_task(name: str, task: str, label_task: str, splits: tuple[str, ...] | None,
              vocabulary: seqio.Vocabulary) -> None:
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
      name,
      source=seqio.TfdsDataSource(TFDS_NAMES[task], splits=splits,
                                  tfds_data_dir=sources.get_tfds_data_dir()),
      preprocessors=[functools.partial(paraphrase_text, task=task, label_task=label_task),
                     seqio.preprocessors.tokenize, seqio.CacheDatasetPlaceholder(),
                     seqio.preprocessors.append_eos_after_trim],
      output_features=superglue.output_features(vocabulary),
      postprocess_fn=functools.partial(superglue.classification_postprocess,
                                       label_names=LABEL_NAMES[label_task]),
      metric_fns=[paraphrase_metric])


def register_glue() -> None:
  """Registers the four tasks above (re-registering is safe)."""
  vocabulary = vocab_lib.load_vocabulary()
  for task in FIELDS:
    _add_task(task_name(task), task, task, None, vocabulary)
  for source, target in TRANSFER_PAIRS:
    _add_task(task_name(target, labels_from=source), target, source, ("validation",), vocabulary)


@gin.configurable
def transfer_evaluator(train_config: Any, model: Any, eval_config: Any = None, *,
                       target_task: str) -> Callable[[Any, int], dict[str, float]]:
  """Eval hook: the run's own task (early stopping reads it) plus `target_task` zero-shot,
  its metrics prefixed 'target/'. Same signature as `task_evaluator.make_train_evaluator`
  (eval_config: an `EvalConfig`, default greedy decoding)."""
  from prompt_tuning_jax.evaluators import task_evaluator
  from prompt_tuning_jax.evaluators.config import EvalConfig
  eval_config = eval_config or EvalConfig()
  source = task_evaluator.make_train_evaluator(train_config, model, eval_config)
  target_data = dataclasses.replace(train_config.data, mixture_or_task_name=target_task)
  target = task_evaluator.Evaluator(target_data, model, eval_config)

  def evaluate(params: Any, step: int) -> dict[str, float]:
    scores = dict(source(params, step))
    scores.update({f"target/{k}": v for k, v in target(params, step).items()})
    return scores

  return evaluate


register_glue()
