"""The one place that exposes library constructors to gin (gin never reaches inside).

Gin binds frozen config dataclasses and leaf initializer factories; the library itself
stays gin-free and importable from a notebook.
"""
from __future__ import annotations

from typing import Sequence

import gin

from prompt_tuning_jax import (data, evaluation, optim, prompted, prompts, sharding, step, training,
                               vocab)
from prompt_tuning_jax.config import T5Config


def class_label_init(labels: Sequence[str], fallback: prompts.Initializer | None = None,
                     vocabulary_path: str | None = None) -> prompts.Initializer:
  """Class-label init from label strings (tokenized with the model's SentencePiece)."""
  ids = vocab.label_token_ids(vocab.load_vocabulary(vocabulary_path), list(labels))
  return prompts.class_labels(ids, fallback=fallback)


def build(cls):
  """Call a registered config class with its gin bindings (the CLIs' single use of gin)."""
  return gin.get_configurable(cls)()


def _register() -> None:
  for obj, module in (
      (T5Config, None), (data.DataConfig, None), (prompted.PromptConfig, None),
      (optim.OptimConfig, None), (step.LossConfig, None), (sharding.PartitionConfig, None),
      (training.EarlyStopping, None), (training.TrainConfig, None),
      (evaluation.make_train_evaluator, None),
      (prompts.uniform_symmetric, "prompts"), (prompts.uniform_zero_to_scale, "prompts"),
      (prompts.sampled_vocab, "prompts"), (prompts.from_file, "prompts"),
      (prompts.from_t5x_checkpoint, "prompts"), (class_label_init, "prompts"),
  ):
    gin.external_configurable(obj, module=module)


_register()
