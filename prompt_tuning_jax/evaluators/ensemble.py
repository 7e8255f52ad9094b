"""Prompt ensembles (Lester et al. 2021, section 6): N prompts, one frozen model, one batch.

The N prompts [P, d] are stacked into a bank [N, P, d]; every example is repeated N
times (example-major, `prompt_ids` = 0..N-1 per example), so a single forward pass
serves all members. Two ways to combine them:

* majority vote over the members' outputs (the decoded text, or the chosen label in
  rank mode); a tie goes to the tied output whose voters have the highest summed
  score, and an exact tie of those sums to the lowest prompt index;
* score averaging: rank mode averages each candidate label's log-likelihood over the
  prompts and takes the argmax; greedy/beam modes rescore the members' N outputs
  under every prompt the same way (candidates = those outputs).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Hashable, Sequence

import numpy as np

from prompt_tuning_jax.parallel import distributed

from prompt_tuning_jax.text import data
from prompt_tuning_jax.model.config import T5Config
from prompt_tuning_jax.evaluators import predictor, sharded, task_evaluator
from prompt_tuning_jax.evaluators.config import EvalConfig
from prompt_tuning_jax.model import t5
from prompt_tuning_jax.prompt import files as prompt_files
from prompt_tuning_jax.prompt import wrapper


def stack_prompts(prompts: Sequence[np.ndarray], names: Sequence[str] | None = None) -> np.ndarray:
  """[P, d] prompts -> bank [N, P, d] float32; all must share one shape."""
  if not prompts:
    raise ValueError("no prompts to stack: give at least one")
  names = list(names) if names is not None else [f"prompt {i}" for i in range(len(prompts))]
  first = np.asarray(prompts[0]).shape
  for name, p in zip(names, prompts):
    if np.asarray(p).ndim != 2 or np.asarray(p).shape != first:
      raise ValueError(f"{name} has shape {np.asarray(p).shape}; every prompt must be [P, d] "
                       f"like {names[0]} {first}")
  return np.stack([np.asarray(p, np.float32) for p in prompts])


def bank_model(t5_config: T5Config, bank: np.ndarray, prompt_config: wrapper.PromptConfig | None = None,
               ) -> t5.Transformer:
  """The frozen model with a prompt bank shaped like `bank` [N, P, d] (N = 1 works too)."""
  base = prompt_config or wrapper.PromptConfig()
  if bank.shape[2] != t5_config.emb_dim:
    raise ValueError(f"prompts have width {bank.shape[2]}, the model's emb_dim is {t5_config.emb_dim}")
  cfg = dataclasses.replace(base, length=bank.shape[1], num_prompts=bank.shape[0])
  return wrapper.make_model(t5_config, cfg)


def bank_params(frozen: dict, bank: np.ndarray) -> dict:
  """Frozen params with the bank at the prompt path (a bank of one is stored as the
  plain [P, d] prompt; the model then ignores `prompt_ids`)."""
  bank = np.asarray(bank, np.float32)
  return wrapper.set_prompt(frozen, bank[0] if bank.shape[0] == 1 else bank)


def tile_examples(tokens: np.ndarray, num_prompts: int) -> tuple[np.ndarray, np.ndarray]:
  """[E, ...] -> ([E * N, ...] each example repeated N times, prompt_ids [E * N])."""
  ids = np.tile(np.arange(num_prompts, dtype=np.int32), tokens.shape[0])
  return np.repeat(tokens, num_prompts, axis=0), ids


def majority_vote(predictions: Sequence[Sequence[Hashable]], scores: Sequence[Sequence[float]],
                  ) -> tuple[list[Any], np.ndarray]:
  """predictions [E][N], scores [E][N] -> (winner per example, index of its first voter [E]).

  Most votes wins; ties -> highest summed score of the voters, then lowest prompt index.
  """
  winners, first_voter = [], []
  for preds, row in zip(predictions, scores):
    row = np.asarray(row, np.float64)
    tally: dict[Hashable, list] = {}
    for n, p in enumerate(preds):
      entry = tally.setdefault(p, [0, 0.0, n])
      entry[0] += 1
      entry[1] += row[n]
    best = max(tally.items(), key=lambda kv: (kv[1][0], kv[1][1], -kv[1][2]))
    winners.append(best[0])
    first_voter.append(best[1][2])
  return winners, np.asarray(first_voter, np.int32)


def average_scores(candidate_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """[E, N, C] per-prompt candidate log-likelihoods -> (argmax of the mean [E], mean [E, C])."""
  mean = np.mean(np.asarray(candidate_scores, np.float64), axis=1)
  return np.argmax(mean, axis=1), mean


class EnsembleEvaluator:
  """N prompts for one task, evaluated in one batch; metrics per member and ensembled.

  `params` passed to the call must hold the bank (see `bank_params`). Metric keys:
  `member_<n>/<m>`, `member_mean/<m>`, `vote/<m>`, `average/<m>`.
  """

  def __init__(self, data_config: data.DataConfig, model: t5.Transformer, eval_config: EvalConfig,
               num_prompts: int, placement: sharded.Placement | None = None):
    self.requested_mode = eval_config.mode
    self.num_prompts = num_prompts
    self.task_data = task_evaluator.load_task_data(
        data_config, split=eval_config.split, labels=eval_config.task_labels(data_config.mixture_or_task_name))
    self.mode = self.task_data.mode_for(eval_config.mode)
    self.batch_size = eval_config.batch_size or data_config.batch_size
    self.output_dir = eval_config.output_dir
    self.predictor = task_evaluator.make_predictor(model, eval_config, self.task_data.decode_length, placement)

  def member_outputs(self, params: Any) -> tuple[list[list[str]], np.ndarray, np.ndarray]:
    """-> (texts [E][N], scores [E, N], candidate token ids or label scores [E, N, ...])."""
    n, td = self.num_prompts, self.task_data
    inputs, ids = tile_examples(td.inputs, n)
    if self.mode == "rank":
      cand = predictor.run_by_length(lambda x, p: self.predictor.score_async(params, x, td.candidates, p),
                                    [inputs, ids], self.batch_size).reshape(len(td.examples), n, -1)
      best = np.argmax(cand, axis=2)
      texts = [[td.labels[c] for c in row] for row in best]
      return texts, np.take_along_axis(cand, best[:, :, None], axis=2)[:, :, 0], cand
    tokens, scores = predictor.run_by_length(
        lambda x, p: self.predictor.generate_async(params, x, p, mode=self.mode), [inputs, ids], self.batch_size)
    out = predictor.outputs_from_tokens(td.vocab, tokens, scores)
    e = len(td.examples)
    return ([out.texts[i * n:(i + 1) * n] for i in range(e)], out.scores.reshape(e, n),
            tokens[:, 0].reshape(e, n, -1))

  def _average(self, params: Any, texts: list[list[str]], extra: np.ndarray) -> list[str]:
    """Score averaging: rank -> mean label scores; generation -> rescore members' outputs."""
    if self.mode == "rank":
      best, _ = average_scores(extra)
      return [self.task_data.labels[i] for i in best]
    inputs, ids = tile_examples(self.task_data.inputs, self.num_prompts)
    cands = np.repeat(extra, self.num_prompts, axis=0)  # [E * N, N candidates, T]
    scores = predictor.run_by_length(lambda x, c, p: self.predictor.score_async(params, x, c, p),
                                    [inputs, cands, ids], self.batch_size)
    best, _ = average_scores(scores.reshape(len(texts), self.num_prompts, -1))
    return [row[i] for row, i in zip(texts, best)]

  def __call__(self, params: Any, step: int | None = None) -> dict[str, float]:
    td, n = self.task_data, self.num_prompts
    texts, scores, extra = self.member_outputs(params)
    results: dict[str, float] = {}
    members = []
    for k in range(n):
      m, _ = task_evaluator.compute_metrics(td, [row[k] for row in texts])
      members.append(m)
      results.update({f"member_{k}/{key}": v for key, v in m.items()})
    results.update({f"member_mean/{key}": float(np.mean([m[key] for m in members])) for key in members[0]})
    vote, _ = majority_vote(texts, scores)
    average = self._average(params, texts, extra)
    for name, outs in (("vote", vote), ("average", average)):
      m, _ = task_evaluator.compute_metrics(td, outs)
      results.update({f"{name}/{key}": v for key, v in m.items()})
    if self.output_dir and distributed.is_primary():
      self._write(step, results, texts, scores, vote, average)
    return results

  def _write(self, step, results, texts, scores, vote, average) -> None:
    td = self.task_data
    records = [{"index": i, "inputs": task_evaluator.as_text(ex.get("inputs_pretokenized", "")),
                "targets": task_evaluator.as_text(ex.get("targets_pretokenized", "")),
                "members": [{"output": t, "score": float(s)} for t, s in zip(texts[i], scores[i])],
                "vote": vote[i], "average": average[i]} for i, ex in enumerate(td.examples)]
    summary = {"task": td.name, "mode": self.mode, "requested_mode": self.requested_mode,
               "rank_candidates": td.rank_note, "num_prompts": self.num_prompts, "step": step,
               "num_examples": len(td.examples), "metrics": results}
    task_evaluator.write_results(self.output_dir, f"{td.name}.ensemble", summary, records, step)


def parse_prompt_flag(value: str) -> tuple[str, str]:
  """'--prompt=PATH' or '--prompt=NAME=PATH' -> (name, path); the name defaults to the path."""
  name, sep, path = value.partition("=")
  if sep and name and not os.path.exists(value) and all(ch.isalnum() or ch in "_.-" for ch in name):
    return name, path
  return value, value


def load_bank(flags: Sequence[str], emb_dim: int) -> tuple[list[str], np.ndarray | None]:
  """--prompt flag values -> (names, bank [N, P, d]) or ([], None) when none are given."""
  if not flags:
    return [], None
  named = [parse_prompt_flag(f) for f in flags]
  names = [n for n, _ in named]
  if len(set(names)) != len(names):
    raise ValueError(f"--prompt names must be unique, got {names}")
  prompts = []
  for name, path in named:
    p = prompt_files.load_prompt(path)
    if p.shape[1] != emb_dim:
      raise ValueError(f"--prompt={path}: width {p.shape[1]} does not match T5Config.emb_dim={emb_dim}")
    prompts.append(p)
  return names, stack_prompts(prompts, [f"--prompt={path}" for _, path in named])
