"""Flags shared by the entry points: T5X-style `--gin_file`, `--gin.NAME=VALUE`,
`--gin_search_paths`; gin file parsing with includes resolved here (so gin's module-
resource reader never sees a relative path), unknown macros and bindings refused with
the closest known names, and the operative config written next to the run's outputs.

Errors: a mistake in how a command was called raises `UsageError`; run as a program
(`@command`), every command prints it as ONE line `error: ...` and exits 2, with the
traceback only under `--verbose` or PTJ_VERBOSE=1. The checks run before jax, the model
or the dataset load wherever the answer does not need them."""
from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import functools
import importlib.util
import inspect
import os
import pathlib
import re
import sys
import traceback
from typing import Any, Callable, Sequence

import gin

VERBOSE_ENV = "PTJ_VERBOSE"
USAGE_EXIT_CODE = 2
RUN_FAILED_EXIT_CODE = 1  # the input was fine but the run could not go on (e.g. a non-finite update)


class UsageError(SystemExit):
  """A command was called wrongly (flag, gin binding, path, task name, data folder).

  A SystemExit, so that a caller's `except Exception` does not swallow it and Python
  prints it without a traceback; `@command` prints it as `error: <message>`, exit 2.
  """

  def __init__(self, message: str):
    super().__init__(message)

  def __str__(self) -> str:
    return str(self.code)


class ArgumentParser(argparse.ArgumentParser):
  """argparse that reports a bad or missing flag as a `UsageError` (one line), and
  knows `--verbose`."""

  def __init__(self, *args, **kwargs):
    kwargs.setdefault("prog", _program_name())
    kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
    kwargs.setdefault("allow_abbrev", False)  # --distributed_timeout is a typo, not --distributed_timeout_s
    super().__init__(*args, **kwargs)
    self.add_argument("--verbose", action="store_true",
                      help=f"on an error, print the traceback too (or set {VERBOSE_ENV}=1)")

  def error(self, message: str):
    raise UsageError(f"{message} (see {self.prog} --help)")


def _program_name() -> str:
  """`python -m prompt_tuning_jax.train` for a command module run with -m (argparse would
  say `train.py`), else the script's name (e.g. the console script `ptj-train`)."""
  script = pathlib.Path(sys.argv[0]) if sys.argv and sys.argv[0] else pathlib.Path("prompt_tuning_jax")
  if script.suffix == ".py" and script.resolve().parent == pathlib.Path(__file__).resolve().parent:
    return f"python -m prompt_tuning_jax.{script.stem}"
  return script.name


def _user_error_types() -> tuple[type[BaseException], ...]:
  """Exceptions that describe bad input (shown as one line), imported only if loaded."""
  types: list[type[BaseException]] = [SystemExit, ValueError, FileNotFoundError, NotADirectoryError]
  for module, name in (("prompt_tuning_jax.tasks.sources", "SuperGlueDataError"),
                       ("prompt_tuning_jax.parallel.distributed", "StartupError"),
                       ("prompt_tuning_jax.trainer.run_lock", "RunLockedError")):
    if module in sys.modules:
      types.append(getattr(sys.modules[module], name))
  return tuple(types)


def _run_failure_types() -> tuple[type[BaseException], ...]:
  """Exceptions that end a run that was set up right (one line too, exit 1), imported only if loaded."""
  module = sys.modules.get("prompt_tuning_jax.trainer.loop")
  return (module.NonFiniteError,) if module is not None else ()


def verbose_requested(argv: Sequence[str]) -> bool:
  return "--verbose" in argv or os.environ.get(VERBOSE_ENV, "").lower() not in ("", "0", "false")


def one_line(message: str) -> str:
  return " ".join(str(message).split())


