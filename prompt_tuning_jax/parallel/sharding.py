"""Device mesh, the one logical-axis rules table, and logical specs -> shardings.

Parameters are born with T5X logical axis names (`layers.py`); this module is the only
place that maps those names onto the ('data', 'model') device mesh, so switching
between data, model and 2-D parameter parallelism is a `PartitionConfig` change, never
a model change. It also builds global batches and sharded parameters on several hosts
without any host ever holding more than its own slices.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

LogicalRules = tuple[tuple[str, Any], ...]
MESH_AXES = ("data", "model")


@dataclasses.dataclass(frozen=True)
class PartitionConfig:
  """How the device mesh is split (T5X's partitioner, as data).

  num_partitions: size of the 'model' mesh axis (1 = pure data parallelism).
  model_parallel_submesh: T5X's hardware tile, e.g. (4, 4, 1, 2); when set, the model
    axis size is its product and `num_partitions` is ignored. Physical placement is
    left to `jax.experimental.mesh_utils`, which keeps the model axis on nearby chips.
  parameter_partitioning_dims: 1 shards params over 'model' only; 2 also shards their
    'embed' dimension over 'data' (T5X's 2-D parameter partitioning).
  activation_partitioning_dims: 1 shards activations [batch, length, embed] over 'data'
    only; 2 also shards their 'embed' over 'model' (T5X's 2-D activation partitioning).
    As in T5X the same table maps params, so 'embed' then takes 'model' there too.
  """
  num_partitions: int = 1
  model_parallel_submesh: tuple[int, ...] | None = None
  parameter_partitioning_dims: int = 1
  activation_partitioning_dims: int = 1

  def __post_init__(self):
    if not isinstance(self.num_partitions, int) or self.num_partitions < 1:
      raise ValueError(f"PartitionConfig.num_partitions (--num_partitions) must be a positive int, "
                       f"got {self.num_partitions!r}")
    sub = self.model_parallel_submesh
    if sub is not None and (not sub or any(not isinstance(s, int) or s < 1 for s in sub)):
      raise ValueError(f"PartitionConfig.model_parallel_submesh must be a tuple of positive ints, got {sub!r}")
    if self.parameter_partitioning_dims not in (1, 2):
      raise ValueError("PartitionConfig.parameter_partitioning_dims must be 1 or 2, "
                       f"got {self.parameter_partitioning_dims!r}")
    if self.activation_partitioning_dims not in (1, 2):
      raise ValueError("PartitionConfig.activation_partitioning_dims must be 1 or 2, "
                       f"got {self.activation_partitioning_dims!r}")

  @property
  def model_parallel_size(self) -> int:
    if self.model_parallel_submesh is not None:
      return math.prod(self.model_parallel_submesh)
    return self.num_partitions

  @property
  def rules(self) -> LogicalRules:
    return standard_logical_axis_rules(self.parameter_partitioning_dims, self.activation_partitioning_dims)


def standard_logical_axis_rules(parameter_partitioning_dims: int = 1,
                                activation_partitioning_dims: int = 1) -> LogicalRules:
  """Logical axis name -> mesh axis, in priority order (flax resolves first match).

  1-D: batch over 'data'; vocab, mlp, heads and joined_kv over 'model'; everything
  else replicated. 2-D adds embed -> 'data' *after* batch -> 'data', so activations
  [batch, length, embed] keep batch on 'data' (a mesh axis is used once per array)
  while params such as wi [embed, mlp] become sharded over both axes.
  2-D activations (T5X's activation_partitioning_dims=2) put embed -> 'model' first, so
  [batch, length, embed] is split over both axes (and params' embed over 'model').
    The prompt is always replicated, so every host can save it as one `.npy`; so are the
  small axes delta methods add (`methods/`): LoRA rank, adapter width, prefix length and
  reparameterisation width, SAID's intrinsic dimension.
  """
  if parameter_partitioning_dims not in (1, 2):
    raise ValueError(f"parameter_partitioning_dims must be 1 or 2, got {parameter_partitioning_dims!r}")
  if activation_partitioning_dims not in (1, 2):
    raise ValueError(f"activation_partitioning_dims must be 1 or 2, got {activation_partitioning_dims!r}")
  rules = [("batch", "data"), ("vocab", "model"), ("mlp", "model"), ("heads", "model"),
           ("joined_kv", "model"), ("kv", None)]
  if activation_partitioning_dims == 2:
    rules.append(("embed", "model"))
  rules.append(("embed", "data" if parameter_partitioning_dims == 2 else None))
  for replicated_name in ("embed", "length", "relpos_buckets", "prompt", "prompt_embed",
                          "lora_rank", "adapter", "prefix", "prefix_embed", "prefix_hidden",
                          "intrinsic"):
    rules.append((replicated_name, None))
  return tuple(rules)


def make_mesh(config: PartitionConfig, devices: Sequence[Any] | None = None) -> Mesh:
  """A ('data', 'model') mesh over all (or the given) devices; data = n / model."""
  devices = list(jax.devices() if devices is None else devices)
  model = config.model_parallel_size
  flag = "--model_parallel_submesh" if config.model_parallel_submesh is not None else "--num_partitions"
  if len(devices) % model:
    raise ValueError(f"{flag}: model-parallel size {model} does not divide the number of devices "
                     f"{len(devices)}; choose a divisor of {len(devices)}")
  shape = (len(devices) // model, model)
  try:
    grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
  except (ValueError, NotImplementedError, AssertionError):  # unusual topologies: plain order
    grid = np.asarray(devices, dtype=object).reshape(shape)
  return Mesh(grid, MESH_AXES)


def _is_box(x: Any) -> bool:
  return isinstance(x, nn.Partitioned)


def logical_specs(tree: Any) -> Any:
  """Logical PartitionSpec per leaf of a boxed tree (unboxed leaves -> replicated)."""
  return nn.get_partition_spec(tree)


def logical_to_sharding(tree_of_logical_specs: Any, mesh: Mesh, rules: LogicalRules) -> Any:
  """Tree of logical PartitionSpecs (or a boxed param tree) -> tree of NamedSharding."""
  if any(_is_box(x) for x in jax.tree.leaves(tree_of_logical_specs, is_leaf=_is_box)):
    tree_of_logical_specs = logical_specs(tree_of_logical_specs)
  return nn.logical_to_mesh_sharding(tree_of_logical_specs, mesh, rules)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dim over 'data', the rest replicated: for [B, ...] inputs."""
  return NamedSharding(mesh, PartitionSpec("data"))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def shard_shape(shape: Sequence[int], sharding: NamedSharding) -> tuple[int, ...]:
  """Per-device shape of a global `shape` under `sharding` (uneven dims round up)."""
  mesh_sizes = dict(zip(sharding.mesh.axis_names, sharding.mesh.devices.shape))
  out = []
  for i, dim in enumerate(shape):
    axes = sharding.spec[i] if i < len(sharding.spec) else None
    axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    out.append(-(-dim // math.prod(mesh_sizes[a] for a in axes)))
  return tuple(out)


def shard_params(params: Any, mesh: Mesh, rules: LogicalRules, logical_axes: Any = None) -> Any:
  """Place a param tree on the mesh; returns unboxed jax.Arrays.

  `params` is either boxed (as `model.init` returns) or plain with `logical_axes`, a
  tree of logical PartitionSpecs (e.g. `logical_specs(t5.param_shapes(cfg))`).
  """
  has_boxes = any(_is_box(x) for x in jax.tree.leaves(params, is_leaf=_is_box))
  if has_boxes:
    logical_axes = logical_specs(params)
    params = nn.unbox(params)
  elif logical_axes is None:
    raise ValueError("shard_params: params are unboxed, so pass logical_axes "
                     "(e.g. sharding.logical_specs(t5.param_shapes(config)))")
  shardings = logical_to_sharding(logical_axes, mesh, rules)
  _check_divisible(params, shardings)
  return jax.device_put(params, shardings)


def _check_divisible(params: Any, shardings: Any) -> None:
  """Name the parameter whose dim does not split evenly (device_put's error does not)."""
  flat = traverse_util.flatten_dict(_as_dict(params), sep="/")
  flat_sh = traverse_util.flatten_dict(_as_dict(shardings), sep="/")
  for name, value in flat.items():
    sharding = flat_sh[name]
    sizes = dict(zip(sharding.mesh.axis_names, sharding.mesh.devices.shape))
    for i, axes in enumerate(sharding.spec):
      axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
      n = math.prod(sizes[a] for a in axes)
      if np.shape(value)[i] % n:
        raise ValueError(f"param {name} has shape {np.shape(value)}: dim {i} ({np.shape(value)[i]}) "
                         f"does not divide by mesh axes {axes} of size {n}; change --num_partitions")


def _as_dict(tree: Any) -> dict:
  if hasattr(tree, "unfreeze"):
    tree = tree.unfreeze()
  if not isinstance(tree, Mapping):
    raise ValueError(f"expected a nested dict of params, got {type(tree).__name__}")
  return dict(tree)


# ----------------------------------------------------------------------------- hosts


@dataclasses.dataclass(frozen=True)
class DataLayout:
  """This host's share of the global batch: feed rows `rows` (shard `shard_id` of `num_shards`).

  Hosts whose devices hold the same batch rows (model parallelism across hosts) get
  the same shard and must feed identical examples.
  """
  shard_id: int
  num_shards: int
  rows: slice

  @property
  def per_host_batch_size(self) -> int:
    return self.rows.stop - self.rows.start


def data_layout(global_batch_size: int, mesh: Mesh) -> DataLayout:
  """Rows of the [B, ...] global batch that `jax.process_index()` must provide."""
  data = mesh.shape["data"]
  if global_batch_size % data:
    raise ValueError(f"global batch size {global_batch_size} is not divisible by the data-parallel size "
                     f"{data} (devices / num_partitions): change DataConfig.batch_size (BATCH_SIZE, "
                     f"plan's --batch_size) or PartitionConfig.num_partitions")
  index_map = batch_sharding(mesh).devices_indices_map((global_batch_size,))
  owner = {d: d.process_index for d in mesh.devices.flat}
  return _layout_for(index_map, owner, jax.process_index(), global_batch_size)


def _layout_for(index_map: Mapping[Any, tuple[slice, ...]], owner: Mapping[Any, int],
                process: int, size: int) -> DataLayout:
  """Pure helper: per-process contiguous row ranges -> this process's DataLayout."""
  ranges: dict[int, tuple[int, int]] = {}
  rows_of: dict[int, set[int]] = {}
  for device, index in index_map.items():
    start, stop, _ = index[0].indices(size)
    rows_of.setdefault(owner[device], set()).update(range(start, stop))
  for p, rows in rows_of.items():
    lo, hi = min(rows), max(rows) + 1
    if hi - lo != len(rows):
      raise ValueError(f"process {p} holds non-contiguous batch rows {sorted(rows)}; "
                       "build the mesh with sharding.make_mesh")
    ranges[p] = (lo, hi)
  distinct = sorted(set(ranges.values()))
  lo, hi = ranges[process]
  return DataLayout(distinct.index((lo, hi)), len(distinct), slice(lo, hi))


def make_global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh,
                      global_batch_size: int) -> dict[str, jax.Array]:
  """Per-host numpy rows {name: [B_host, ...]} -> global jax.Arrays [B, ...] on 'data'."""
  layout = data_layout(global_batch_size, mesh)
  sharding = batch_sharding(mesh)
  out = {}
  for name, value in local_batch.items():
    if value.shape[0] != layout.per_host_batch_size:
      raise ValueError(f"batch feature {name!r} has {value.shape[0]} rows on host {jax.process_index()}; "
                       f"expected {layout.per_host_batch_size} (global batch {global_batch_size})")
    out[name] = jax.make_array_from_process_local_data(
        sharding, value, (global_batch_size,) + tuple(value.shape[1:]))
  return out


ReadArrayFn = Callable[[str, tuple[slice, ...]], np.ndarray]


def load_params_sharded(read_array_fn: ReadArrayFn, shapes: Mapping[str, Any],
                        shardings: Mapping[str, Any], dtypes: Mapping[str, Any] | None = None) -> dict:
  """Create each param directly in its shards, reading only this host's slices.

  read_array_fn(name, index) returns the [slice of] array `name` ('/'-joined T5X path,
  e.g. 'encoder/layers_0/mlp/wi_0/kernel') at `index`, a tuple of slices, e.g.
  `functools.partial(checkpoints.t5x.read_t5x_array, path)`. `shapes` and `shardings`
  are nested or '/'-flat dicts with the same keys; each unique slice is read once.
  """
  nested = any(isinstance(v, Mapping) for v in shapes.values())
  flat_shapes = traverse_util.flatten_dict(_as_dict(shapes), sep="/") if nested else dict(shapes)
  flat_sh = traverse_util.flatten_dict(_as_dict(shardings), sep="/") if nested else dict(shardings)
  flat_dt = dict(dtypes or {})
  if nested and dtypes:
    flat_dt = traverse_util.flatten_dict(_as_dict(dtypes), sep="/")
  missing = sorted(set(flat_shapes) - set(flat_sh))
  if missing:
    raise ValueError(f"load_params_sharded: no sharding for params {missing[:5]}")
  out = {}
  for name, shape in flat_shapes.items():
    shape = tuple(getattr(shape, "shape", shape))
    out[name] = _read_one(read_array_fn, name, shape, flat_sh[name], flat_dt.get(name))
  return traverse_util.unflatten_dict(out, sep="/") if nested else out


def _read_one(read_array_fn: ReadArrayFn, name: str, shape: tuple[int, ...],
              sharding: NamedSharding, dtype: Any) -> jax.Array:
  cache: dict[tuple, np.ndarray] = {}

  def callback(index: tuple[slice, ...]) -> np.ndarray:
    key = tuple(s.indices(n) for s, n in zip(index, shape))
    if key not in cache:
      chunk = np.asarray(read_array_fn(name, tuple(index)))
      want = tuple(len(range(*k)) for k in key)
      if chunk.shape != want:
        raise ValueError(f"reading {name}{list(key)}: got shape {chunk.shape}, expected {want}")
      cache[key] = chunk if dtype is None else chunk.astype(dtype)
    return cache[key]

  return jax.make_array_from_callback(shape, sharding, callback)
