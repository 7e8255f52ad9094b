"""`evaluate(EvalConfig)`: the eval command's one library call. One prompt: that prompt;
several: an ensemble; a mixture: each sub-task with its own prompt, in shared batches.

Progress goes to stderr as it happens (`progress=True`, the primary process only): one line
per stage (model read, each task evaluated) with the seconds since the start, so a long
first compile is not silence; stdout stays the metrics JSON."""
from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, Sequence

from prompt_tuning_jax.text import data, quiet
from prompt_tuning_jax.evaluators import ensemble, loading, sharded, task_evaluator
from prompt_tuning_jax.evaluators.config import EvalConfig
from prompt_tuning_jax.parallel import distributed

if TYPE_CHECKING:
  import seqio


class _Progress:
  """`[eval 12.3s] message` lines on stderr."""

  def __init__(self, enabled: bool):
    self.enabled = enabled and distributed.is_primary()
    self.start = time.monotonic()

  def __call__(self, message: str) -> None:
    if self.enabled:
      print(f"[eval {time.monotonic() - self.start:6.1f}s] {message}", file=sys.stderr, flush=True)


def evaluate(cfg: EvalConfig, placement: sharded.Placement | None = None, *,
             progress: bool = False) -> dict[str, Any]:
  """-> {task name: metrics}; writes metrics/predictions under cfg.output_dir if set."""
  say = _Progress(progress)
  task = data.get_task(cfg.data)
  names = [ensemble.parse_prompt_flag(p)[0] for p in cfg.model.prompts]
  mixture_ids = mixture_prompt_ids(task, names) if isinstance(task, quiet.import_seqio().Mixture) else None
  prompts = f" with {len(names)} prompt(s)" if names else " (no prompt)"
  say(f"reading the frozen model {cfg.model.checkpoint_path}{prompts}")
  loaded = loading.load_model(cfg.model, placement)
  split = cfg.split or cfg.data.eval_split
  if mixture_ids is not None:
    tasks = [t.name for t in task.tasks]
    say(f"evaluating mixture {task.name} ({len(tasks)} tasks, split {split!r}, mode {cfg.mode}): "
        "reading examples, compiling, decoding")
    multi = task_evaluator.MultiTaskEvaluator(cfg.data, loaded.model, cfg, tasks, prompt_ids=mixture_ids,
                                               placement=placement)
    results = multi.evaluate(loaded.params)
    for name, metrics in results.items():
      say(f"{name}: {_brief(metrics)}")
    return results
  say(f"evaluating {task.name} (split {split!r}, mode {cfg.mode}): reading examples, compiling, decoding")
  if loaded.num_prompts > 1:
    members = ensemble.EnsembleEvaluator(cfg.data, loaded.model, cfg, loaded.num_prompts, placement)
    results = {task.name: members(loaded.params)}
  else:
    prompt_id = 0 if loaded.num_prompts else None
    evaluator = task_evaluator.Evaluator(cfg.data, loaded.model, cfg, prompt_id=prompt_id, placement=placement)
    results = {task.name: evaluator(loaded.params)}
  say(f"{task.name}: {_brief(results[task.name])}")
  return results


def _brief(metrics: dict[str, Any], limit: int = 4) -> str:
  """The first few numeric metrics, for a progress line."""
  shown = [f"{k} {v:.4g}" for k, v in sorted(metrics.items()) if isinstance(v, (int, float))][:limit]
  return "done: " + (", ".join(shown) if shown else "no metrics")


def mixture_prompt_ids(mixture: seqio.Mixture, names: Sequence[str]) -> list[int]:
  """Bank row of each sub-task: its --prompt=TASK=PATH, or the only prompt for all."""
  tasks = [t.name for t in mixture.tasks]
  if len(names) <= 1:
    return [0] * len(tasks)
  missing = [t for t in tasks if t not in names]
  if missing:
    raise SystemExit(f"mixture {mixture.name!r}: no --prompt=TASK=PATH for {missing}; got names {list(names)}")
  return [list(names).index(t) for t in tasks]
