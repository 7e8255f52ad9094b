"""Which prompt of a run folder (MODEL_DIR) to use, at which step, on which backbone.

A run folder holds the final prompt (`prompt.npy`, written when the run finishes), the
best one so far (`best/prompt.npy`, `best/best.json`), a numpy checkpoint at every save
(`numpy_checkpoints/checkpoint_<step>/`) and the train state (`train_state/<steps
trained>/`). Steps here are global, as T5X counts them: the backbone checkpoint's own step
plus the steps trained (the demo's 200 steps on its checkpoint_1500 end at step 1700).
"""
from __future__ import annotations

import ast
import dataclasses
import json
import os
import re

import numpy as np

from prompt_tuning_jax.checkpoints import fs
from prompt_tuning_jax.prompt import NUMPY_PROMPT_FILE
from prompt_tuning_jax.prompt import files as prompt_files
from prompt_tuning_jax.prompt.files import FINAL_PROMPT, TRAIN_STATE_DIR, is_run_folder  # noqa: F401  (the layout)

BEST_DIR = "best"
BEST_RECORD = "best.json"
OPERATIVE_CONFIG = "config.gin"
_CHECKPOINT_NAME = re.compile(r"^checkpoint_(\d+)$")


class RunFolderError(ValueError):
  """The run folder has no prompt of the kind asked for (names what it has instead)."""


@dataclasses.dataclass(frozen=True)
class RunPrompt:
  """One prompt of a run: its file, global step and steps trained (None where unknown)."""
  path: str
  which: str  # "final", "best" or "checkpoint" (a numpy checkpoint)
  step: int | None
  steps_trained: int | None

  def describe(self) -> str:
    trained = "" if self.steps_trained is None else f", {self.steps_trained} steps trained"
    return f"{self.path} ({self.which}, step {self.step if self.step is not None else 'unknown'}{trained})"



def saved_steps(model_dir: str | os.PathLike) -> list[int]:
  """Global steps with a numpy checkpoint of the prompt, ascending."""
  folder = fs.join(os.fspath(model_dir), prompt_files.NUMPY_CHECKPOINTS_DIR)
  if not fs.isdir(folder):
    return []
  steps = [int(m.group(1)) for m in map(_CHECKPOINT_NAME.match, fs.listdir(folder)) if m]
  return sorted(s for s in steps if fs.isfile(prompt_files.numpy_checkpoint_path(model_dir, s)))


def _train_state_steps(model_dir: str) -> list[int]:
  folder = fs.join(model_dir, TRAIN_STATE_DIR)
  return sorted(int(n) for n in fs.listdir(folder) if n.isdigit()) if fs.isdir(folder) else []


def _best_record(model_dir: str) -> dict | None:
  path = fs.join(model_dir, BEST_DIR, BEST_RECORD)
  if not fs.isfile(path):
    return None
  try:
    record = json.loads(fs.read_text(path))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise RunFolderError(f"{path} is not valid JSON ({e}); the best prompt's step is unknown") from None
  if not isinstance(record, dict) or not all(isinstance(record.get(k), int) for k in ("step", "global_step")):
    raise RunFolderError(f"{path} lacks integer 'step' and 'global_step'; the best prompt's step is unknown")
  return record


def _final_step(model_dir: str, steps: list[int]) -> int | None:
  """The global step of the final prompt: the newest numpy checkpoint holding the same
  values (a finished run's last save and its export write the same prompt)."""
  final = prompt_files.load_npy(fs.join(model_dir, FINAL_PROMPT), allow_nonfinite=True)
  for step in reversed(steps):
    saved = prompt_files.load_npy(prompt_files.numpy_checkpoint_path(model_dir, step), allow_nonfinite=True)
    if saved.shape == final.shape and np.array_equal(saved, final, equal_nan=True):
      return step
  return None


def _steps_offset(model_dir: str, steps: list[int], final_step: int | None) -> int | None:
  """The backbone's own step (global step - steps trained), where the folder records it:
  in best.json, or as the newest save of a finished run, which wrote train_state/<steps
  trained> and numpy_checkpoints/checkpoint_<global step> together."""
  record = _best_record(model_dir)
  if record is not None:
    return record["global_step"] - record["step"]
  trained = _train_state_steps(model_dir)
  if final_step is not None and steps and final_step == steps[-1] and trained:
    return final_step - trained[-1]
  return None


