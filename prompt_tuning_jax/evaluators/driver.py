"""`evaluate(EvalConfig)`: the eval command's one library call. One prompt: that prompt;
several: an ensemble; a mixture: each sub-task with its own prompt, in shared batches."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from prompt_tuning_jax.text import data, quiet
from prompt_tuning_jax.evaluators import ensemble, loading, sharded, task_evaluator
from prompt_tuning_jax.evaluators.config import EvalConfig

if TYPE_CHECKING:
  import seqio


def evaluate(cfg: EvalConfig, placement: sharded.Placement | None = None) -> dict[str, Any]:
  """-> {task name: metrics}; writes metrics/predictions under cfg.output_dir if set."""
  task = data.get_task(cfg.data)
  names = [ensemble.parse_prompt_flag(p)[0] for p in cfg.model.prompts]
  mixture_ids = mixture_prompt_ids(task, names) if isinstance(task, quiet.import_seqio().Mixture) else None
  loaded = loading.load_model(cfg.model, placement)
  if mixture_ids is not None:
    tasks = [t.name for t in task.tasks]
    multi = task_evaluator.MultiTaskEvaluator(cfg.data, loaded.model, cfg, tasks, prompt_ids=mixture_ids,
                                               placement=placement)
    return multi.evaluate(loaded.params)
  if loaded.num_prompts > 1:
    members = ensemble.EnsembleEvaluator(cfg.data, loaded.model, cfg, loaded.num_prompts, placement)
    return {task.name: members(loaded.params)}
  prompt_id = 0 if loaded.num_prompts else None
  evaluator = task_evaluator.Evaluator(cfg.data, loaded.model, cfg, prompt_id=prompt_id, placement=placement)
  return {task.name: evaluator(loaded.params)}


def mixture_prompt_ids(mixture: seqio.Mixture, names: Sequence[str]) -> list[int]:
  """Bank row of each sub-task: its --prompt=TASK=PATH, or the only prompt for all."""
  tasks = [t.name for t in mixture.tasks]
  if len(names) <= 1:
    return [0] * len(tasks)
  missing = [t for t in tasks if t not in names]
  if missing:
    raise SystemExit(f"mixture {mixture.name!r}: no --prompt=TASK=PATH for {missing}; got names {list(names)}")
  return [list(names).index(t) for t in tasks]
