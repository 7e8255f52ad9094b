"""Flags shared by the entry points: T5X-style `--gin_file`, `--gin.NAME=VALUE`,
`--gin_search_paths`; gin file parsing with includes resolved here (so gin's module-
resource reader never sees a relative path), unknown macros and bindings refused with
the closest known names, and the operative config written next to the run's outputs."""
from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import inspect
import os
import pathlib
import re
import sys
from typing import Any, Sequence

import gin


def _gin_dir() -> pathlib.Path:
  """The bundled gin files: inside the installed package, or the checkout's top-level gin/."""
  here = pathlib.Path(__file__).resolve().parent
  installed = here / "gin"
  return installed if installed.is_dir() else here.parent / "gin"


GIN_DIR = _gin_dir()
_INCLUDE = re.compile(r"""^\s*include\s+(['"])(?P<path>[^'"]+)\1\s*(#.*)?$""")
_MACRO_REF = re.compile(r"%([A-Za-z_]\w*)")
_MACRO_DEF = re.compile(r"^([A-Za-z_]\w*)\s*=", re.M)


def gin_value(text: str) -> str:
  """A binding's right-hand side: literals and @refs/%macros as given, bare text quoted,
  so `--gin.MODEL_DIR=/tmp/run` works as well as `--gin.MODEL_DIR=\"/tmp/run\"`."""
  text = text.strip()
  if text[:1] in "@%" or text in ("None", "True", "False"):
    return text
  try:
    ast.literal_eval(text)
    return text
  except (ValueError, SyntaxError):
    return repr(text)


