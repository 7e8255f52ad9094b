"""Reading and writing trained prompts `[P, d]` in the formats people share them in.

* `.npy` files, and the original release's numpy checkpoints:
  `MODEL_DIR/numpy_checkpoints/checkpoint_<step>/encoder.prompt.prompt.prompt`, a
  raw `.npy`-format file with exactly that name (no suffix), so `np.load` reads it.
* Hugging Face PEFT prompt-tuning adapters (`adapter_config.json` +
  `adapter_model.safetensors` holding `prompt_embeddings`).
* A variable inside a T5X checkpoint directory (read lazily through
  `prompt_tuning_jax.checkpoints.t5x.read_t5x_variable`).
* A run folder (MODEL_DIR): its final prompt (`run_folder.find_prompt` picks others).

`load_prompt` detects the format; every loader returns float32 numpy `[P, d]`.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import ml_dtypes  # also registers bfloat16 with numpy, for safetensors
import numpy as np
import safetensors.numpy

from prompt_tuning_jax.checkpoints import entries, fs, npy_header
from prompt_tuning_jax.prompt import NUMPY_PROMPT_FILE, PROMPT_VARIABLE

NUMPY_CHECKPOINTS_DIR = "numpy_checkpoints"
FINAL_PROMPT = "prompt.npy"  # a training run's final prompt, MODEL_DIR/prompt.npy
TRAIN_STATE_DIR = "train_state"
PEFT_CONFIG_FILE = "adapter_config.json"
PEFT_WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_CONFIG_MAX_BYTES = 1 << 20  # adapter_config.json is a few hundred bytes; refuse reading more
PEFT_TENSOR = "prompt_embeddings"
# The PEFT release whose adapter layout (config keys, tensor name) we mirror.
PEFT_FORMAT_VERSION = "0.21.2"
T5X_CHECKPOINT_FILE = "checkpoint"
_NPY_MAGIC = b"\x93NUMPY"

PathLike = str | os.PathLike
Location = Path | str  # a local Path, or a 'gs://...' string (pathlib would collapse its '//')


def _loc(path: PathLike) -> Location:
  path = os.fspath(path)
  return path if fs.is_remote(path) else Path(path)


def _join(*parts: PathLike) -> Location:
  return _loc(fs.join(*parts))


def check_shape(prompt: np.ndarray, expected_shape: Sequence[int] | None,
                source: PathLike) -> np.ndarray:
  """Raises ValueError naming `source` unless `prompt.shape == expected_shape`."""
  if expected_shape is not None and tuple(prompt.shape) != tuple(expected_shape):
    raise ValueError(f"prompt in {source} has shape {tuple(prompt.shape)}, expected "
                     f"{tuple(expected_shape)} (prompt length, model width)")
  return prompt


def _as_prompt(prompt: Any, source: PathLike) -> np.ndarray:
  """float32 numpy `[P, d]`; anything else is an error naming `source`."""
  array = np.asarray(prompt)
  if array.ndim != 2:
    raise ValueError(f"prompt in {source} must be 2-D [P, d], got shape {array.shape}")
  if not (np.issubdtype(array.dtype, np.floating) or array.dtype == ml_dtypes.bfloat16):
    raise ValueError(f"prompt in {source} must be floating point, got {array.dtype}")
  return array.astype(np.float32, copy=False)


def _loaded(prompt: Any, source: PathLike, allow_nonfinite: bool) -> np.ndarray:
  """A loaded prompt as float32 `[P, d]`, refused (naming `source`) if it holds NaN/Inf
  (also after a float16 value overflows) unless `allow_nonfinite`."""
  from prompt_tuning_jax.checkpoints import checksums
  array = _as_prompt(prompt, source)
  return checksums.check_values("prompt", array, str(source), allow_nonfinite=allow_nonfinite)


def _atomic_write(path: PathLike, write) -> Location:
  """`write(file)` into memory, then one atomic write (local rename or gs:// upload)."""
  buffer = io.BytesIO()
  write(buffer)
  fs.atomic_write(os.fspath(path), buffer.getvalue())
  return _loc(path)


# ----- .npy -----

def save_npy(path: PathLike, prompt: Any) -> Location:
  """Writes `prompt` [P, d] as float32 `.npy` data to exactly `path` (no suffix added)."""
  array = _as_prompt(prompt, path)
  return _atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))


