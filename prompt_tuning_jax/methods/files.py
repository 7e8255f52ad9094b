"""Trained deltas on disk: our safetensors format for every method, PEFT LoRA adapters.

`delta.safetensors` (our format): one float32 tensor per trained leaf under its T5X slash
path in the method's exported form (prefix tuning: plain `<attention>/prefix_key|value`
[P, H k]; LoRA: `<dense>/lora_a` [in, r], `lora_b` [r, out]), and the metadata
`{"format": "prompt_tuning_jax.delta", "method": <name>, "config": <json of its fields>}`.
`load_delta` gives back the method (prefix: its plain form) and the leaves, ready to be
merged into the frozen backbone (`apply_delta`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
from flax import traverse_util

from prompt_tuning_jax.checkpoints import fs, hf
from prompt_tuning_jax.config import T5Config
from prompt_tuning_jax.methods import base
from prompt_tuning_jax.methods.lora import LoRA
from prompt_tuning_jax.model import t5
from prompt_tuning_jax.prompt import PROMPT_PATTERN
from prompt_tuning_jax.prompt import files as prompt_files

DELTA_FILE = "delta.safetensors"
FORMAT = "prompt_tuning_jax.delta"


def save_delta(directory: str | os.PathLike, method: base.DeltaMethod, config: T5Config, trained: Any) -> str:
  """Writes `<directory>/delta.safetensors` from the trained leaves (nested or flat)."""
  flat = traverse_util.flatten_dict(trained, sep="/") if _nested(trained) else dict(trained)
  flat = {k: v for k, v in flat.items() if not re.fullmatch(PROMPT_PATTERN, k)}
  tensors = {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in
             method.export_params(flat, config).items()}
  fields = {f.name: getattr(method, f.name) for f in dataclasses.fields(method)}
  meta = {"format": FORMAT, "method": method.name, "config": json.dumps(fields)}
  blob = safetensors.numpy.save(tensors, metadata=meta)
  return fs.atomic_write(fs.join(os.fspath(directory), DELTA_FILE), blob)  # local or gs://


def load_delta(path: str | os.PathLike) -> tuple[base.DeltaMethod, dict[str, np.ndarray]]:
  """A `delta.safetensors` (or its folder) -> (method in its inference form, flat leaves)."""
  from prompt_tuning_jax.methods import METHODS  # the registry imports this module's siblings
  path = Path(path)
  if path.is_dir():
    path = path / DELTA_FILE
  if not path.is_file():
    raise FileNotFoundError(f"delta file not found: {path}")
  with open(path, "rb") as f:
    header_len = int.from_bytes(f.read(8), "little")
    meta = json.loads(f.read(header_len)).get("__metadata__", {})
  if meta.get("format") != FORMAT or meta.get("method") not in METHODS:
    raise ValueError(f"{path}: not a {FORMAT} file (metadata {meta}); methods are {sorted(METHODS)}")
  fields = json.loads(meta["config"])
  fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
  method = METHODS[meta["method"]](**fields)
  if hasattr(method, "plain"):
    method = method.plain()
  return method, safetensors.numpy.load_file(str(path))


def apply_delta(model: t5.Transformer, params: Any, path: str | os.PathLike) -> tuple[t5.Transformer, Any]:
  """What `score`/`eval --delta=PATH` use: (the model, prompt or bank included, composed
  with the delta's method; params with the delta's leaves added to the frozen backbone)."""
  method, leaves = load_delta(path)
  flat = traverse_util.flatten_dict(params, sep="/")
  clash = sorted(k for k in leaves if k in flat)
  if clash:
    raise ValueError(f"{path}: delta leaves {clash[:3]} overwrite backbone weights")
  flat.update(leaves)
  if method.uses_hooks:
    model = model.clone(interceptor=method.intercept)
  return model, traverse_util.unflatten_dict(flat, sep="/")


def _nested(tree: Any) -> bool:
  return any(isinstance(v, dict) for v in tree.values())


# ----- PEFT LoRA -----

def _hf_modules(config: T5Config) -> dict[str, str]:
  """T5X Dense path ('encoder/layers_0/attention/query') -> HF module ('encoder.block.0.layer.0.SelfAttention.q')."""
  return {ours[:-len("/kernel")]: theirs[:-len(".weight")] for theirs, ours, _ in hf.name_map(config)
          if ours.endswith("/kernel")}


def save_peft_lora(directory: str | os.PathLike, method: LoRA, config: T5Config, trained: Any, *,
                   base_model_name_or_path: str | None = None) -> Path:
  """A PEFT LoRA adapter (`adapter_config.json` + `adapter_model.safetensors`) on HF T5
  module names: lora_A.weight = A^T [r, in], lora_B.weight = B^T [out, r]."""
  flat = traverse_util.flatten_dict(trained, sep="/") if _nested(trained) else dict(trained)
  modules = _hf_modules(config)
  tensors = {}
  for key, value in flat.items():
    if not key.endswith(("/lora_a", "/lora_b")):
      continue
    dense, which = key.rsplit("/", 1)
    if dense not in modules:
      raise ValueError(f"LoRA leaf {key} has no Hugging Face module (known: {sorted(modules)[:3]}...)")
    name = f"base_model.model.{modules[dense]}.lora_{which[-1].upper()}.weight"
    tensors[name] = np.ascontiguousarray(np.asarray(value, np.float32).T)
  if not tensors:
    raise ValueError("save_peft_lora: no lora_a/lora_b leaves in the trained tree")
  hf_names = dict(hf._ATTN)  # noqa: SLF001  q/k/v/o <-> query/key/value/out
  ours_to_hf = {v: k for k, v in hf_names.items()}
  target_modules = sorted({ours_to_hf.get(t, t) for t in method.targets})
  adapter_config = {
      "peft_type": "LORA", "task_type": "SEQ_2_SEQ_LM", "r": method.rank, "lora_alpha": method.alpha,
      "target_modules": target_modules, "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
      "inference_mode": True, "base_model_name_or_path": base_model_name_or_path, "modules_to_save": None,
      "init_lora_weights": True, "use_rslora": False, "use_dora": False}
  directory = Path(directory)
  blob = safetensors.numpy.save(tensors, metadata={"format": "pt"})
  prompt_files._atomic_write(directory / prompt_files.PEFT_WEIGHTS_FILE, lambda f: f.write(blob))  # noqa: SLF001
  text = json.dumps(adapter_config, indent=2, sort_keys=True) + "\n"
  prompt_files._atomic_write(directory / prompt_files.PEFT_CONFIG_FILE, lambda f: f.write(text.encode()))  # noqa: SLF001
  return directory
