"""Load the frozen backbone from any supported source into its shards, validated first.

Sources: a T5X checkpoint (local or gs://; read slice by slice, so each host reads only
what it holds), a Hugging Face T5 directory (`config.json` + weights), or `random:<seed>`
(fresh weights, for benchmarks and planning). The whole tree is checked against the
model's expected shapes before any array is read, so a mismatched checkpoint is refused,
never half-loaded.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import numpy as np
from flax import traverse_util

from prompt_tuning_jax.parallel import sharding
from prompt_tuning_jax.checkpoints import hf, t5x, validation
from prompt_tuning_jax.model.config import T5Config
from prompt_tuning_jax.model import t5

RANDOM_PREFIX = "random:"


def detect_format(path: str) -> str:
  if path.startswith(RANDOM_PREFIX):
    return "random"
  if os.path.isdir(path) and os.path.exists(os.path.join(path, "config.json")):
    return "hf"
  return "t5x"


def load_frozen(path: str, cfg: T5Config, *, shardings: Any = None, expected: Any = None,
                allow_nonfinite: bool = False) -> tuple[dict, int]:
  """-> (params placed with `shardings` or on the default device, checkpoint step).

  Weights are stored as `cfg.weight_dtype`; T5X checkpoints are cast slice by slice as
  each host reads its shards, so no host ever holds the float32 tree. NaN/Inf weights are
  refused naming the key unless `allow_nonfinite`. expected: the backbone's abstract params
  when the caller already traced them (the trainer does), so the model is not traced twice;
  default `validation.param_shapes(cfg)`.
  """
  if not path:
    raise ValueError("INITIAL_CHECKPOINT_PATH is empty: name a T5X checkpoint, a Hugging Face "
                     "T5 directory or 'random:<seed>'")
  kind = detect_format(path)
  want = validation.param_shapes(cfg) if expected is None else validation.shape_tree(expected)
  dtype = np.dtype(jax.numpy.dtype(cfg.weight_dtype))  # T5Config.weight_dtype: each shard is cast as read
  if kind == "random":
    seed = int(path[len(RANDOM_PREFIX):] or 0)
    init = lambda rng: jax.tree.map(lambda x: x.astype(dtype), t5.init_params(cfg, rng))  # cast inside jit
    fn = jax.jit(init, out_shardings=shardings) if shardings is not None else jax.jit(init)
    return fn(jax.random.PRNGKey(seed)), 0
  if kind == "hf":
    params, hf_cfg = hf.load_hf_checkpoint(path, allow_nonfinite=allow_nonfinite)
    _check_same_config(cfg, hf_cfg, path)
    validation.validate_params(params, want, source=path)
    params = jax.tree.map(lambda x: np.asarray(x, dtype), params)
    return (jax.device_put(params, shardings) if shardings is not None else jax.device_put(params)), 0
  index = t5x.open_t5x_checkpoint(path)
  validation.validate_params(t5x.read_t5x_shapes(path), want, source=path)
  if shardings is None:
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shardings = jax.tree.map(lambda _: device, want, is_leaf=lambda x: hasattr(x, "shape"))
  flat_sh = traverse_util.flatten_dict(shardings, sep="/")
  flat_want = traverse_util.flatten_dict(want, sep="/")
  read = functools.partial(t5x.read_t5x_array, path, allow_nonfinite=allow_nonfinite)
  params = sharding.load_params_sharded(read, flat_want, flat_sh, dtypes={k: dtype for k in flat_want})
  return traverse_util.unflatten_dict(params, sep="/"), int(index.step)


def _check_same_config(cfg: T5Config, found: T5Config, path: str) -> None:
  diffs = [f"{f.name}: run has {getattr(cfg, f.name)!r}, checkpoint has {getattr(found, f.name)!r}"
           for f in dataclasses.fields(T5Config)
           if f.name not in ("dtype", "dropout_rate", "remat_policy", "weight_dtype") and getattr(cfg, f.name) != getattr(found, f.name)]
  if diffs:
    raise validation.CheckpointMismatchError(f"{path}/config.json does not match T5Config:\n  " + "\n  ".join(diffs))