def load_npy(path: PathLike, *, allow_nonfinite: bool = False) -> np.ndarray:
  """Reads a `.npy`-format file (any file name, local or gs://) as float32 `[P, d]`."""
  path = _loc(path)
  if not fs.isfile(path):
    raise FileNotFoundError(f"prompt file not found: {path}")
  data = fs.read_bytes(path)
  npy_header.check_npy_size(data, str(path))  # the header's shape against the bytes, before np.load allocates
  try:
    array = np.load(io.BytesIO(data), allow_pickle=False)
  except (ValueError, OSError, EOFError) as e:
    raise ValueError(f"{path} is not a readable .npy prompt file: {e}") from e
  return _loaded(array, path, allow_nonfinite)


# ----- original release layout: numpy_checkpoints/checkpoint_<step>/... -----

def numpy_checkpoint_path(model_dir: PathLike, step: int) -> Location:
  """`model_dir/numpy_checkpoints/checkpoint_<step>/encoder.prompt.prompt.prompt`."""
  return _join(model_dir, NUMPY_CHECKPOINTS_DIR, f"checkpoint_{int(step)}", NUMPY_PROMPT_FILE)


def save_numpy_checkpoint(model_dir: PathLike, step: int, prompt: Any) -> Location:
  """Saves the prompt where the original prompt-tuning code put it; returns the file.

  As in the original, the folder is first written under a temporary name and then
  renamed, so a reader never sees a half-written checkpoint. An existing file for
  the same step is replaced. On gs:// the folder is a name prefix and the one object
  appears whole, so it is written in place.
  """
  if int(step) < 0:
    raise ValueError(f"step must be >= 0, got {step}")
  target = numpy_checkpoint_path(model_dir, step)
  array = _as_prompt(prompt, target)
  if isinstance(target, str):
    return save_npy(target, array)
  tmp_dir = target.parent.with_name(f"{target.parent.name}.tmp-{time.time_ns()}")
  tmp_dir.mkdir(parents=True)
  save_npy(tmp_dir / NUMPY_PROMPT_FILE, array)
  if target.parent.exists():
    os.replace(tmp_dir / NUMPY_PROMPT_FILE, target)
    tmp_dir.rmdir()
  else:
    os.replace(tmp_dir, target.parent)
  return target


def load_numpy_checkpoint(path: PathLike, *, allow_nonfinite: bool = False) -> np.ndarray:
  """Reads a numpy-checkpoint prompt: the file itself or its `checkpoint_<step>` dir."""
  if fs.isdir(path):
    path = fs.join(path, NUMPY_PROMPT_FILE)
  return load_npy(path, allow_nonfinite=allow_nonfinite)


# ----- Hugging Face PEFT prompt-tuning adapter -----

