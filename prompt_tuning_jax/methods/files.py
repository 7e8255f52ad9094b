"""Trained deltas on disk: our safetensors format for every method, PEFT LoRA and
prefix-tuning adapters.

`delta.safetensors` (our format): one float32 tensor per trained leaf under its T5X slash
path in the method's exported form (prefix tuning: plain `<attention>/prefix_key|value`
[P, H k]; LoRA: `<dense>/lora_a` [in, r], `lora_b` [r, out]), and the metadata
`{"format": "prompt_tuning_jax.delta", "method": <name>, "config": <json of its fields>,
"t5": <json of the backbone's shape>}`; `apply_delta` refuses a backbone of another shape.
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
from prompt_tuning_jax.model.config import T5Config
from prompt_tuning_jax.methods import base
from prompt_tuning_jax.methods.lora import LoRA
from prompt_tuning_jax.methods.prefix import PrefixTuning
from prompt_tuning_jax.model import t5
from prompt_tuning_jax.prompt import PROMPT_PATTERN
from prompt_tuning_jax.prompt import files as prompt_files

DELTA_FILE = "delta.safetensors"
FORMAT = "prompt_tuning_jax.delta"
# The backbone fields a delta's shapes and paths depend on (recorded, checked, and enough to export).
SHAPE_FIELDS = ("vocab_size", "emb_dim", "num_heads", "num_encoder_layers", "num_decoder_layers", "head_dim",
                "mlp_dim")


def save_delta(directory: str | os.PathLike, method: base.DeltaMethod, config: T5Config, trained: Any) -> str:
  """Writes `<directory>/delta.safetensors` from the trained leaves (nested or flat)."""
  flat = traverse_util.flatten_dict(trained, sep="/") if _nested(trained) else dict(trained)
  flat = {k: v for k, v in flat.items() if not re.fullmatch(PROMPT_PATTERN, k)}
  tensors = {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in
             method.export_params(flat, config).items()}
  fields = {f.name: getattr(method, f.name) for f in dataclasses.fields(method)}
  meta = {"format": FORMAT, "method": method.name, "config": json.dumps(fields),
          "t5": json.dumps({name: getattr(config, name) for name in SHAPE_FIELDS})}
  blob = safetensors.numpy.save(tensors, metadata=meta)
  return fs.atomic_write(fs.join(os.fspath(directory), DELTA_FILE), blob)  # local or gs://


def load_delta(path: str | os.PathLike) -> tuple[base.DeltaMethod, dict[str, np.ndarray]]:
  """A `delta.safetensors` (or its folder) -> (method in its inference form, flat leaves)."""
  from prompt_tuning_jax.methods import METHODS  # the registry imports this module's siblings
  path, meta = _metadata(path)
  if meta.get("format") != FORMAT or meta.get("method") not in METHODS:
    raise ValueError(f"{path}: not a {FORMAT} file (metadata {meta}); methods are {sorted(METHODS)}")
  fields = json.loads(meta["config"])
  fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
  method = METHODS[meta["method"]](**fields)
  if hasattr(method, "plain"):
    method = method.plain()
  return method, safetensors.numpy.load_file(str(path))


def delta_backbone_shape(path: str | os.PathLike) -> dict[str, int]:
  """The backbone shape a `delta.safetensors` was trained on ({} for files written before it was recorded)."""
  _, meta = _metadata(path)
  return json.loads(meta["t5"]) if "t5" in meta else {}


def _metadata(path: str | os.PathLike) -> tuple[Path, dict[str, str]]:
  """(the file, its safetensors `__metadata__`), reading only the header."""
  path = Path(path)
  path = path / DELTA_FILE if path.is_dir() else path
  if not path.is_file():
    raise FileNotFoundError(f"delta file not found: {path}")
  with open(path, "rb") as f:
    header_len = int.from_bytes(f.read(8), "little")
    return path, json.loads(f.read(header_len)).get("__metadata__", {})


def check_backbone(path: str | os.PathLike, config: T5Config) -> None:
  """Refuses a delta trained on a backbone of another shape, naming the file and the field."""
  recorded = delta_backbone_shape(path)
  wrong = {k: (v, getattr(config, k)) for k, v in recorded.items() if getattr(config, k, v) != v}
  if wrong:
    detail = ", ".join(f"{k}: delta {a}, model {b}" for k, (a, b) in sorted(wrong.items()))
    raise ValueError(f"{_metadata(path)[0]}: the delta was trained on another backbone ({detail})")


def apply_delta(model: t5.Transformer, params: Any, path: str | os.PathLike) -> tuple[t5.Transformer, Any]:
  """What `score`/`eval --delta=PATH` use: (the model, prompt or bank included, composed
  with the delta's method; params with the delta's leaves added to the frozen backbone)."""
  check_backbone(path, model.config)
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


def save_peft(directory: str | os.PathLike, method: base.DeltaMethod, config: T5Config, trained: Any, *,
              base_model_name_or_path: str | None = None) -> Path:
  """The PEFT adapter for a method PEFT can hold on T5 (LoRA; prefix tuning in its PEFT form)."""
  if isinstance(method, LoRA):
    return save_peft_lora(directory, method, config, trained, base_model_name_or_path=base_model_name_or_path)
  if isinstance(method, PrefixTuning):
    return save_peft_prefix(directory, method, config, trained, base_model_name_or_path=base_model_name_or_path)
  raise ValueError(f"no PEFT form for the {method.name!r} method on T5 (PEFT holds LoRA and prefix tuning; prompts "
                   "export with --prompt); its delta.safetensors is the portable file")


# ----- PEFT prefix tuning -----

PEFT_PREFIX_TENSOR = "prompt_embeddings"


def save_peft_prefix(directory: str | os.PathLike, method: PrefixTuning, config: T5Config, trained: Any, *,
                     base_model_name_or_path: str | None = None) -> Path:
  """A PEFT prefix-tuning adapter for T5 that reproduces `method` exactly.

  What PEFT does with a T5 prefix adapter: its prompt encoder's first P rows, viewed as
  [P, 2 num_layers, H, k], are duplicated and cut into groups of four per decoder layer
  (self key, self value, cross key, cross value); the cross pair is dropped (the encoder
  output is attended as usual) and the encoder gets nothing. So only
  `PrefixTuning(sites=("decoder",), positions="preceding")` has a PEFT form. We declare
  `num_layers = 2 L` so the first copy alone covers the L decoder layers (layer i reads
  entries 4i, 4i+1; no two layers share a prefix) and leave the unused entries zero.
  `prompt_embeddings` is [P, 4 L H k] float32.
  """
  if tuple(method.sites) != ("decoder",) or method.positions != "preceding":
    raise ValueError(
        f"save_peft_prefix: PEFT's T5 prefix tuning puts prefixes in decoder self-attention only, at the positions "
        f"before the target, but this method has sites={method.sites!r}, positions={method.positions!r}; train with "
        "gin/methods/prefix_peft.gin (PrefixTuning.sites=('decoder',), PrefixTuning.positions='preceding') to export "
        "to PEFT, or keep delta.safetensors (save_delta) for these prefixes")
  flat = traverse_util.flatten_dict(trained, sep="/") if _nested(trained) else dict(trained)
  plain = method.export_params(flat, config)
  p, layers, joined = method.length, config.num_decoder_layers, config.num_heads * config.head_dim
  table = np.zeros((p, 4 * layers, joined), np.float32)
  for i in range(layers):
    for j, which in enumerate(("prefix_key", "prefix_value")):
      key = f"decoder/layers_{i}/self_attention/{which}"
      if key not in plain:
        raise ValueError(f"save_peft_prefix: the trained prefixes lack {key} (have {sorted(plain)[:4]}...)")
      table[:, 4 * i + j] = np.asarray(plain[key], np.float32).reshape(p, joined)
  adapter_config = {
      "peft_type": "PREFIX_TUNING", "task_type": "SEQ_2_SEQ_LM", "num_virtual_tokens": p, "token_dim": joined,
      "num_transformer_submodules": 2, "num_attention_heads": config.num_heads, "num_layers": 2 * layers,
      "encoder_hidden_size": config.emb_dim, "prefix_projection": False, "inference_mode": True,
      "base_model_name_or_path": base_model_name_or_path, "revision": None, "modules_to_save": None}
  directory = Path(directory)
  tensors = {PEFT_PREFIX_TENSOR: np.ascontiguousarray(table.reshape(p, 4 * layers * joined))}
  blob = safetensors.numpy.save(tensors, metadata={"format": "pt"})
  prompt_files._atomic_write(directory / prompt_files.PEFT_WEIGHTS_FILE, lambda f: f.write(blob))  # noqa: SLF001
  text = json.dumps(adapter_config, indent=2, sort_keys=True) + "\n"
  prompt_files._atomic_write(directory / prompt_files.PEFT_CONFIG_FILE, lambda f: f.write(text.encode()))  # noqa: SLF001
  return directory
