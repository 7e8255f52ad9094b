"""The method protocol, the composed model, and initialising a method's parameters.

Why an interceptor: `nn.intercept_methods` sees every layer call with its bound module,
so a method can create parameters in that module's scope (stable T5X-style paths such
as `encoder/layers_0/attention/query/lora_a`, with logical axes for `sharding.py`) and
change the call's inputs or outputs, while `model/` stays method-agnostic.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from prompt_tuning_jax.model.config import T5Config
from prompt_tuning_jax.model import layers, t5
from prompt_tuning_jax.prompt import PROMPT_PATTERN, wrapper

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class DeltaMethod:
  """Base: no hooks, nothing trainable. Subclasses set `name` and override what they use."""
  name: ClassVar[str] = ""
  uses_hooks: ClassVar[bool] = True  # False: specification-based, only a trainable pattern

  def intercept(self, next_fun, args, kwargs, context) -> Any:
    """The flax interceptor: default passes every call through unchanged."""
    return next_fun(*args, **kwargs)

  def patterns(self, config: T5Config) -> tuple[str, ...]:
    """Regexes (full match on slash-joined paths) of the parameters this method trains."""
    raise NotImplementedError

  def export_params(self, delta: dict, config: T5Config) -> dict:
    """Flat {path: array} trained leaves -> the form written to files (prefix tuning
    evaluates its MLP here)."""
    return delta


def make_model(t5_config: T5Config, prompt_config: wrapper.PromptConfig | None,
               method: DeltaMethod | None) -> t5.Transformer:
  """The frozen T5 (with its prompt, if any) composed with the method's interceptor."""
  model = wrapper.make_model(t5_config, prompt_config)
  if method is None or not method.uses_hooks:
    return model
  return model.clone(interceptor=method.intercept)


def trainable_patterns(method: DeltaMethod, config: T5Config, *, with_prompt: bool) -> tuple[str, ...]:
  return method.patterns(config) + ((PROMPT_PATTERN,) if with_prompt else ())


def add_delta_params(model: t5.Transformer, params: dict, rng: Array) -> dict:
  """params plus the leaves the composed model has and params lacks, freshly initialised.

  Jitted so XLA drops the backbone's (unused) initialisation; other leaves are shared.
  """
  tokens = jnp.ones((1, 2), jnp.int32)
  have = traverse_util.flatten_dict(params, sep="/")
  shapes = traverse_util.flatten_dict(nn.unbox(jax.eval_shape(lambda r: model.init(r, tokens, tokens, tokens),
                                                              rng)["params"]), sep="/")
  new = sorted(k for k in shapes if k not in have)
  if not new:
    return params
  fresh = jax.jit(lambda r: {k: v for k, v in traverse_util.flatten_dict(
      nn.unbox(model.init(r, tokens, tokens, tokens)["params"]), sep="/").items() if k in new})(rng)
  return traverse_util.unflatten_dict({**have, **fresh}, sep="/")


def backbone_only(tree: Any, config: T5Config) -> dict:
  """The subtree of `tree` at the plain T5's parameter paths (what a checkpoint holds)."""
  want = traverse_util.flatten_dict(nn.unbox(t5.param_shapes(config)), sep="/")
  flat = traverse_util.flatten_dict(tree, sep="/")
  return traverse_util.unflatten_dict({k: v for k, v in flat.items() if k in want}, sep="/")


def is_call(context, module_type: type | tuple[type, ...], names: Sequence[str] | None = None) -> bool:
  """True for `module_type.__call__`, optionally only for modules named in `names`."""
  module = context.module
  return (context.method_name == "__call__" and isinstance(module, module_type)
          and (names is None or module.name in names))


# Trace-time: the method's root parameters, made or read where each stack starts (outside any
# lifted transform) and closed over by the layers, which may be rematerialised (`nn.remat`
# gives a layer a scope of its own, from which the model's root is out of reach).
_ROOT: dict[str, Array] = {}


def enter_stack(context, specs: dict[str, tuple[Any, Sequence[int], tuple[str, ...]]]) -> bool:
  """At an Encoder or Decoder call, make (or read) the root parameters `specs`
  ({name: (init, shape, logical axes)}) for `shared_param`; False for any other call."""
  if not is_call(context, (t5.Encoder, t5.Decoder)):
    return False
  root = context.module.scope.root
  for name, (init, shape, axes) in specs.items():
    if root.has_variable("params", name):
      _ROOT[name] = nn.unbox(root.get_variable("params", name))
    else:
      _ROOT[name] = root.param(name, nn.with_logical_partitioning(init, axes), tuple(shape), jnp.float32)
  return True


def shared_param(name: str) -> Array:
  """A root parameter `enter_stack` made for this trace, shared by every layer."""
  if name not in _ROOT:
    raise KeyError(f"root parameter {name!r} is made at the Encoder/Decoder call; the method must call enter_stack")
  return _ROOT[name]


def dense_input(module: layers.Dense, x: Array) -> Array:
  """A Dense layer's input flattened as the layer does: [..., in] in its dtype."""
  return jnp.asarray(x, module.dtype).reshape(x.shape[:-module.in_axes] + (-1,))


param = layers._param  # a float32 parameter with logical axes, created in a module's scope  # noqa: SLF001