def split_gin_flags(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """Separate `--gin.NAME=VALUE` flags (-> gin bindings) from the rest of argv."""
  bindings, rest = [], []
  for arg in argv:
    if arg.startswith("--gin."):
      name, sep, value = arg[len("--gin."):].partition("=")
      if not sep:
        raise SystemExit(f"flag {arg!r}: expected --gin.NAME=VALUE")
      bindings.append(f"{name} = {gin_value(value)}")
    else:
      rest.append(arg)
  return bindings, rest


def add_gin_flags(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--gin_file", action="append", default=[], help="gin file (repeatable)")
  parser.add_argument("--gin_search_paths", default="", help="comma-separated extra gin search paths")


def add_model_flags(parser: argparse.ArgumentParser) -> None:
  """Flags of the commands that run a (prompted) frozen model: eval and infer."""
  from prompt_tuning_jax.evaluators import predictor  # pylint: disable=g-import-not-at-top
  parser.add_argument("--prompt", action="append", default=[],
                      help="prompt file/folder, or NAME=PATH (repeatable)")
  parser.add_argument("--delta", default=None, help="a trained delta (delta.safetensors or its run folder)")
  parser.add_argument("--mode", default=None, choices=predictor.MODES, help="default: EvalConfig.mode")
  parser.add_argument("--batch_size", type=int, default=None)
  parser.add_argument("--num_beams", type=int, default=None, help="default: EvalConfig.num_beams (4)")
  parser.add_argument("--alpha", type=float, default=None, help="beam brevity penalty exponent (default 0.6)")
  parser.add_argument("--max_decode_length", type=int, default=None)
  from prompt_tuning_jax.evaluators import sharded  # pylint: disable=g-import-not-at-top
  sharded.add_flags(parser)


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None,
          defaults: Sequence[str] = ()) -> argparse.Namespace:
  """Parse flags and load gin: the command's `defaults` files first, then --gin_file
  (found in ./, gin/ or --gin_search_paths), then the --gin.NAME=VALUE bindings, which
  are checked against the names the files know before any model or data work."""
  register_configurables()
  bindings, rest = split_gin_flags(list(argv) if argv is not None else sys.argv[1:])
  add_gin_flags(parser)
  args = parser.parse_args(rest)
  search = [os.getcwd(), str(GIN_DIR)] + [p for p in args.gin_search_paths.split(",") if p]
  parse_gin(list(defaults) + args.gin_file, bindings, search)
  return args


def parse_gin(files: Sequence[str], bindings: Sequence[str], search: Sequence[str]) -> None:
  """Parse gin files (found in `search`) and command-line bindings; refuse a binding to a
  macro that no file binds or references, or to an unknown configurable/parameter."""
  register_configurables()
  known: set[str] = set()
  for name in files:
    _parse_file(_find(name, search, "--gin_file"), search, known, stack=())
  for binding in bindings:
    known |= set(_MACRO_REF.findall(binding))
  for binding in bindings:
    name = binding.partition("=")[0].strip()
    if "." not in name and "/" not in name and name not in known:
      raise SystemExit(f"--gin.{name}: unknown gin macro; no gin file binds or references %{name}"
                       f"{_closest(name, known)}")
    try:
      gin.parse_config(binding)
    except (ValueError, SyntaxError) as e:
      raise SystemExit(f"--gin.{name}: {str(e).splitlines()[0]}{_closest_binding(name)}") from None


def _parse_file(path: str, search: Sequence[str], known: set[str], stack: tuple[str, ...]) -> None:
  """Parse one gin file, handing its `include`s to this function as absolute paths."""
  if path in stack:
    raise SystemExit(f"{path}: include cycle {' -> '.join(stack + (path,))}")
  with open(path) as f:
    text = f.read()
  known |= set(_MACRO_REF.findall(text)) | set(_MACRO_DEF.findall(text))
  chunk, start = [], 1
  for number, line in enumerate(text.splitlines(keepends=True), 1):
    match = _INCLUDE.match(line)
    if match is None:
      chunk.append(line)
      continue
    _parse_chunk(path, start, chunk)
    _parse_file(_find(match["path"], search, f"{path}:{number}: include"), search, known, stack + (path,))
    chunk, start = [], number + 1
  _parse_chunk(path, start, chunk)


def _parse_chunk(path: str, first_line: int, lines: list[str]) -> None:
  try:
    gin.parse_config("".join(lines))
  except (ValueError, SyntaxError, ImportError) as e:
    raise SystemExit(f"{path} (from line {first_line}): {e}") from None


def _closest(name: str, names: Sequence[str] | set[str]) -> str:
  close = difflib.get_close_matches(name, sorted(names), n=3, cutoff=0.6)
  return f"; closest known: {', '.join(close)}" if close else ""


def _closest_binding(name: str) -> str:
  """Close configurable names, or close parameter names of a known configurable."""
  selector, _, param = name.rpartition(".")
  configurable = selector.rpartition("/")[2]
  if configurable in _CONFIGURABLES:
    return _closest(param, _CONFIGURABLES[configurable])
  return _closest(configurable, _CONFIGURABLES)


def _find(gin_file: str, search: Sequence[str], what: str) -> str:
  """Absolute path of a gin file (so gin never mistakes `runs/x.gin` for a module)."""
  if os.path.isabs(gin_file) and os.path.isfile(gin_file):
    return gin_file
  for directory in search:
    path = os.path.join(directory, gin_file)
    if os.path.isfile(path):
      return os.path.abspath(path)
  raise SystemExit(f"{what}={gin_file}: not found in {list(search)} (add --gin_search_paths)")


def write_operative_config(directory: str) -> None:
  """`directory/config.gin` (local or gs://)."""
  from prompt_tuning_jax.checkpoints import fs  # pylint: disable=g-import-not-at-top
  fs.atomic_write(fs.join(directory, "config.gin"), gin.operative_config_str())


def override(cfg: Any, **flags: Any) -> Any:
  """`dataclasses.replace` with the flags that were given (None: keep gin's value)."""
  return dataclasses.replace(cfg, **{k: v for k, v in flags.items() if v is not None})


def build_config(cls):
  """Call a registered config class with its gin bindings (the commands' one use of gin)."""
  return gin.get_configurable(cls)()


_CONFIGURABLES: dict[str, tuple[str, ...]] = {}  # registered name -> parameter names


def register_configurables() -> None:
  """Expose the library's config dataclasses and initializer factories to gin, once.

  Gin binds constructors only; the library itself stays gin-free.
  """
  if _CONFIGURABLES:
    return
  from prompt_tuning_jax import methods  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.model import config
  from prompt_tuning_jax.parallel import memory_plan, sharding
  from prompt_tuning_jax.text import data
  from prompt_tuning_jax.evaluators import config as eval_config
  from prompt_tuning_jax.evaluators import scorer, task_evaluator
  from prompt_tuning_jax.prompt import initializers, wrapper
  from prompt_tuning_jax.trainer import loop, optim, step
  for obj, module in (
      (config.T5Config, None), (data.DataConfig, None), (wrapper.PromptConfig, None),
      (optim.OptimConfig, None), (step.LossConfig, None), (sharding.PartitionConfig, None),
      (loop.EarlyStopping, None), (loop.TrainConfig, None),
      (eval_config.ModelConfig, None), (eval_config.EvalConfig, None), (scorer.ScoreConfig, None),
      (memory_plan.PlanConfig, None), (task_evaluator.make_train_evaluator, None),
      (initializers.uniform_symmetric, "prompts"), (initializers.uniform_zero_to_scale, "prompts"),
      (initializers.sampled_vocab, "prompts"), (initializers.from_file, "prompts"),
      (initializers.from_t5x_checkpoint, "prompts"), (initializers.class_label_words, "prompts"),
      *((cls, None) for cls in methods.METHODS.values()),
  ):
    gin.external_configurable(obj, module=module)
    name = obj.__name__ if module is None else f"{module}.{obj.__name__}"
    _CONFIGURABLES[name] = _CONFIGURABLES[obj.__name__] = tuple(inspect.signature(obj).parameters)
