"""Hugging Face T5 <-> T5X parameter names and configs (FACTS.md 'Hugging Face formats').

HF stores torch Linear weights as [out, in], so every kernel is transposed against
T5X's [in, out]; the relative bias lives only in block 0 as [buckets, heads] (the
transpose of `rel_embedding`); `lm_head.weight` [V, d] is the transpose of
`decoder/logits_dense/kernel` (absent for tied T5 1.0). One table, `name_map`, drives
both directions, so a name is never spelled twice.

Every file read from a model folder must be a regular file inside it (`entries`): a
link may point anywhere inside the model's folder, or, for a hub cache snapshot
(`models--org--name/snapshots/<rev>/`), inside `models--org--name/` (its `blobs/`).
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from typing import Any

import ml_dtypes
import numpy as np

from prompt_tuning_jax.checkpoints import checksums, entries, tree
from prompt_tuning_jax.checkpoints.validation import (
  CheckpointCorruptError,
  CheckpointMismatchError,
  param_shapes,
  validate_params,
)
from prompt_tuning_jax.model.config import T5Config

# Keys HF checkpoints may carry that duplicate another weight (tied embeddings, an
# unused cross-attention bias some old exports hold).
_REDUNDANT = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight",
              "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight")
_ATTN = (("q", "query"), ("k", "key"), ("v", "value"), ("o", "out"))
_HF_INT_FIELDS = ("vocab_size", "d_model", "num_heads", "d_kv", "d_ff", "num_layers", "num_decoder_layers",
                  "relative_attention_num_buckets", "relative_attention_max_distance")
_FF_PROJ = {("gelu", "linear"): "gated-gelu", ("relu",): "relu", ("relu", "linear"): "gated-relu"}
MAX_JSON_BYTES = 64 << 20  # config.json and *.index.json are a few KB; an index of 10^5 tensors ~10 MB


def _mlp_names(cfg: T5Config) -> list[str]:
  n = len(cfg.mlp_activations)
  return ["wi", "wo"] if n == 1 else [f"wi_{i}" for i in range(n)] + ["wo"]


def name_map(cfg: T5Config) -> list[tuple[str, str, bool]]:
  """[(hf key, t5x slash key, transposed)] for every weight of `cfg`."""
  pairs = [("shared.weight", "token_embedder/embedding", False)]
  stacks = (("encoder", cfg.num_encoder_layers, (("SelfAttention", "attention"),),
             ("pre_attention_layer_norm", "pre_mlp_layer_norm")),
            ("decoder", cfg.num_decoder_layers,
             (("SelfAttention", "self_attention"), ("EncDecAttention", "encoder_decoder_attention")),
             ("pre_self_attention_layer_norm", "pre_cross_attention_layer_norm", "pre_mlp_layer_norm")))
  for stack, n_layers, attentions, norms in stacks:
    for i in range(n_layers):
      hf, ours = f"{stack}.block.{i}.layer", f"{stack}/layers_{i}"
      for j, (hf_attn, our_attn) in enumerate(attentions):
        pairs += [(f"{hf}.{j}.{hf_attn}.{a}.weight", f"{ours}/{our_attn}/{b}/kernel", True) for a, b in _ATTN]
      mlp_layer = len(attentions)
      pairs += [(f"{hf}.{mlp_layer}.DenseReluDense.{w}.weight", f"{ours}/mlp/{w}/kernel", True)
                for w in _mlp_names(cfg)]
      pairs += [(f"{hf}.{j}.layer_norm.weight", f"{ours}/{norm}/scale", False) for j, norm in enumerate(norms)]
    pairs.append((f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                   f"{stack}/relpos_bias/rel_embedding", True))
    pairs.append((f"{stack}.final_layer_norm.weight", f"{stack}/{stack}_norm/scale", False))
  if not cfg.logits_via_embedding:
    pairs.append(("lm_head.weight", "decoder/logits_dense/kernel", True))
  return pairs


def hf_config_from_t5(cfg: T5Config, dtype: str = "float32") -> dict[str, Any]:
  """HF config.json dict for `cfg`."""
  if tuple(cfg.mlp_activations) not in _FF_PROJ:
    raise ValueError(f"T5Config.mlp_activations={cfg.mlp_activations!r} has no HF feed_forward_proj; "
                     f"supported: {list(_FF_PROJ)}")
  return {
      "architectures": ["T5ForConditionalGeneration"], "model_type": "t5", "is_encoder_decoder": True,
      "vocab_size": cfg.vocab_size, "d_model": cfg.emb_dim, "d_kv": cfg.head_dim, "d_ff": cfg.mlp_dim,
      "num_layers": cfg.num_encoder_layers, "num_decoder_layers": cfg.num_decoder_layers,
      "num_heads": cfg.num_heads, "relative_attention_num_buckets": cfg.relative_attention_num_buckets,
      "relative_attention_max_distance": cfg.relative_attention_max_distance,
      "feed_forward_proj": _FF_PROJ[tuple(cfg.mlp_activations)],
      "tie_word_embeddings": cfg.logits_via_embedding, "layer_norm_epsilon": cfg.layer_norm_epsilon,
      "dropout_rate": cfg.dropout_rate, "decoder_start_token_id": 0, "pad_token_id": 0, "eos_token_id": 1,
      "dtype": dtype,
  }


def t5_config_from_hf(hf_config: Mapping[str, Any]) -> T5Config:
  """T5Config from an HF config.json dict (HF defaults where a field is absent)."""
  proj = hf_config.get("feed_forward_proj", "relu")
  activations = {v: k for k, v in _FF_PROJ.items()}.get(proj)
  if activations is None:
    raise ValueError(f"HF config feed_forward_proj={proj!r} is not supported; use one of {sorted(_FF_PROJ.values())}")
  for key, value in hf_config.items():
    if value is None and key == "num_decoder_layers":
      continue
    if key in _HF_INT_FIELDS and (isinstance(value, bool) or not isinstance(value, int)):
      raise ValueError(f"{key}={value!r} must be an integer")
  num_layers = int(hf_config.get("num_layers", 6))
  return T5Config(
      vocab_size=int(hf_config.get("vocab_size", 32128)), emb_dim=int(hf_config.get("d_model", 512)),
      num_heads=int(hf_config.get("num_heads", 8)), head_dim=int(hf_config.get("d_kv", 64)),
      mlp_dim=int(hf_config.get("d_ff", 2048)), num_encoder_layers=num_layers,
      num_decoder_layers=int(hf_config.get("num_decoder_layers") or num_layers), mlp_activations=activations,
      logits_via_embedding=bool(hf_config.get("tie_word_embeddings", True)),
      relative_attention_num_buckets=int(hf_config.get("relative_attention_num_buckets", 32)),
      relative_attention_max_distance=int(hf_config.get("relative_attention_max_distance", 128)),
      layer_norm_epsilon=float(hf_config.get("layer_norm_epsilon", 1e-6)))


def hf_to_t5x(state_dict: Mapping[str, Any], hf_config: Mapping[str, Any], *,
              source: str = "HF state dict") -> tuple[dict[str, Any], T5Config]:
  """HF T5 weights -> (T5X params nested dict, T5Config); every key is accounted for.

  Refuses (CheckpointMismatchError) missing keys, unknown keys and wrong shapes, all
  listed at once with the HF key; tolerates the redundant tied keys in `_REDUNDANT`
  and a tied `lm_head.weight` when tie_word_embeddings is true (T5 1.0).
  """
  cfg = t5_config_from_hf(hf_config)
  expected = tree.flatten(param_shapes(cfg))
  pairs = name_map(cfg)
  tolerated = set(_REDUNDANT) | ({"lm_head.weight"} if cfg.logits_via_embedding else set())
  missing = [hf for hf, _, _ in pairs if hf not in state_dict]
  known = {hf for hf, _, _ in pairs} | tolerated
  unexpected = sorted(k for k in state_dict if k not in known)
  wrong = []
  for hf, ours, transposed in pairs:
    if hf in state_dict:
      need = expected[ours].shape[::-1] if transposed else expected[ours].shape
      have = tuple(state_dict[hf].shape)
      if have != tuple(need):
        wrong.append(f"{hf}: expected shape {tuple(need)}, found {have}")
  if missing or unexpected or wrong:
    lines = [f"HF checkpoint {source} does not match its config ({cfg}):"]
    lines += [f"missing key: {k}" for k in missing] + [f"unexpected key: {k}" for k in unexpected] + wrong
    raise CheckpointMismatchError("\n".join(lines))
  flat = {}
  for hf, ours, transposed in pairs:
    arr = _to_numpy(state_dict[hf])
    flat[ours] = np.ascontiguousarray(arr.T if transposed else arr)
  return tree.unflatten(flat), cfg


def t5x_to_hf(params: Mapping[str, Any], cfg: T5Config) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """T5X params -> (HF state dict of contiguous np arrays, HF config.json dict)."""
  validate_params(params, param_shapes(cfg), source="params given to t5x_to_hf")
  flat = tree.flatten(params)
  state = {}
  for hf, ours, transposed in name_map(cfg):
    arr = np.asarray(flat[ours])
    state[hf] = np.ascontiguousarray(arr.T if transposed else arr)
  dtype = "bfloat16" if state["shared.weight"].dtype == ml_dtypes.bfloat16 else state["shared.weight"].dtype.name
  return state, hf_config_from_t5(cfg, dtype=dtype)


def _to_numpy(value: Any) -> np.ndarray:
  """np.ndarray or torch.Tensor (bfloat16 kept bit-exact via ml_dtypes) -> np.ndarray."""
  if hasattr(value, "detach"):
    import torch
    value = value.detach().cpu()
    if value.dtype == torch.bfloat16:
      return value.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return value.numpy()
  return np.asarray(value)


def _load_weight_file(path: str, root: str) -> dict[str, np.ndarray]:
  """One safetensors or torch `.bin` file inside `root`; any failure is an error naming the file."""
  if not os.path.lexists(path):
    raise FileNotFoundError(f"HF weights file not found: {path}")
  entries.check(path, root, "HF weights")
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file
    try:
      state = load_file(path)
    except Exception as e:  # SafetensorError, OSError, ...: safetensors names no file
      with open(path, "rb") as f:
        hint = entries.lfs_pointer_hint(f.read(64))
      raise CheckpointCorruptError(f"cannot read safetensors file {path}: {type(e).__name__}: {e}.{hint}") from None
  else:
    import torch
    try:
      loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError's text suggests weights_only=False: never do that here
      reason = str(e).splitlines()[0][:200] if "weights_only" not in str(e).splitlines()[0] else "refused"
      raise CheckpointCorruptError(
          f"cannot read torch weights {path} safely ({type(e).__name__}: {reason}); only plain tensor "
          "state dicts are loaded (no arbitrary pickled objects). Convert it to model.safetensors.") from None
    if not isinstance(loaded, dict) or not all(hasattr(v, "detach") for v in loaded.values()):
      raise CheckpointCorruptError(f"torch weights {path} is not a state dict of tensors")
    state = {k: _to_numpy(v) for k, v in loaded.items()}
  recorded = checksums.read_manifest(path, root)
  for key, value in state.items():
    checksums.verify(key, value, recorded, path)
  return state


def _read_json(path: str, what: str, root: str) -> Any:
  try:
    return json.loads(entries.read_bytes(path, root, what, max_bytes=MAX_JSON_BYTES).decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
    raise CheckpointCorruptError(f"{what} {path} is not valid JSON: {e}") from None


def _shard_files(index: str, root: str) -> list[str]:
  data = _read_json(index, "HF weight index", root)
  weight_map = data.get("weight_map") if isinstance(data, dict) else None
  if not isinstance(weight_map, dict) or not weight_map or not all(
      isinstance(v, str) and v and os.path.basename(v) == v for v in weight_map.values()):
    raise CheckpointCorruptError(f"HF weight index {index}: 'weight_map' must map tensor names to shard "
                                 "file names in the same directory")
  return sorted(set(weight_map.values()))


def read_hf_state_dict(directory: str) -> dict[str, np.ndarray]:
  """All weights of an HF model directory: single file or sharded `*.index.json`."""
  root = entries.checkpoint_root(directory)
  for name in ("model.safetensors", "pytorch_model.bin"):
    if os.path.lexists(os.path.join(directory, name)):  # a dangling link is refused, not skipped
      return _load_weight_file(os.path.join(directory, name), root)
    index = os.path.join(directory, f"{name}.index.json")
    if os.path.lexists(index):
      state: dict[str, np.ndarray] = {}
      for shard in _shard_files(index, root):
        state.update(_load_weight_file(os.path.join(directory, shard), root))
      return state
  raise FileNotFoundError(f"no model.safetensors, pytorch_model.bin or *.index.json in HF directory {directory}")


def load_hf_checkpoint(directory: str, *, allow_nonfinite: bool = False) -> tuple[dict[str, Any], T5Config]:
  """Read `config.json` + weights of an HF T5 directory into T5X params (floating, finite)."""
  config_path = os.path.join(directory, "config.json")
  if not os.path.lexists(config_path):
    raise FileNotFoundError(f"HF checkpoint directory {directory} has no config.json")
  hf_config = _read_json(config_path, "HF config", entries.checkpoint_root(directory))
  if not isinstance(hf_config, dict):
    raise CheckpointCorruptError(f"HF config {config_path} must be a JSON object, found {type(hf_config).__name__}")
  try:
    t5_config_from_hf(hf_config)
  except (ValueError, TypeError) as e:
    raise CheckpointCorruptError(f"HF config {config_path}: {e}") from None
  state = read_hf_state_dict(directory)
  for key, value in state.items():
    checksums.check_values(key, value, directory, allow_nonfinite=allow_nonfinite)
  return hf_to_t5x(state, hf_config, source=directory)


def _write_synced(path: str, data: bytes) -> None:
  with open(path, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def save_hf_checkpoint(directory: str, params: Mapping[str, Any], cfg: T5Config) -> str:
  """Write config.json + model.safetensors; readers never see a half-written pair.

  A new directory is staged in a temporary sibling and renamed into place; into an
  existing directory each file is replaced atomically, weights first, config last.
  """
  from safetensors.numpy import save
  state, hf_config = t5x_to_hf(params, cfg)
  directory = directory.rstrip("/")
  tmp = f"{directory}.tmp-{uuid.uuid4().hex[:8]}"
  os.makedirs(tmp)
  try:
    _write_synced(os.path.join(tmp, "model.safetensors"), save(state, metadata={"format": "pt"}))
    checksums.write_manifest(os.path.join(tmp, "model.safetensors"), state)
    _write_synced(os.path.join(tmp, "config.json"), json.dumps(hf_config, indent=2).encode())
    if not os.path.exists(directory):
      os.rename(tmp, directory)
    else:
      for name in ("model.safetensors", "model.safetensors" + checksums.SUFFIX, "config.json"):
        os.replace(os.path.join(tmp, name), os.path.join(directory, name))
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return directory


def to_hf_torch_model(params: Mapping[str, Any], cfg: T5Config):
  """An eval-mode float32 `transformers.T5ForConditionalGeneration` holding `params`.

  transformers 5.x forces `tie_word_embeddings=True` in T5Config; for T5 1.1 we undo
  it (and the 1/sqrt(d) output scaling) after building the config (FACTS.md). With
  the tie off, transformers also leaves the encoder/decoder `embed_tokens` untied
  from `shared` (randomly initialised), so they are pointed at `shared` here.
  """
  import torch
  import transformers
  state, hf_config = t5x_to_hf(params, cfg)
  kwargs = {k: v for k, v in hf_config.items() if k not in ("architectures", "model_type", "dtype")}
  config = transformers.T5Config(**kwargs)
  config.tie_word_embeddings = cfg.logits_via_embedding
  config.scale_decoder_outputs = cfg.logits_via_embedding
  model = transformers.T5ForConditionalGeneration(config)
  model.set_input_embeddings(model.shared)  # encoder/decoder embed_tokens share `shared`
  tensors = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in state.items()}
  missing, unexpected = model.load_state_dict(tensors, strict=False)
  allowed = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}
  if cfg.logits_via_embedding:
    allowed.add("lm_head.weight")
  if unexpected or set(missing) - allowed:
    raise CheckpointMismatchError(f"torch T5 refused weights: missing {sorted(set(missing) - allowed)}, "
                                  f"unexpected {sorted(unexpected)}")
  shared = model.shared.weight.data_ptr()
  tied = [model.encoder.embed_tokens.weight, model.decoder.embed_tokens.weight]
  if cfg.logits_via_embedding:
    tied.append(model.lm_head.weight)
  if any(w.data_ptr() != shared for w in tied):
    raise RuntimeError("transformers did not tie the T5 input embeddings (and tied lm_head) to `shared`")
  return model.float().eval()