def find_prompt(model_dir: str | os.PathLike, *, step: int | None = None, best: bool = False) -> RunPrompt:
  """The final prompt of a finished run; with `best`, the best one so far; with `step`,
  the one saved at that global step. Raises RunFolderError naming the steps that exist
  when the run has no such prompt (e.g. it has not finished)."""
  model_dir = os.fspath(model_dir)
  if best and step is not None:
    raise RunFolderError("choose one of --best and --step")
  steps = saved_steps(model_dir)
  listed = _list_steps(steps)
  if best:
    record = _best_record(model_dir)
    path = fs.join(model_dir, BEST_DIR, FINAL_PROMPT)
    if record is None or not fs.isfile(path):
      raise RunFolderError(f"{model_dir} has no best prompt ({fs.join(BEST_DIR, FINAL_PROMPT)} and "
                           f"{fs.join(BEST_DIR, BEST_RECORD)} are written when an evaluation improves on the "
                           f"EarlyStopping metric); {listed}")
    return RunPrompt(path, "best", record["global_step"], record["step"])
  final_step = _final_step(model_dir, steps) if fs.isfile(fs.join(model_dir, FINAL_PROMPT)) else None
  offset = _steps_offset(model_dir, steps, final_step)
  if step is not None:
    if step in steps:
      return RunPrompt(str(prompt_files.numpy_checkpoint_path(model_dir, step)), "checkpoint", step,
                       None if offset is None else step - offset)
    hint = ""
    if offset is not None and step + offset in steps:
      hint = f" (steps are global: {step} steps trained is --step={step + offset})"
    raise RunFolderError(f"{model_dir} has no prompt saved at step {step}{hint}; {listed}")
  if not fs.isfile(fs.join(model_dir, FINAL_PROMPT)):
    best_hint = ", or the best so far with --best" if _best_record(model_dir) is not None else ""
    raise RunFolderError(f"{model_dir} has no final prompt yet ({FINAL_PROMPT} is written when the run "
                         f"finishes); {listed}" + (f": export one with --step=N{best_hint}" if steps else ""))
  if final_step is None:
    raise RunFolderError(f"{fs.join(model_dir, FINAL_PROMPT)} matches none of the run's numpy checkpoints, so its "
                         f"step is unknown; {listed}: export one with --step=N")
  return RunPrompt(fs.join(model_dir, FINAL_PROMPT), "final", final_step,
                   None if offset is None else final_step - offset)


def _list_steps(steps: list[int]) -> str:
  if not steps:
    return f"no prompt checkpoint saved yet (none in {prompt_files.NUMPY_CHECKPOINTS_DIR}/)"
  shown = ", ".join(map(str, steps)) if len(steps) <= 12 else (
      ", ".join(map(str, steps[:5])) + f", ... ({len(steps) - 10} more), " + ", ".join(map(str, steps[-5:])))
  return f"saved steps: {shown}"


def backbone_path(model_dir: str | os.PathLike) -> str | None:
  """The run's INITIAL_CHECKPOINT_PATH, from the operative config it wrote (config.gin)."""
  return run_setting(model_dir, "initial_checkpoint_path")


def task_name(model_dir: str | os.PathLike) -> str | None:
  """The run's MIXTURE_OR_TASK_NAME, from its config.gin."""
  return run_setting(model_dir, "mixture_or_task_name")


def run_setting(model_dir: str | os.PathLike, parameter: str) -> str | None:
  """A string parameter bound in the run's config.gin; None without one."""
  path = fs.join(os.fspath(model_dir), OPERATIVE_CONFIG)
  if not fs.isfile(path):
    return None
  return operative_value(fs.read_text(path), parameter)


def operative_value(text: str, parameter: str) -> str | None:
  """The string bound to `<Configurable>.<parameter>` in an operative gin config, following
  one %MACRO reference; None when unbound or not a string literal. gin breaks a long
  binding after `=` with a backslash; the lines are joined first."""
  text = re.sub(r"\\\n[ \t]*", "", text)
  found = re.search(rf"^\s*[\w.]+\.{re.escape(parameter)}\s*=\s*(.+?)\s*$", text, re.M)
  if not found:
    return None
  value = found.group(1)
  if value.startswith("%"):
    macro = re.search(rf"^\s*{re.escape(value[1:])}\s*=\s*(.+?)\s*$", text, re.M)
    if not macro:
      return None
    value = macro.group(1)
  try:
    literal = ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return None
  return literal if isinstance(literal, str) else None


def base_model_name(model_dir: str | os.PathLike) -> str | None:
  """The PEFT `base_model_name_or_path` of the run's backbone (see `prompt_files.peft_base_model`)."""
  return prompt_files.peft_base_model(backbone_path(model_dir))