_HF_CACHE_SNAPSHOT = re.compile(r"(?:^|/)models--([^/]+)--([^/]+)/snapshots/[^/]+/?$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def peft_base_model(backbone: str | None) -> str | None:
  """The `base_model_name_or_path` for a frozen backbone, so that `AutoPeftModel*` finds it.

  The public LM-adapted T5X checkpoints
  (`gs://t5-data/pretrained_models/t5x/t5_1_1_lm100k_<size>/checkpoint_1100000`, or a copy
  keeping that folder name) are `google/t5-<size>-lm-adapt` on the Hugging Face hub. A
  Hugging Face folder gives the hub id it came from (its hub-cache folder name, or the
  `_name_or_path` of its config.json), else its own absolute path, as PEFT records a local
  model. Other T5X checkpoints and random weights give None (nothing PEFT can load).
  """
  from prompt_tuning_jax.model.config import LM100K_CHECKPOINTS  # pylint: disable=g-import-not-at-top
  if not backbone:
    return None
  backbone = os.fspath(backbone).rstrip("/")
  for size, public in LM100K_CHECKPOINTS.items():
    tail = "/".join(public.split("/")[-2:])
    if backbone == public or backbone.endswith("/" + tail) or backbone == tail:
      return f"google/t5-{size}-lm-adapt"
  config_path = fs.join(backbone, "config.json")
  if fs.is_remote(backbone) or not fs.isfile(config_path):
    return None
  cached = _HF_CACHE_SNAPSHOT.search(os.path.abspath(backbone))
  if cached:
    return f"{cached.group(1)}/{cached.group(2)}"
  try:
    named = json.loads(fs.read_text(config_path)).get("_name_or_path")
  except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
    named = None
  if isinstance(named, str) and _HUB_ID.match(named) and not os.path.exists(named):
    return named
  return os.path.abspath(backbone)


def peft_adapter_config(*, num_virtual_tokens: int, token_dim: int,
                        base_model_name_or_path: str | None,
                        num_transformer_submodules: int = 1,
                        num_attention_heads: int | None = None,
                        num_layers: int | None = None,
                        task_type: str = "SEQ_2_SEQ_LM",
                        tokenizer_name_or_path: str | None = None) -> dict[str, Any]:
  """The `adapter_config.json` dict, with the keys of PEFT's `PromptTuningConfig`."""
  return {
      "auto_mapping": None,
      "base_model_name_or_path": base_model_name_or_path,
      "inference_mode": True,
      "modules_to_save": None,
      "num_attention_heads": num_attention_heads,
      "num_layers": num_layers,
      "num_transformer_submodules": num_transformer_submodules,
      "num_virtual_tokens": num_virtual_tokens,
      "peft_type": "PROMPT_TUNING",
      "peft_version": PEFT_FORMAT_VERSION,
      "prompt_tuning_init": "RANDOM",
      "prompt_tuning_init_text": None,
      "revision": None,
      "task_type": task_type,
      "token_dim": token_dim,
      "tokenizer_kwargs": None,
      "tokenizer_name_or_path": tokenizer_name_or_path,
  }


def save_peft_adapter(directory: PathLike, prompt: Any, *,
                      base_model_name_or_path: str | None,
                      num_transformer_submodules: int = 1,
                      num_attention_heads: int | None = None,
                      num_layers: int | None = None,
                      task_type: str = "SEQ_2_SEQ_LM",
                      tokenizer_name_or_path: str | None = None) -> Location:
  """Writes a PEFT prompt-tuning adapter that `PeftModel.from_pretrained` loads.

  `prompt_embeddings` is `[N * num_transformer_submodules, d]` float32: the prompt
  repeated once per submodule (PEFT uses only the first N rows on T5). Give
  `num_attention_heads` / `num_layers` from the backbone's config (T5: num_heads,
  num_decoder_layers); PEFT records them but prompt tuning does not use them.
  """
  directory = _loc(directory)
  array = _as_prompt(prompt, directory)
  if num_transformer_submodules not in (1, 2):
    raise ValueError("num_transformer_submodules must be 1 or 2, got "
                     f"{num_transformer_submodules}")
  config = peft_adapter_config(
      num_virtual_tokens=array.shape[0], token_dim=array.shape[1],
      base_model_name_or_path=base_model_name_or_path,
      num_transformer_submodules=num_transformer_submodules,
      num_attention_heads=num_attention_heads, num_layers=num_layers,
      task_type=task_type, tokenizer_name_or_path=tokenizer_name_or_path)
  tensor = np.ascontiguousarray(np.tile(array, (num_transformer_submodules, 1)))
  blob = safetensors.numpy.save({PEFT_TENSOR: tensor}, metadata={"format": "pt"})
  _atomic_write(fs.join(directory, PEFT_WEIGHTS_FILE), lambda f: f.write(blob))
  text = json.dumps(config, indent=2, sort_keys=True) + "\n"
  _atomic_write(fs.join(directory, PEFT_CONFIG_FILE), lambda f: f.write(text.encode()))
  return directory


def _read_peft_config(directory: Location) -> dict[str, Any]:
  config_path = _join(directory, PEFT_CONFIG_FILE)
  try:  # a regular file inside the adapter folder (or its hub cache), at most 1 MiB
    config = json.loads(entries.read_bytes(config_path, entries.checkpoint_root(directory), "PEFT adapter config",
                                           max_bytes=PEFT_CONFIG_MAX_BYTES).decode("utf-8"))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{config_path} is not valid JSON: {e}") from e
  if not isinstance(config, dict):
    raise ValueError(f"{config_path} must hold a JSON object, found {type(config).__name__}")
  if config.get("peft_type") != "PROMPT_TUNING":
    raise ValueError(f"{config_path}: peft_type is {config.get('peft_type')!r}, "
                     "expected 'PROMPT_TUNING'")
  for key in ("num_virtual_tokens", "token_dim"):
    if not isinstance(config.get(key), int) or config[key] <= 0:
      raise ValueError(f"{config_path}: {key} must be a positive int, got "
                       f"{config.get(key)!r}")
  k = config.get("num_transformer_submodules")
  if k is not None and (isinstance(k, bool) or k not in (1, 2)):
    raise ValueError(f"{config_path}: num_transformer_submodules must be 1 or 2, got {k!r}")
  return config


def _load_safetensors(path: Location) -> dict[str, np.ndarray]:
  """safetensors' file reader (it knows bfloat16; its bytes reader does not), gs:// via a local copy."""
  if not fs.is_remote(path):
    return safetensors.numpy.load_file(str(path))
  with tempfile.NamedTemporaryFile(suffix=".safetensors") as tmp:
    tmp.write(fs.read_bytes(path))
    tmp.flush()
    return safetensors.numpy.load_file(tmp.name)


def load_peft_adapter(directory: PathLike, *, allow_nonfinite: bool = False) -> np.ndarray:
  """Reads the first `num_virtual_tokens` rows of a PEFT prompt-tuning adapter.

  Returns float32 `[N, d]`. The stored tensor must be
  `[N * num_transformer_submodules, d]` as `adapter_config.json` says.
  """
  directory = _loc(directory)
  config = _read_peft_config(directory)
  weights_path = _join(directory, PEFT_WEIGHTS_FILE)
  entries.check(weights_path, entries.checkpoint_root(directory), "PEFT adapter weights")
  try:
    tensors = _load_safetensors(weights_path)
  except Exception as e:  # SafetensorError and friends name no file
    raise ValueError(f"cannot read PEFT adapter weights {weights_path}: {type(e).__name__}: {e}") from None
  if PEFT_TENSOR not in tensors:
    raise ValueError(f"{weights_path} has no tensor {PEFT_TENSOR!r}; found "
                     f"{sorted(tensors)}")
  n, d = config["num_virtual_tokens"], config["token_dim"]
  k = config.get("num_transformer_submodules") or 1
  tensor = tensors[PEFT_TENSOR]
  if tuple(tensor.shape) != (n * k, d):
    raise ValueError(
        f"{weights_path}: {PEFT_TENSOR} has shape {tuple(tensor.shape)}, but "
        f"{PEFT_CONFIG_FILE} implies ({n * k}, {d}) (num_virtual_tokens={n} x "
        f"num_transformer_submodules={k}, token_dim={d})")
  return _loaded(tensor[:n], weights_path, allow_nonfinite)


# ----- T5X checkpoint -----

def load_t5x_prompt(path: PathLike, variable: str = PROMPT_VARIABLE,
                    expected_shape: Sequence[int] | None = None, *, allow_nonfinite: bool = False) -> np.ndarray:
  """Reads `variable` (e.g. 'encoder/prompt/prompt/prompt') from a T5X checkpoint.

  `path` is a `checkpoint_<step>` directory, the `checkpoint` file inside it, or a
  single-file (all arrays inline) checkpoint.
  """
  from prompt_tuning_jax.checkpoints import t5x  # lazy: only T5X users pay for it
  path = _loc(path)
  array = _loaded(t5x.read_t5x_variable(os.fspath(path), variable, allow_nonfinite=allow_nonfinite),
                  f"{path} [{variable}]", allow_nonfinite)
  return check_shape(array, expected_shape, f"{path} [{variable}]")


# ----- format detection -----

def is_run_folder(path: PathLike) -> bool:
  """A folder a training run wrote (final prompt, numpy checkpoints or train state)."""
  path = _loc(path)
  return fs.isdir(path) and any(fs.exists(fs.join(path, name))
                                for name in (FINAL_PROMPT, NUMPY_CHECKPOINTS_DIR, TRAIN_STATE_DIR))


def detect_format(path: PathLike) -> str:
  """One of 'npy', 'peft', 't5x', 'run'; raises ValueError naming `path` otherwise.

  'npy' covers `.npy` files, numpy-checkpoint files without suffix, and a
  `numpy_checkpoints/checkpoint_<step>` folder (it holds one such file). 't5x'
  covers a checkpoint folder, its `checkpoint` file and single-file checkpoints.
  'run' is a training run's MODEL_DIR.
  """
  path = _loc(path)
  if fs.isdir(path):
    if fs.isfile(fs.join(path, PEFT_CONFIG_FILE)):
      return "peft"
    if fs.isfile(fs.join(path, T5X_CHECKPOINT_FILE)):
      return "t5x"
    if fs.isfile(fs.join(path, NUMPY_PROMPT_FILE)):
      return "npy"
    if is_run_folder(path):
      return "run"
    raise ValueError(
        f"cannot tell the prompt format of folder {path}: expected {PEFT_CONFIG_FILE} "
        f"(PEFT adapter), {T5X_CHECKPOINT_FILE} (T5X checkpoint), "
        f"{NUMPY_PROMPT_FILE} (numpy checkpoint) or a training run's {FINAL_PROMPT}, "
        f"{NUMPY_CHECKPOINTS_DIR}/ or {TRAIN_STATE_DIR}/ inside it")
  if not fs.isfile(path):
    found = entries.problem(path, os.sep)  # a single file may be a link anywhere; say what is there
    if found is None or found[0] == "does not exist":
      raise FileNotFoundError(f"prompt path not found: {path}")
    raise entries.CheckpointEntryError(f"prompt {path} {found[0]}")
  head = fs.read_head(path, len(_NPY_MAGIC))
  if head == _NPY_MAGIC:
    return "npy"
  # A T5X msgpack file starts with a map header: fixmap 0x80-0x8f, map16/32.
  if os.fspath(path).rstrip("/").rsplit("/", 1)[-1] == T5X_CHECKPOINT_FILE or (head and (0x80 <= head[0] <= 0x8f or
                                                     head[0] in (0xde, 0xdf))):
    return "t5x"
  raise ValueError(f"{path} is neither a .npy-format file nor a T5X msgpack "
                   "checkpoint; give a .npy file, a PEFT adapter folder or a T5X "
                   "checkpoint")


def load_prompt(path: PathLike, expected_shape: Sequence[int] | None = None, *,
                t5x_variable: str = PROMPT_VARIABLE, allow_nonfinite: bool = False) -> np.ndarray:
  """Loads a prompt float32 `[P, d]` from any supported format (see `detect_format`).

  Raises ValueError naming the file and both shapes when `expected_shape` is
  given and does not match, and naming the file when the prompt holds NaN/Inf
  (unless `allow_nonfinite`).
  """
  kind = detect_format(path)
  if kind == "run":  # its final prompt; `run_folder.find_prompt` picks a saved step or the best
    final = fs.join(_loc(path), FINAL_PROMPT)
    if not fs.isfile(final):
      raise ValueError(f"{path} is a training run with no final prompt yet ({FINAL_PROMPT} is written when "
                       "the run finishes); `export --prompt=MODEL_DIR --step=N` or `--best` picks a saved one")
    path = final
  if kind == "peft":
    return check_shape(load_peft_adapter(path, allow_nonfinite=allow_nonfinite), expected_shape, path)
  if kind == "t5x":
    return load_t5x_prompt(path, t5x_variable, expected_shape, allow_nonfinite=allow_nonfinite)
  return check_shape(load_numpy_checkpoint(path, allow_nonfinite=allow_nonfinite), expected_shape, path)


# ----- model card -----

def _jsonable(value: Any, key: str) -> Any:
  if isinstance(value, Mapping):
    return {str(k): _jsonable(v, f"{key}.{k}") for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v, key) for v in value]
  if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  raise ValueError(f"model card field {key!r} is not JSON serializable: "
                   f"{type(value).__name__}")


def write_model_card(path: PathLike, *, backbone: str, task: str,
                     prompt_length: int, init: str, step: int, steps_trained: int | None,
                     dev_metrics: Mapping[str, Any],
                     extra: Mapping[str, Any] | None = None) -> Location:
  """Writes a small JSON card describing how a prompt was trained.

  `step` is the global step (the backbone checkpoint's step plus the steps trained, the
  number in `numpy_checkpoints/checkpoint_<step>`); `steps_trained` the prompt-tuning
  steps that led to it (None when unknown). `extra` keys are added at the top level and
  may not shadow the fixed ones.
  """
  card = {"format": "prompt_tuning_jax.model_card", "format_version": 2,
          "backbone": backbone, "task": task, "prompt_length": int(prompt_length),
          "init": init, "step": int(step), "steps_trained": None if steps_trained is None else int(steps_trained),
          "dev_metrics": dict(dev_metrics)}
  for key, value in (extra or {}).items():
    if key in card:
      raise ValueError(f"model card extra key {key!r} clashes with a fixed field")
    card[key] = value
  text = json.dumps(_jsonable(card, "card"), indent=2, sort_keys=True) + "\n"
  return _atomic_write(path, lambda f: f.write(text.encode()))
