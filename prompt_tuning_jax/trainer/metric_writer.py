"""Scalars to `<model_dir>/metrics.jsonl` and TensorBoard, written by the primary host only."""
from __future__ import annotations

import json
import math
import os
from typing import Mapping


class MetricsWriter:
  def __init__(self, model_dir: str, *, enabled: bool = True, tensorboard: bool = True):
    self.enabled = enabled
    self.path = os.path.join(model_dir, "metrics.jsonl")
    self._tb = None
    if enabled and tensorboard:
      from clu import metric_writers  # TensorFlow summary writer underneath
      self._tb = metric_writers.SummaryWriter(os.path.join(model_dir, "tensorboard"))

  def write(self, step: int, scalars: Mapping[str, float], *, prefix: str) -> None:
    if not self.enabled:
      return
    values = {f"{prefix}/{k}": float(v) for k, v in scalars.items()
              if isinstance(v, (int, float)) or getattr(v, "shape", None) == ()}
    # Strict JSON: NaN/Inf become null, and the keys that were non-finite are listed.
    record = {"step": step, **{k: v if math.isfinite(v) else None for k, v in values.items()}}
    nonfinite = sorted(k for k, v in values.items() if not math.isfinite(v))
    if nonfinite:
      record[f"{prefix}/nonfinite"] = nonfinite
    with open(self.path, "a") as f:
      f.write(json.dumps(record, allow_nan=False) + "\n")
    if self._tb is not None:
      self._tb.write_scalars(step, values)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.flush()
      self._tb.close()
