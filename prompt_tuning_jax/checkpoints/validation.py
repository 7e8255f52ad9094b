"""Checking a parameter tree against what a model expects, before anything is used.

A checkpoint that does not fit the model must fail with one message that lists every
problem (missing keys, unexpected keys, wrong shapes, wrong vocabulary) and names the
checkpoint, rather than half-loading and failing somewhere inside `apply`.
`infer_t5_config` reads a `T5Config` off the shapes alone, so a checkpoint can be
loaded without being told its size.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from prompt_tuning_jax.checkpoints import tree
from prompt_tuning_jax.model.config import T5Config

_MAX_LISTED = 40


class CheckpointMismatchError(ValueError):
  """The parameters found do not fit the parameters expected (keys or shapes)."""


class CheckpointCorruptError(ValueError):
  """A checkpoint file exists but cannot be decoded (truncated, garbled, missing chunk)."""


class ShapeDtype(NamedTuple):
  """Shape and dtype of an array that has not been read (like jax.ShapeDtypeStruct)."""
  shape: tuple[int, ...]
  dtype: np.dtype


def _leaf_shape(leaf: Any) -> tuple[int, ...]:
  """Shape of an array, a ShapeDtypeStruct, or a flax box around one (`.value`)."""
  if not hasattr(leaf, "shape") and hasattr(leaf, "value"):
    leaf = leaf.value
  return tuple(int(n) for n in leaf.shape)


def _listing(title: str, items: list[str]) -> list[str]:
  lines = [f"{title} ({len(items)}):"] + [f"  {item}" for item in items[:_MAX_LISTED]]
  if len(items) > _MAX_LISTED:
    lines.append(f"  ... and {len(items) - _MAX_LISTED} more")
  return lines


def _vocab_sizes(flat: Mapping[str, Any]) -> dict[str, int]:
  sizes = {}
  if "token_embedder/embedding" in flat:
    sizes["token_embedder/embedding"] = _leaf_shape(flat["token_embedder/embedding"])[0]
  if "decoder/logits_dense/kernel" in flat:
    sizes["decoder/logits_dense/kernel"] = _leaf_shape(flat["decoder/logits_dense/kernel"])[-1]
  return sizes


def validate_params(params: Mapping[str, Any], expected: Mapping[str, Any], *, source: str) -> None:
  """Raise CheckpointMismatchError listing every difference between two trees.

  Args:
    params: nested dict of arrays (or anything with `.shape`) found in `source`.
    expected: nested dict of objects with `.shape` (e.g. `jax.eval_shape` output,
      flax boxes allowed).
    source: the checkpoint path, quoted in the message.
  """
  found, want = tree.flatten(params), tree.flatten(expected)
  missing = sorted(set(want) - set(found))
  unexpected = sorted(set(found) - set(want))
  wrong = []
  for key in sorted(set(found) & set(want)):
    have, need = _leaf_shape(found[key]), _leaf_shape(want[key])
    if have != need:
      wrong.append(f"{key}: expected shape {need}, found {have}")
  if not (missing or unexpected or wrong):
    return
  lines = [f"checkpoint {source} does not match the model:"]
  found_v, want_v = _vocab_sizes(found), _vocab_sizes(want)
  for key in sorted(set(found_v) & set(want_v)):
    if found_v[key] != want_v[key]:
      lines.append(f"vocabulary size mismatch: {key} has vocab {found_v[key]} in the checkpoint, "
                   f"the model expects {want_v[key]} (check T5Config.vocab_size and the vocabulary)")
      break
  if missing:
    lines += _listing("missing keys (expected, not in checkpoint)", missing)
  if unexpected:
    lines += _listing("unexpected keys (in checkpoint, not expected)", unexpected)
  if wrong:
    lines += _listing("wrong shapes", wrong)
  raise CheckpointMismatchError("\n".join(lines))


def param_shapes(cfg: T5Config, dtype: Any = np.float32) -> dict[str, Any]:
  """The T5X parameter tree of `cfg` as ShapeDtype leaves, read off the Flax model
  itself (`jax.eval_shape` of its init: nothing is allocated), so there is one source."""
  from prompt_tuning_jax.model import t5
  return shape_tree(t5.param_shapes(cfg), dtype)


def shape_tree(abstract: Any, dtype: Any = np.float32) -> dict[str, Any]:
  """Abstract params (`jax.eval_shape` output, flax boxes allowed) -> ShapeDtype leaves of `dtype`."""
  import flax.linen as nn
  flat = tree.flatten(nn.unbox(abstract))
  return tree.unflatten({k: ShapeDtype(tuple(v.shape), np.dtype(dtype)) for k, v in flat.items()})


def _require(flat: Mapping[str, Any], key: str) -> tuple[int, ...]:
  if key not in flat:
    raise CheckpointMismatchError(f"cannot infer T5Config: parameter {key!r} is missing")
  return _leaf_shape(flat[key])


def _count_layers(flat: Mapping[str, Any], stack: str) -> int:
  indices = {int(m.group(1)) for k in flat if (m := re.match(rf"{stack}/layers_(\d+)/", k))}
  if not indices or indices != set(range(len(indices))):
    raise CheckpointMismatchError(f"cannot infer T5Config: {stack} layers found {sorted(indices)}, "
                                  "expected layers_0..layers_{n-1}")
  return len(indices)


def infer_t5_config(params: Mapping[str, Any], **overrides: Any) -> T5Config:
  """T5Config from parameter shapes alone (arrays or ShapeDtype leaves).

  relative_attention_max_distance cannot be seen in the weights and keeps its default
  (128) unless given in `overrides`, like dropout_rate and dtype.
  """
  flat = tree.flatten(params)
  vocab, d = _require(flat, "token_embedder/embedding")
  heads, buckets = _require(flat, "encoder/relpos_bias/rel_embedding")
  q_in, q_out = _require(flat, "encoder/layers_0/attention/query/kernel")
  if q_out % heads:
    raise CheckpointMismatchError(f"query kernel width {q_out} is not a multiple of {heads} heads")
  mlp = "encoder/layers_0/mlp"
  if f"{mlp}/wi/kernel" in flat:
    activations, mlp_dim = ("relu",), _require(flat, f"{mlp}/wi/kernel")[1]
  elif f"{mlp}/wi_0/kernel" in flat and f"{mlp}/wi_1/kernel" in flat:
    activations, mlp_dim = ("gelu", "linear"), _require(flat, f"{mlp}/wi_0/kernel")[1]
  else:
    raise CheckpointMismatchError(f"cannot infer T5Config: need {mlp}/wi/kernel (T5 1.0) or "
                                  f"{mlp}/wi_0/kernel + wi_1/kernel (T5 1.1)")
  fields = dict(vocab_size=vocab, emb_dim=d, num_heads=heads, head_dim=q_out // heads, mlp_dim=mlp_dim,
                num_encoder_layers=_count_layers(flat, "encoder"),
                num_decoder_layers=_count_layers(flat, "decoder"), mlp_activations=activations,
                logits_via_embedding="decoder/logits_dense/kernel" not in flat,
                relative_attention_num_buckets=buckets)
  fields.update(overrides)
  return T5Config(**fields)