def command(main: Callable[[Sequence[str]], Any]) -> Callable[[Sequence[str] | None], Any]:
  """Decorate a command's `main(argv)`.

  Called with a list (tests, other Python code), errors propagate as raised. Called as
  a program (`main()`: `python -m`, console scripts) it returns an exit status: a
  user error prints `error: <one line>` to stderr and returns 2, a run that stopped on
  its own account (a non-finite update) prints one line too and returns 1 (`--verbose` or
  PTJ_VERBOSE=1: after its traceback).
  """
  @functools.wraps(main)
  def run(argv: Sequence[str] | None = None) -> Any:
    if argv is not None:
      return main(list(argv))
    argv = sys.argv[1:]
    try:
      result = main(argv)
    except _user_error_types() as e:
      if isinstance(e, SystemExit) and not isinstance(e.code, str):
        raise  # --help, or a status chosen by the command
      if verbose_requested(argv):
        traceback.print_exc()  # a SystemExit re-raised would print no traceback
      message = one_line(e) or type(e).__name__
      print(f"error: {message}", file=sys.stderr, flush=True)
      return USAGE_EXIT_CODE
    except _run_failure_types() as e:
      if verbose_requested(argv):
        traceback.print_exc()
      print(f"error: {one_line(e)}", file=sys.stderr, flush=True)
      return RUN_FAILED_EXIT_CODE
    return result if isinstance(result, int) and not isinstance(result, bool) else 0
  return run


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
        raise UsageError(f"flag {arg!r}: expected --gin.NAME=VALUE")
      bindings.append(f"{name} = {gin_value(value)}")
    else:
      rest.append(arg)
  return bindings, rest


def add_gin_flags(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--gin_file", action="append", default=[], help="gin file (repeatable)")
  parser.add_argument("--gin_search_paths", default="", help="comma-separated extra gin search paths")


def add_model_flags(parser: argparse.ArgumentParser) -> None:
  """Flags of the commands that run a (prompted) frozen model: eval and infer (and the
  multi-host start-up flags of `distributed.add_flags`)."""
  from prompt_tuning_jax.parallel import distributed  # pylint: disable=g-import-not-at-top
  parser.add_argument("--prompt", action="append", default=[],
                      help="prompt file/folder, or NAME=PATH (repeatable)")
  parser.add_argument("--delta", default=None, help="a trained delta (delta.safetensors or its run folder)")
  parser.add_argument("--mode", default=None, help="greedy, beam or rank (default: EvalConfig.mode)")
  parser.add_argument("--batch_size", type=int, default=None)
  parser.add_argument("--num_beams", type=int, default=None, help="default: EvalConfig.num_beams (4)")
  parser.add_argument("--alpha", type=float, default=None, help="beam brevity penalty exponent (default 0.6)")
  parser.add_argument("--max_decode_length", type=int, default=None)
  distributed.add_flags(parser)


def check_model(model_config: Any) -> None:
  """eval/infer/score: the checkpoint, prompt and delta paths exist and each prompt is a
  format the loader reads (a run folder without a prompt yet is named here)."""
  from prompt_tuning_jax.evaluators import ensemble  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.prompt import files as prompt_files  # pylint: disable=g-import-not-at-top
  check_checkpoint_path(model_config.checkpoint_path, "CHECKPOINT_PATH")
  for flag in model_config.prompts:
    path = ensemble.parse_prompt_flag(flag)[1]
    check_paths("--prompt", [path])
    if "://" not in path:
      try:
        prompt_files.detect_format(path)
      except (ValueError, FileNotFoundError) as e:
        raise UsageError(f"--prompt={flag}: {e}") from None
  check_paths("--delta", [model_config.delta] if model_config.delta else [])


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None,
          defaults: Sequence[str] = (), if_empty: str | None = None) -> argparse.Namespace:
  """Parse flags and load gin: the command's `defaults` files first, then --gin_file
  (found in ./, gin/ or --gin_search_paths), then the --gin.NAME=VALUE bindings, which
  are checked against the names the files know before any model or data work.
  `if_empty`: the error when neither --gin_file nor --gin.NAME was given."""
  bindings, rest = split_gin_flags(list(argv) if argv is not None else sys.argv[1:])
  add_gin_flags(parser)
  args = parser.parse_args(rest)
  if if_empty and not args.gin_file and not bindings:
    raise UsageError(if_empty)
  search = [os.getcwd(), str(GIN_DIR)] + [p for p in args.gin_search_paths.split(",") if p]
  files = [_find(name, search, "--gin_file") for name in list(defaults) + args.gin_file]  # before jax loads
  parse_gin(files, bindings, search)
  return args


