"""Nested parameter dicts <-> flat {'encoder/layers_0/...': leaf} maps.

Checkpoint formats and error messages speak in slash keys ('encoder/prompt/prompt/prompt'),
models in nested dicts; these two helpers are the only place that converts.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """Nested mapping -> {'a/b/c': leaf}. Any non-Mapping value is a leaf."""
  flat: dict[str, Any] = {}
  for key, value in tree.items():
    name = f"{prefix}/{key}" if prefix else str(key)
    if isinstance(value, Mapping):
      flat.update(flatten(value, name))
    else:
      flat[name] = value
  return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  """{'a/b/c': leaf} -> nested dicts; refuses a key that is both a leaf and a prefix."""
  tree: dict[str, Any] = {}
  for name, value in flat.items():
    *parents, last = name.split("/")
    node = tree
    for i, part in enumerate(parents):
      node = node.setdefault(part, {})
      if not isinstance(node, dict):
        raise ValueError(f"key {name!r} nests under leaf {'/'.join(parents[:i + 1])!r}")
    if last in node:
      raise ValueError(f"key {name!r} given twice or is also a prefix of another key")
    node[last] = value
  return tree
