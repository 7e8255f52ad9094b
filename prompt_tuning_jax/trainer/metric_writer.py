"""Scalars to `<model_dir>/metrics.jsonl` and TensorBoard, written by the primary host only."""
from __future__ import annotations

import json
import os
from typing import Mapping


class MetricsWriter:
  def __init__(self, model_dir: str, *, enabled: bool = True, tensorboard: bool = True):
    self.enabled = enabled
    self.path = os.path.join(model_dir, "metrics.jsonl")
    self._tb = None
    if enabled and tensorboard:
      from prompt_tuning_jax import quiet  # pylint: disable=g-import-not-at-top
      quiet.import_tensorflow()  # the summary writer underneath is TensorFlow's
      from clu import metric_writers  # pylint: disable=g-import-not-at-top
      self._tb = metric_writers.SummaryWriter(os.path.join(model_dir, "tensorboard"))

  def write(self, step: int, scalars: Mapping[str, float], *, prefix: str) -> None:
    if not self.enabled:
      return
    values = {f"{prefix}/{k}": float(v) for k, v in scalars.items()
              if isinstance(v, (int, float)) or getattr(v, "shape", None) == ()}
    with open(self.path, "a") as f:
      f.write(json.dumps({"step": step, **values}) + "\n")
    if self._tb is not None:
      self._tb.write_scalars(step, values)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.flush()
      self._tb.close()