def parse_gin(files: Sequence[str], bindings: Sequence[str], search: Sequence[str]) -> None:
  """Parse gin files (found in `search`) and command-line bindings; refuse a binding to a
  macro that no file binds or references, or to an unknown configurable/parameter."""
  register_configurables()
  known: set[str] = set()
  users: dict[str, str] = {}  # macro -> the first file that references it
  for name in files:
    _parse_file(_find(name, search, "--gin_file"), search, known, stack=(), users=users)
  for binding in bindings:
    known |= set(_MACRO_REF.findall(binding))
  for binding in bindings:
    name = binding.partition("=")[0].strip()
    if "." not in name and "/" not in name and name not in known:
      raise UsageError(f"--gin.{name}: unknown gin macro; no gin file binds or references %{name}"
                       f"{_closest(name, known)}")
    try:
      gin.parse_config(binding)
    except (ValueError, SyntaxError) as e:
      raise UsageError(f"--gin.{name}: {str(e).splitlines()[0]}{_closest_binding(name)}") from None
  _MACRO_USERS.clear()
  _MACRO_USERS.update(users)


_MACRO_USERS: dict[str, str] = {}  # macro -> the first parsed file that references it
_UNBOUND_MACRO = re.compile(r"In call to configurable 'macro' .* in scope '([^']+)'")


def _parse_file(path: str, search: Sequence[str], known: set[str], stack: tuple[str, ...],
                users: dict[str, str] | None = None) -> None:
  """Parse one gin file, handing its `include`s to this function as absolute paths."""
  if path in stack:
    raise UsageError(f"{path}: include cycle {' -> '.join(stack + (path,))}")
  with open(path) as f:
    text = f.read()
  known |= set(_MACRO_REF.findall(text)) | set(_MACRO_DEF.findall(text))
  if users is not None:
    for name in _MACRO_REF.findall(text):
      users.setdefault(name, _shown(path))
  chunk, start = [], 1
  for number, line in enumerate(text.splitlines(keepends=True), 1):
    match = _INCLUDE.match(line)
    if match is None:
      chunk.append(line)
      continue
    _parse_chunk(path, start, chunk)
    _parse_file(_find(match["path"], search, f"{path}:{number}: include"), search, known, stack + (path,), users)
    chunk, start = [], number + 1
  _parse_chunk(path, start, chunk)


def _parse_chunk(path: str, first_line: int, lines: list[str]) -> None:
  try:
    gin.parse_config("".join(lines))
  except (ValueError, SyntaxError, ImportError) as e:
    raise UsageError(f"{path} (from line {first_line}): {e}") from None


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
  raise UsageError(f"{what}={gin_file}: not found in {list(search)} (add --gin_search_paths)")


def _shown(path: str) -> str:
  """A bundled gin file as `gin/<name>`, any other as given."""
  try:
    return "gin/" + str(pathlib.Path(path).relative_to(GIN_DIR))
  except ValueError:
    return path


# ------------------------------------------------------------------ pre-flight checks
# Run by the commands after the flags and gin parse and before any model or dataset loads.

RANDOM_CHECKPOINT = "random:"


def check_checkpoint_path(path: str | None, macro: str) -> None:
  """A frozen model's path that can be read: 'random:<seed>', an existing local path, or a
  URL whose filesystem is installed (its existence is left to the loader: no network here)."""
  what = ("a T5X checkpoint folder (checkpoint_<step>), a Hugging Face T5 folder or "
          f"'{RANDOM_CHECKPOINT}<seed>'")
  if not path:
    raise UsageError(f"{macro} is not set: add --gin.{macro}=... ({what})")
  if path.startswith(RANDOM_CHECKPOINT):
    return
  if "://" in path:
    protocol = path.split("://", 1)[0]
    needs = {"gs": "gcsfs", "gcs": "gcsfs", "s3": "s3fs"}.get(protocol)
    if needs and importlib.util.find_spec(needs) is None:
      raise UsageError(f"{macro}={path}: reading {protocol}:// needs the {needs} package: "
                       f"pip install {needs} (or pip install 'prompt_tuning_jax[gcs]')")
    return
  if not os.path.exists(path):
    raise UsageError(f"{macro}={path}: no such file or directory; point --gin.{macro} at {what}")


