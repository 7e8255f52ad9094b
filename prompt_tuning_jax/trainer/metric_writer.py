"""Scalars to `<model_dir>/metrics.jsonl` and TensorBoard, written by the primary host only.

Local runs append a line per write. Cloud Storage has no append, so for gs:// the lines
are kept and the whole file is rewritten at `flush` (each checkpoint save, at most every
`remote_flush_s` otherwise, and on close); TensorBoard events are written to a local
staging folder by TensorFlow and uploaded at the same moments (TF's GFile cannot reach a
storage emulator, and one filesystem layer handles every gs:// byte).

A kill can cut the last line short; a resumed run drops that partial line (with a warning)
before appending, so the file stays one JSON object per line. A run resumed from step S also
drops the lines after S (TensorBoard's "orphaned" events): they came from steps the resumed
run trains again, so each step keeps one line.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from typing import Mapping

from prompt_tuning_jax.checkpoints import fs


class MetricsWriter:
  def __init__(self, model_dir: str, *, enabled: bool = True, tensorboard: bool = True,
               remote_flush_s: float = 30.0, resume_step: int | None = None):
    """`resume_step`: the step the run restarts from (0: from scratch); lines after it, and
    every line when it is 0, are dropped. None keeps every line."""
    self.enabled = enabled
    self.path = fs.join(model_dir, "metrics.jsonl")
    self._remote = fs.is_remote(model_dir)
    self._tb_dir = fs.join(model_dir, "tensorboard")
    self._lines: list[str] = []
    self._flush_s, self._flushed_at = remote_flush_s, time.time()
    self._tb, self._staging = None, None
    if enabled and fs.exists(self.path):  # a resumed run keeps its history
      lines = _repaired(self.path)  # a local file is repaired in place
      if resume_step is not None:
        lines = _drop_orphans(self.path, lines, resume_step)
      self._lines = lines if self._remote else []
    if enabled and tensorboard:
      from prompt_tuning_jax.text import quiet  # pylint: disable=g-import-not-at-top
      quiet.import_tensorflow()  # the summary writer underneath is TensorFlow's
      from clu import metric_writers  # pylint: disable=g-import-not-at-top
      self._staging = tempfile.mkdtemp(prefix="ptj-tb-") if self._remote else None
      self._tb = metric_writers.SummaryWriter(self._staging or self._tb_dir)

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
    line = json.dumps(record, allow_nan=False) + "\n"
    if self._remote:
      self._lines.append(line)
    else:
      with open(self.path, "a") as f:
        f.write(line)
    if self._tb is not None:
      self._tb.write_scalars(step, values)
    if self._remote and time.time() - self._flushed_at >= self._flush_s:
      self.flush()

  def flush(self) -> None:
    """Make everything written so far visible under MODEL_DIR."""
    if not self.enabled:
      return
    if self._tb is not None:
      self._tb.flush()
    if self._remote:
      fs.atomic_write(self.path, "".join(self._lines))
      if self._staging is not None:
        fs.upload_tree(self._staging, self._tb_dir)
      self._flushed_at = time.time()

  def close(self) -> None:
    self.flush()
    if self._tb is not None:
      self._tb.close()
      if self._staging is not None:
        fs.upload_tree(self._staging, self._tb_dir)
        shutil.rmtree(self._staging, ignore_errors=True)


def _repaired(path: str) -> list[str]:
  """The lines of a metrics file with a partial last line (a kill mid-write) dropped; a
  local file is cut back in place. A complete last line missing only its newline is kept."""
  text = fs.read_text(path)
  if not text or text.endswith("\n"):
    return text.splitlines(keepends=True)
  lines = text.splitlines(keepends=True)
  last = lines.pop()
  try:
    complete = isinstance(json.loads(last), dict)
  except ValueError:
    complete = False
  if complete:
    lines.append(last + "\n")
  else:
    logging.warning("%s: dropping its last line, cut short by an interrupted run (%d bytes: %.80r)", path,
                    len(last.encode()), last)
  if not fs.is_remote(path):
    with open(path, "ab" if complete else "r+b") as f:
      if complete:
        f.write(b"\n")
      else:
        f.truncate(len(text.encode()) - len(last.encode()))
      f.flush()
      os.fsync(f.fileno())
  return lines


def _drop_orphans(path: str, lines: list[str], resume_step: int) -> list[str]:
  """`lines` less those a run resumed from `resume_step` writes again (steps after it; all
  of them from step 0); the file is rewritten whole when any go."""
  def orphaned(line: str) -> bool:
    try:
      step = json.loads(line).get("step")
    except (ValueError, AttributeError):
      return False  # not ours to judge: kept
    return isinstance(step, int) and (resume_step == 0 or step > resume_step)
  kept = [line for line in lines if not orphaned(line)]
  if len(kept) < len(lines):
    logging.warning("%s: dropping %d lines written after step %d, the step this run resumes from (they are "
                    "written again as it trains)", path, len(lines) - len(kept), resume_step)
    fs.atomic_write(path, "".join(kept))
  return kept
