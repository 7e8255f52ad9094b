"""Evaluation on the training mesh: the frozen weights in their shards, batches split
over the 'data' axis, outputs gathered back to every host.

`eval`, `infer` and `score` (and the training loop's eval hook) use the same
`PartitionConfig`, mesh and logical-axis rules as training, so a model that trains on
a slice also evaluates on it, and no device holds more than its share of the weights
or decodes rows another data replica already decodes.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh

from prompt_tuning_jax.parallel import distributed, sharding
from prompt_tuning_jax.checkpoints import backbone
from prompt_tuning_jax.model.config import T5Config
from prompt_tuning_jax.model import t5


@dataclasses.dataclass(frozen=True)
class Placement:
  """Where evaluation runs: a ('data', 'model') mesh and the logical-axis rules on it."""
  mesh: Mesh
  rules: sharding.LogicalRules

  @property
  def data_size(self) -> int:
    return self.mesh.shape["data"]

  def padded_rows(self, n: int) -> int:
    """n rounded up to a multiple of the data-axis size (extra rows are zero padding)."""
    return -(-n // self.data_size) * self.data_size

  def place_rows(self, x: np.ndarray) -> jax.Array:
    """Global numpy [B, ...] (B a multiple of the data size; the same on every host) ->
    a jax.Array split over 'data'; each host contributes only its own rows."""
    layout = sharding.data_layout(x.shape[0], self.mesh)
    return jax.make_array_from_process_local_data(sharding.batch_sharding(self.mesh), x[layout.rows], x.shape)

  def place_replicated(self, x: np.ndarray) -> jax.Array:
    return jax.make_array_from_process_local_data(sharding.replicated(self.mesh), x, x.shape)

  @contextlib.contextmanager
  def active(self) -> Iterator[None]:
    """The mesh and rules for tracing: the model's activation constraints take effect."""
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      yield


def start(partition: sharding.PartitionConfig, flags: Any = None) -> Placement:
  """Join the multi-process job as training does (`flags`: the parsed
  `distributed.add_flags`; None: auto-detect), then build the training mesh."""
  if flags is None:
    distributed.initialize()
  else:
    distributed.initialize_from_flags(flags)
  return Placement(sharding.make_mesh(partition), partition.rules)


def backbone_shardings(cfg: T5Config, placement: Placement) -> Any:
  """NamedSharding per frozen weight, from the params' logical axes and the rules."""
  return sharding.logical_to_sharding(sharding.logical_specs(t5.param_shapes(cfg)), placement.mesh,
                                      placement.rules)


def load_backbone(path: str, cfg: T5Config, placement: Placement | None) -> tuple[dict, int]:
  """`backbone.load_frozen` straight into the shards (each host reads only its slices)."""
  shardings = backbone_shardings(cfg, placement) if placement is not None else None
  return backbone.load_frozen(path, cfg, shardings=shardings)