def check_paths(flag: str, paths: Sequence[str]) -> None:
  """Local input paths given on the command line exist (URLs are left to the loader)."""
  for path in paths:
    if path and "://" not in path and not os.path.exists(path):
      raise UsageError(f"{flag}={path}: no such file or directory")


def check_data(data_config: Any, splits: Sequence[str]) -> None:
  """The task (or mixture) is registered, a local data folder holds every file its sub-tasks
  read for `splits`, and TFDS data they read is prepared (or can be downloaded); imports SeqIO
  and the task module, reads no example."""
  from prompt_tuning_jax.text import quiet  # pylint: disable=g-import-not-at-top
  module, name = data_config.mixture_or_task_module, data_config.mixture_or_task_name
  seqio = quiet.import_seqio()
  if module:
    try:
      quiet.import_module(module)
    except ImportError as e:
      raise UsageError(f"MIXTURE_OR_TASK_MODULE={module!r} cannot be imported ({e}); "
                       "give the module that registers the task, or None") from None
  known = set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names())
  if name not in known:
    close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
    hint = f"; closest registered: {', '.join(close)}" if close else f"; {len(known)} are registered"
    raise UsageError(f"MIXTURE_OR_TASK_NAME={name!r} is not a registered task or mixture "
                     f"(module {module!r}){hint}")
  task = seqio.get_mixture_or_task(name)
  subtasks = task.tasks if isinstance(task, seqio.Mixture) else [task]
  missing = [str(f) for t in subtasks for f in _missing_local_files(t, splits)]
  if missing:
    shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
    raise UsageError(f"{_data_dir_setting()} lacks the files task {name!r} reads: {shown}; put the official "
                     "SuperGLUE layout <dir>/<Task>/{train,val,test}.jsonl there, or unset it to read TFDS")
  for t in subtasks:  # TFDS data that is neither prepared nor downloadable: one line now, not after the model
    check_prepared = getattr(t.source, "check_prepared", None)
    if callable(check_prepared):
      check_prepared(splits)


def _missing_local_files(task: Any, splits: Sequence[str]) -> list[Any]:
  missing_files = getattr(task.source, "missing_local_files", None)
  return list(missing_files(splits)) if callable(missing_files) else []


def _data_dir_setting() -> str:
  """Which setting names the local SuperGLUE folder, for messages."""
  from prompt_tuning_jax.tasks import sources  # pylint: disable=g-import-not-at-top
  folder = sources.get_data_dir()
  if os.environ.get(sources.ENV_DATA_DIR) == folder:
    return f"{sources.ENV_DATA_DIR}={folder}"
  return f"the SuperGLUE data folder {folder} (gin superglue_data_dir.path or tasks.set_data_dir)"


def write_operative_config(directory: str) -> None:
  """`directory/config.gin` (local or gs://)."""
  from prompt_tuning_jax.checkpoints import fs  # pylint: disable=g-import-not-at-top
  fs.atomic_write(fs.join(directory, "config.gin"), gin.operative_config_str())


def override(cfg: Any, **flags: Any) -> Any:
  """`dataclasses.replace` with the flags that were given (None: keep gin's value)."""
  return dataclasses.replace(cfg, **{k: v for k, v in flags.items() if v is not None})


def build_config(cls):
  """Call a registered config class with its gin bindings (the commands' one use of gin).
  A macro it needs that nothing sets (e.g. MODEL_DIR) is named, instead of gin's
  `macro() missing 1 required positional argument: 'value'`."""
  try:
    return gin.get_configurable(cls)()
  except TypeError as e:
    unbound = _UNBOUND_MACRO.search(str(e))
    if unbound is None:
      raise
    name = unbound.group(1)
    where = f" ({_MACRO_USERS[name]} uses %{name})" if name in _MACRO_USERS else ""
    raise UsageError(f"%{name} not set{where}: add --gin.{name}=...") from None


_CONFIGURABLES: dict[str, tuple[str, ...]] = {}  # registered name -> parameter names


def register_configurables() -> None:
  """Expose the library's config dataclasses and initializer factories to gin, once.

  Gin binds constructors only; the library itself stays gin-free.
  """
  if _CONFIGURABLES:
    return
  from prompt_tuning_jax import methods  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.model import config
  from prompt_tuning_jax.parallel import sharding
  from prompt_tuning_jax.planning import memory_plan
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
