"""What trains and how: regex labels over parameter paths, and Adafactor as in T5X.

One label function decides everything: `split_params` uses it to separate the trainable
subtree (the only thing differentiated and donated) from the frozen one, and
`make_optimizer` uses it in an `optax.multi_transform` (prompt -> unfactored Adafactor,
other trainable weights -> factored Adafactor, frozen -> `set_to_zero`), so even a full
tree handed to the optimizer cannot move a frozen weight.

optax's adafactor vs T5X's (t5x/adafactor.py), and how they are matched here:
- decay schedule: both use beta2_t = 1 - (t + 1)^-0.8; T5X's t is the global step restored
  from the frozen checkpoint (e.g. 1,100,000), optax's is its own count from 0. We pass
  `decay_offset=-OptimConfig.step_offset`, so optax's t starts at the checkpoint's step.
- weight decay: T5X computes (1 - wd) * p - lr * u; optax adds wd * p after the lr scale,
  which is the same update (decay not multiplied by lr).
- update clipping: both divide u by max(1, rms(u) / 1.0) per parameter, before the lr.
- factoring: both factor only when the two largest dims are >= 128; the prompt is forced
  unfactored (`factored=False`) whatever its length, as the prompt's [P, d] statistics
  are small anyway.
- epsilon1 = 1e-30 in both; no momentum; parameter scaling off (the paper's setting).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

import jax
import numpy as np
import optax
from flax import traverse_util

from prompt_tuning_jax.prompt import PROMPT_PATTERN

TRAINABLE_LABELS = ("prompt", "trainable")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """Adafactor hyperparameters (paper defaults for prompt tuning)."""
  learning_rate: float = 0.3
  decay_rate: float = 0.8
  clipping_threshold: float | None = 1.0
  weight_decay_rate: float | None = 1e-5
  multiply_by_parameter_scale: bool = False
  step_offset: int = 0  # the frozen checkpoint's step; T5X's decay continues from it
  trainable_patterns: tuple[str, ...] = (PROMPT_PATTERN,)

  def __post_init__(self):
    if self.learning_rate <= 0:
      raise ValueError(f"OptimConfig.learning_rate must be > 0, got {self.learning_rate}")
    for p in self.trainable_patterns:
      try:
        re.compile(p)
      except re.error as e:
        raise ValueError(f"OptimConfig.trainable_patterns: bad regex {p!r}: {e}") from e


PROMPT_TUNING = OptimConfig()
MODEL_TUNING = OptimConfig(learning_rate=1e-3, multiply_by_parameter_scale=True, trainable_patterns=(".*",))


def path_label(path: str, patterns: tuple[str, ...]) -> str:
  """'prompt', 'trainable' or 'frozen' for a slash-joined parameter path."""
  if not any(re.fullmatch(p, path) for p in patterns):
    return "frozen"
  return "prompt" if re.fullmatch(PROMPT_PATTERN, path) else "trainable"


def label_tree(params: Any, patterns: tuple[str, ...]) -> Any:
  flat = traverse_util.flatten_dict(params, sep="/")
  return traverse_util.unflatten_dict({k: path_label(k, patterns) for k in flat}, sep="/")


def split_params(params: Any, patterns: tuple[str, ...]) -> tuple[dict, dict]:
  """Full tree -> (trainable subtree, frozen subtree); raises if nothing is trainable."""
  labels = label_tree(params, patterns)
  if all(v == "frozen" for v in traverse_util.flatten_dict(labels, sep="/").values()):
    raise ValueError(f"OptimConfig.trainable_patterns={patterns} match no parameter; "
                     f"paths look like {sorted(traverse_util.flatten_dict(params, sep='/'))[:3]}")
  return split_by_labels(params, labels)


def split_by_labels(tree: Any, labels: Any) -> tuple[dict, dict]:
  """(trainable subtree, frozen subtree) of any tree shaped like `labels` (a `label_tree`):
  values, logical specs and shardings are split by the same labels, with no regex."""
  flat, flat_labels = traverse_util.flatten_dict(tree, sep="/"), traverse_util.flatten_dict(labels, sep="/")
  if flat.keys() != flat_labels.keys():
    raise ValueError(f"tree and label tree differ: only in tree {sorted(flat.keys() - flat_labels.keys())[:3]}, "
                     f"only in labels {sorted(flat_labels.keys() - flat.keys())[:3]}")
  trainable = {k: v for k, v in flat.items() if flat_labels[k] != "frozen"}
  frozen = {k: v for k, v in flat.items() if flat_labels[k] == "frozen"}
  return (traverse_util.unflatten_dict(trainable, sep="/") if trainable else {},
          traverse_util.unflatten_dict(frozen, sep="/") if frozen else {})


def merge_params(trainable: Any, frozen: Any) -> dict:
  """Inverse of split_params (no copies: leaves are shared)."""
  flat = traverse_util.flatten_dict(frozen, sep="/") if frozen else {}
  flat.update(traverse_util.flatten_dict(trainable, sep="/"))
  return traverse_util.unflatten_dict(flat, sep="/")


def _adafactor(cfg: OptimConfig, *, factored: bool) -> optax.GradientTransformation:
  return optax.adafactor(
      learning_rate=cfg.learning_rate, min_dim_size_to_factor=128, decay_rate=cfg.decay_rate,
      decay_offset=-cfg.step_offset, multiply_by_parameter_scale=cfg.multiply_by_parameter_scale,
      clipping_threshold=cfg.clipping_threshold, momentum=None,
      weight_decay_rate=cfg.weight_decay_rate, eps=1e-30, factored=factored)


def make_optimizer(cfg: OptimConfig, labels: Any = None) -> optax.GradientTransformation:
  """multi_transform keyed by `path_label`; works on the trainable subtree or the full tree.

  labels: a `label_tree` of the tree it will update (the trainer passes the trainable part
  of its one label tree); default: labels computed from the tree on init.
  """
  transforms = {
      "prompt": _adafactor(cfg, factored=False),
      "trainable": _adafactor(cfg, factored=True),
      "frozen": optax.set_to_zero(),
  }
  if labels is None:
    labels: Callable[[Any], Any] = lambda params: label_tree(params, cfg.trainable_patterns)
  return optax.multi_transform(transforms, labels)


def restore_adafactor_states(opt_state: Any, read_state: Callable[[str], Any]) -> tuple[Any, int]:
  """Put a T5X checkpoint's Adafactor second moments into optax's fresh state.

  `read_state(name)` returns the checkpoint's `param_states/<path>/<v_row|v_col|v>` array
  (or None when absent). T5X and optax both keep, for a factored [.., n, m] weight, the
  row and column statistics with one dimension removed; they are matched by shape, so a
  checkpoint that names its factored axes differently still lands right (square weights,
  whose two statistics have the same shape, keep T5X's names). Counts stay optax's: the
  decay schedule's step comes from `OptimConfig.step_offset`. -> (state, leaves restored).
  """
  restored = 0

  def fill(state: optax.FactoredState) -> optax.FactoredState:
    nonlocal restored
    flat = {f: traverse_util.flatten_dict(getattr(state, f), sep="/") for f in ("v_row", "v_col", "v")}
    out = {f: dict(flat[f]) for f in flat}
    for path, v in flat["v"].items():
      if not hasattr(v, "shape"):
        continue  # a MaskedNode: this label's transform does not own the parameter
      found = {f: read_state(f"{path}/{f}") for f in ("v_row", "v_col", "v")}
      if any(a is None for a in found.values()):
        continue
      want = {f: tuple(flat[f][path].shape) for f in ("v_row", "v_col", "v")}
      got = {f: tuple(np.shape(a)) for f, a in found.items()}
      if (got["v_row"], got["v_col"]) == (want["v_col"], want["v_row"]) and want["v_row"] != want["v_col"]:
        found["v_row"], found["v_col"] = found["v_col"], found["v_row"]
        got["v_row"], got["v_col"] = got["v_col"], got["v_row"]
      if got != want:
        raise ValueError(f"Adafactor state of {path!r} in the checkpoint has shapes {got}; "
                         f"the optimizer wants {want} (TrainConfig.restore_optimizer_state=False skips it)")
      for f in found:
        out[f][path] = jax.numpy.asarray(found[f], flat[f][path].dtype)
      restored += 1
    return state._replace(**{f: traverse_util.unflatten_dict(out[f], sep="/") for f in out})

  is_factored = lambda x: isinstance(x, optax.FactoredState)
  new = jax.tree.map(lambda x: fill(x) if is_factored(x) else x, opt_state, is_leaf=is_factored)
  return new, restored
