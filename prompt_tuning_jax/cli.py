"""Flags shared by the entry points: T5X-style `--gin_file`, `--gin.NAME=VALUE`,
`--gin_search_paths`; plus writing the operative config next to the run's outputs."""
from __future__ import annotations

import argparse
import ast
import os
import pathlib
from typing import Sequence

import gin


def _gin_dir() -> pathlib.Path:
  """The bundled gin files: inside the installed package, or the checkout's top-level gin/."""
  here = pathlib.Path(__file__).resolve().parent
  installed = here / "gin"
  return installed if installed.is_dir() else here.parent / "gin"


GIN_DIR = _gin_dir()


def _tolerant_exists(check):
  """gin's module-resource reader raises on a namespace package (e.g. a ./runs folder
  shadowing 'runs/x.gin'); treat that as "not here" so the search paths are tried."""
  def exists(path):
    try:
      return check(path)
    except TypeError:
      return False
  return exists


gin.config._FILE_READERS[:] = [(reader, _tolerant_exists(check)) for reader, check in gin.config._FILE_READERS]


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


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
  """Parse flags and load gin files + bindings (files found in ./, gin/ or search paths)."""
  register_configurables()
  bindings, rest = split_gin_flags(list(argv) if argv is not None else __import__("sys").argv[1:])
  add_gin_flags(parser)
  args = parser.parse_args(rest)
  search = [os.getcwd(), str(GIN_DIR)] + [p for p in args.gin_search_paths.split(",") if p]
  for path in search:
    gin.add_config_file_search_path(path)
  gin.parse_config_files_and_bindings([_find(f, search) for f in args.gin_file], bindings, finalize_config=False)
  return args


def _find(gin_file: str, search: list[str]) -> str:
  """Absolute path of a --gin_file (so gin never mistakes `tests/x.gin` for a module)."""
  for directory in search:
    path = os.path.join(directory, gin_file)
    if os.path.exists(path):
      return os.path.abspath(path)
  raise SystemExit(f"--gin_file={gin_file}: not found in {search} (add --gin_search_paths)")


def write_operative_config(directory: str) -> None:
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "config.gin"), "w") as f:
    f.write(gin.operative_config_str())


def build_config(cls):
  """Call a registered config class with its gin bindings (the commands' one use of gin)."""
  return gin.get_configurable(cls)()


_REGISTERED = False


def register_configurables() -> None:
  """Expose the library's config dataclasses and initializer factories to gin, once.

  Gin binds constructors only; the library itself stays gin-free.
  """
  global _REGISTERED
  if _REGISTERED:
    return
  from prompt_tuning_jax import config, data, methods, sharding  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.evaluators import task_evaluator
  from prompt_tuning_jax.prompt import initializers, wrapper
  from prompt_tuning_jax.trainer import loop, optim, step
  for obj, module in (
      (config.T5Config, None), (data.DataConfig, None), (wrapper.PromptConfig, None),
      (optim.OptimConfig, None), (step.LossConfig, None), (sharding.PartitionConfig, None),
      (loop.EarlyStopping, None), (loop.TrainConfig, None),
      (task_evaluator.make_train_evaluator, None),
      (initializers.uniform_symmetric, "prompts"), (initializers.uniform_zero_to_scale, "prompts"),
      (initializers.sampled_vocab, "prompts"), (initializers.from_file, "prompts"),
      (initializers.from_t5x_checkpoint, "prompts"), (initializers.class_label_words, "prompts"),
      *((cls, None) for cls in methods.METHODS.values()),
  ):
    gin.external_configurable(obj, module=module)
  _REGISTERED = True
