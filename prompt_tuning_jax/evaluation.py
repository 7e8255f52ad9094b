"""Evaluate a (prompted) model on a SeqIO task's eval split with the task's own metrics.

`Evaluator` tokenizes the split once, then each call decodes it in fixed-size batches
with one compiled function, maps the text back through the task's postprocessor and
applies the task's metric functions. It is the training loop's eval hook and the
library behind `python -m prompt_tuning_jax.eval`.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
import seqio

from prompt_tuning_jax import data, decoding, t5

Array = jax.Array


def _strip_after_eos(row: np.ndarray) -> list[int]:
  ids = []
  for t in row.tolist():
    if t == decoding.EOS_ID or t == 0:
      break
    ids.append(t)
  return ids


def exact_match_accuracy(targets: list[Any], predictions: list[Any]) -> dict[str, float]:
  return {"accuracy": 100.0 * float(np.mean([t == p for t, p in zip(targets, predictions)]))}


class Evaluator:
  """Greedy-decoding evaluation of one task's eval split."""

  def __init__(self, data_config: data.DataConfig, model: t5.Transformer, *, batch_size: int | None = None,
               split: str | None = None, max_decode_length: int | None = None):
    self.task = data.get_task(data_config)
    if not isinstance(self.task, seqio.Task):
      raise ValueError(f"Evaluator takes a task, not the mixture {data_config.mixture_or_task_name!r}")
    self.examples = data.eval_examples(data_config, split)
    self.batch_size = batch_size or data_config.batch_size
    self.input_length = data_config.task_feature_lengths["inputs"]
    self.max_decode_length = max_decode_length or data_config.task_feature_lengths["targets"]
    self.vocab = self.task.output_features["targets"].vocabulary
    self._decode = jax.jit(lambda params, tokens: decoding.greedy_decode(model, params, tokens,
                                                                         self.max_decode_length))

  def _input_batches(self):
    for start in range(0, len(self.examples), self.batch_size):
      chunk = self.examples[start:start + self.batch_size]
      tokens = np.zeros((self.batch_size, self.input_length), np.int32)
      for i, ex in enumerate(chunk):
        ids = np.asarray(ex["inputs"])[: self.input_length]
        tokens[i, : len(ids)] = ids
      yield chunk, tokens

  def predict(self, params: Any) -> list[str]:
    texts = []
    for chunk, tokens in self._input_batches():
      out, _ = self._decode(params, tokens)
      out = np.asarray(jax.device_get(out))
      texts += [self.vocab.decode(_strip_after_eos(out[i])) for i in range(len(chunk))]
    return texts

  def __call__(self, params: Any, step: int | None = None) -> dict[str, float]:
    del step
    predictions = self.predict(params)
    post = self.task.postprocess_fn
    preds = [post(p, example=ex, is_target=False) for p, ex in zip(predictions, self.examples)]
    targets = [post(_text(ex["targets_pretokenized"]), example=ex, is_target=True) for ex in self.examples]
    metric_fns: list[Callable] = list(self.task.predict_metric_fns) or [exact_match_accuracy]
    scores: dict[str, float] = {}
    for fn in metric_fns:
      scores.update({k: float(getattr(v, "value", v)) for k, v in fn(targets, preds).items()})
    return scores


def _text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def make_train_evaluator(train_config: Any, model: t5.Transformer) -> Evaluator:
  """The training loop's eval hook: the run's task, eval split and batch size."""
  return Evaluator(train_config.data, model)
