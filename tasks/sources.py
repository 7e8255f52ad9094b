"""Where SuperGLUE examples come from: TFDS, or a local folder of JSONL files.

Both sources yield the same feature dicts as TFDS `super_glue/<config>:1.0.2`
(same keys, nesting and dtypes, labels as class indices, -1 when absent), so
one set of preprocessors in `tasks/superglue.py` serves both.

Choosing the source (read each time a dataset is built, not at import):

* Default: TFDS `super_glue/<config>:1.0.2`, prepared under the TFDS data dir
  (`PTJ_TFDS_DATA_DIR` or `set_tfds_data_dir(path)`; else TFDS's default).
* A local folder in the official SuperGLUE layout, `<dir>/<Task>/{train,val,
  test}.jsonl` (`AX-b/AX-b.jsonl`, `AX-g/AX-g.jsonl`), selected by ONE
  setting, in order of precedence:
    1. `tasks.set_data_dir("/data/SuperGLUE")` from Python;
    2. gin: `superglue_data_dir.path = "/data/SuperGLUE"`;
    3. the environment: `PTJ_SUPERGLUE_DIR=/data/SuperGLUE`.

Offline TFDS: when the dataset is not prepared, TFDS would try to download it
and, with no network, retry for minutes. We check first and fail in seconds
with the two fixes. Downloading is governed by `PTJ_TFDS_DOWNLOAD` /
`set_tfds_download(policy)`: "auto" (default: download only if the download
host answers within 3 s), "always", or "never".
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import seqio
import tensorflow as tf

import gin
from prompt_tuning_jax.text import jsonl

ENV_DATA_DIR = "PTJ_SUPERGLUE_DIR"
ENV_TFDS_DATA_DIR = "PTJ_TFDS_DATA_DIR"
ENV_TFDS_DOWNLOAD = "PTJ_TFDS_DOWNLOAD"
TFDS_VERSION = "1.0.2"
DOWNLOAD_HOST = "dl.fbaipublicfiles.com"

# Our task key -> (TFDS config, official folder, split -> file name).
_STANDARD_FILES = {"train": "train.jsonl", "validation": "val.jsonl",
                   "test": "test.jsonl"}
CONFIGS: dict[str, tuple[str, str, Mapping[str, str]]] = {
    "boolq": ("boolq", "BoolQ", _STANDARD_FILES),
    "cb": ("cb", "CB", _STANDARD_FILES),
    "copa": ("copa", "COPA", _STANDARD_FILES),
    "multirc": ("multirc", "MultiRC", _STANDARD_FILES),
    "record": ("record", "ReCoRD", _STANDARD_FILES),
    "rte": ("rte", "RTE", _STANDARD_FILES),
    "wic": ("wic", "WiC", _STANDARD_FILES),
    "wsc": ("wsc.fixed", "WSC", _STANDARD_FILES),
    "axb": ("axb", "AX-b", {"test": "AX-b.jsonl"}),
    "axg": ("axg", "AX-g", {"test": "AX-g.jsonl"}),
}

# Class names in TFDS ClassLabel order (ReCoRD has none: it is extractive).
LABEL_NAMES: dict[str, tuple[str, ...]] = {
    "boolq": ("False", "True"),
    "cb": ("entailment", "contradiction", "neutral"),
    "copa": ("choice1", "choice2"), "multirc": ("False", "True"),
    "rte": ("entailment", "not_entailment"), "wic": ("False", "True"),
    "wsc": ("False", "True"), "axb": ("entailment", "not_entailment"),
    "axg": ("entailment", "not_entailment"),
}

# Feature spec of each flat example: name -> kind ('str', 'int32', 'int64' for
# labels, 'strs' for a variable-length list); 'a/b' is nested as {'a': {'b'}}.
_TEXT_FIELDS = {
    "boolq": ("question", "passage"), "cb": ("premise", "hypothesis"),
    "copa": ("premise", "choice1", "choice2", "question"),
    "rte": ("premise", "hypothesis"), "wic": ("word", "sentence1", "sentence2"),
    "wsc": ("text", "span1_text", "span2_text"),
    "axb": ("sentence1", "sentence2"),
    "axg": ("premise", "hypothesis"),
}
_INT_FIELDS = {"wic": ("start1", "start2", "end1", "end2"),
               "wsc": ("span1_index", "span2_index")}

_settings: dict[str, Optional[str]] = {
    "data_dir": None, "tfds_data_dir": None, "tfds_download": None}


class SuperGlueDataError(RuntimeError):
  """The SuperGLUE data cannot be read (offline TFDS, bad JSONL, no file)."""


# ----------------------------------------------------------------- settings
def set_data_dir(path: Optional[str | os.PathLike]) -> None:
  """Reads SuperGLUE from `<path>/<Task>/*.jsonl`, not TFDS (None: unset)."""
  _settings["data_dir"] = None if path is None else str(path)


@gin.configurable("superglue_data_dir")
def get_data_dir(path: Optional[str] = None) -> Optional[str]:
  """The local SuperGLUE folder, or None to use TFDS (see module docstring)."""
  return _settings["data_dir"] or path or os.environ.get(ENV_DATA_DIR) or None


def set_tfds_data_dir(path: Optional[str | os.PathLike]) -> None:
  """TFDS data dir with prepared `super_glue` (None: env var, TFDS default)."""
  _settings["tfds_data_dir"] = None if path is None else str(path)


def get_tfds_data_dir() -> Optional[str]:
  return _settings["tfds_data_dir"] or os.environ.get(ENV_TFDS_DATA_DIR) or None


def set_tfds_download(policy: Optional[str]) -> None:
  """'auto', 'always' or 'never' (None: env var, else 'auto')."""
  if policy is not None:
    _parse_policy(policy, "set_tfds_download(policy)")
  _settings["tfds_download"] = policy


def _parse_policy(value: str, where: str) -> str:
  v = value.strip().lower()
  aliases = {"1": "always", "true": "always", "0": "never", "false": "never"}
  v = aliases.get(v, v)
  if v not in ("auto", "always", "never"):
    raise ValueError(f"{where}={value!r}; expected 'auto', 'always' or 'never'")
  return v


def tfds_download_policy() -> str:
  if _settings["tfds_download"] is not None:
    return _parse_policy(_settings["tfds_download"],
                         "set_tfds_download(policy)")
  return _parse_policy(os.environ.get(ENV_TFDS_DOWNLOAD, "auto"),
                       ENV_TFDS_DOWNLOAD)


def network_reachable(host: str = DOWNLOAD_HOST, port: int = 443,
                      timeout_s: float = 3.0) -> bool:
  """True if `host:port` accepts a TCP connection within `timeout_s`.

  Runs in a daemon thread so a slow DNS lookup cannot exceed the budget.
  """
  result = [False]

  def probe():
    try:
      with socket.create_connection((host, port), timeout=timeout_s):
        result[0] = True
    except OSError:
      pass

  thread = threading.Thread(target=probe, daemon=True)
  thread.start()
  thread.join(timeout_s + 0.5)
  return result[0]


# -------------------------------------------------------------------- JSONL
def read_jsonl(path: str | os.PathLike) -> list[tuple[int, dict[str, Any]]]:
  """(physical line, object) per non-blank line; errors name file and line."""
  return jsonl.read_jsonl(path, error=SuperGlueDataError)


def _class_index(task: str, label: Any, where: str) -> int:
  """TFDS ClassLabel index of an official label (bool, 0/1 or string)."""
  if label is None or (not isinstance(label, bool) and label == -1):  # unlabeled (test) rows
    return -1
  names = LABEL_NAMES[task]
  if task == "copa":  # 0 -> choice1, 1 -> choice2
    name = "choice2" if label else "choice1"
  elif isinstance(label, bool) or (isinstance(label, int) and label in (0, 1)):
    name = "True" if label else "False"
  else:
    name = str(label)
  if name not in names:
    raise SuperGlueDataError(f"{where}: label {label!r} not in {names}")
  return names.index(name)


def _fix_wsc_span(ex: dict[str, Any], key: str) -> None:
  """TFDS `wsc.fixed`: make a span text that is not in the text match it."""
  text, index = ex[key + "_text"], ex[key + "_index"]
  if text in ex["text"] or text in ("Kamenev and Zinoviev",
                                    "Kamenev, Zinoviev, and Stalin"):
    return
  if "theyscold" in text:  # TFDS sets this index (its text edit is a no-op).
    ex["span2_index"] = 10
  words = ex["text"].split()
  if index < len(words) and text:
    first = words[index]
    head = text[0].lower() if first[0].islower() else text[0].upper()
    text = head + text[1:]
  ex[key + "_text"] = text.rstrip(".").replace("\n", " ")


def convert_rows(task: str, rows: Sequence[Mapping[str, Any]],
                 source: str = "<rows>",
                 lines: Optional[Sequence[int]] = None) -> list[dict[str, Any]]:
  """Official SuperGLUE JSONL rows -> flat TFDS-style examples, type-checked.

  MultiRC gives one example per answer and ReCoRD one per query, as TFDS does;
  nested keys are flattened as 'idx/paragraph'. `source` and `lines` (physical
  line numbers, default 1..n) name the place of a bad row in errors.
  """
  out = []
  for n, row in enumerate(rows, start=1):
    where = f"{source}:{lines[n - 1] if lines is not None else n}"
    try:
      out.extend(_convert_row(task, row, where))
    except KeyError as e:
      raise SuperGlueDataError(f"{where}: missing key {e} for task {task!r}"
                               ) from None
    except (TypeError, AttributeError, IndexError) as e:
      raise SuperGlueDataError(f"{where}: malformed {task!r} row ({e})"
                               ) from None
  return out


_INT_RANGE = {"int32": (-2 ** 31, 2 ** 31 - 1), "int64": (-2 ** 63, 2 ** 63 - 1)}


def _check_int(value: Any, kind: str, key: str, task: str, where: str) -> None:
  """An integer TF can hold as `kind` (JSON integers have no bound; TF's ValueError names nothing)."""
  low, high = _INT_RANGE[kind]
  if not low <= value <= high:
    raise SuperGlueDataError(f"{where}: field {key!r} of task {task!r} is {value!r:.40}, outside the {kind} "
                             f"range [{low}, {high}] it is stored in")


def _check_types(task: str, examples: list[dict], where: str) -> list[dict]:
  """Refuses a field of the wrong JSON type, or an integer out of its range, before TF sees it."""
  want = {"str": str, "int32": int, "int64": int, "strs": list}
  for ex in examples:
    for key, kind in _feature_kinds(task).items():
      value = ex[key]
      ok = isinstance(value, want[kind]) and not isinstance(value, bool)
      if ok and kind == "strs":
        ok = all(isinstance(v, str) for v in value)
      if not ok:
        raise SuperGlueDataError(
            f"{where}: field {key!r} of task {task!r} must be "
            f"{'a list of strings' if kind == 'strs' else 'a string' if kind == 'str' else 'an integer'}"
            f", found {type(value).__name__} {value!r:.40}")
      if kind in _INT_RANGE:
        _check_int(value, kind, key, task, where)
  return examples


def _convert_row(task: str, row: Mapping[str, Any], where: str) -> list[dict]:
  if task == "multirc":
    psg = row["passage"]
    return _check_types(task, [
        {"paragraph": psg["text"], "question": q["question"],
         "answer": a["text"],
         "label": _class_index(task, a.get("label"), where),
         "idx/paragraph": row["idx"], "idx/question": q["idx"],
         "idx/answer": a["idx"]}
        for q in psg["questions"] for a in q["answers"]], where)
  if task == "record":
    psg = row["passage"]
    text = psg["text"]
    entities = sorted({text[e["start"]:e["end"] + 1] for e in psg["entities"]})
    return _check_types(task, [
        {"passage": text, "query": qa["query"], "entities": entities,
         "answers": sorted({a["text"] for a in qa.get("answers", [])}),
         "idx/passage": row["idx"], "idx/query": qa["idx"]}
        for qa in row["qas"]], where)
  row = dict(row)
  if task == "wsc":
    row.update(row["target"])
  ex = {k: row[k] for k in _TEXT_FIELDS[task] + _INT_FIELDS.get(task, ())}
  ex["idx"] = row["idx"]
  ex["label"] = _class_index(task, row.get("label"), where)
  _check_types(task, [ex], where)
  if task == "wsc":
    _fix_wsc_span(ex, "span1")
    _fix_wsc_span(ex, "span2")
  if task == "axg" and "pair_id" in row:  # Winogender pairs, for the gender-parity score
    pair_id = row["pair_id"]
    if isinstance(pair_id, bool) or not isinstance(pair_id, (int, str)) or (
        isinstance(pair_id, str) and not (pair_id.strip().lstrip("-").isdigit() and len(pair_id) < 20)):
      raise SuperGlueDataError(f"{where}: field 'pair_id' must be an integer, found {pair_id!r:.40}")
    ex["pair_id"] = int(pair_id)
    _check_int(ex["pair_id"], "int32", "pair_id", task, where)
  return [ex]


def _feature_kinds(task: str) -> dict[str, str]:
  if task == "multirc":
    kinds = dict.fromkeys(("paragraph", "question", "answer"), "str")
    kinds.update(dict.fromkeys(("idx/paragraph", "idx/question", "idx/answer"),
                               "int32"))
    return {**kinds, "label": "int64"}
  if task == "record":
    return {"passage": "str", "query": "str", "entities": "strs",
            "answers": "strs", "idx/passage": "int32", "idx/query": "int32"}
  kinds = dict.fromkeys(_TEXT_FIELDS[task], "str")
  kinds.update(dict.fromkeys(_INT_FIELDS.get(task, ()), "int32"))
  return {**kinds, "idx": "int32", "label": "int64"}


def examples_to_dataset(task: str, examples: Sequence[Mapping[str, Any]]
                        ) -> tf.data.Dataset:
  """Flat examples -> `tf.data.Dataset` with TFDS's nesting and dtypes.

  Uses `from_tensor_slices` (not `from_generator`, which can hang at exit).
  """
  columns: dict[str, Any] = {}
  for key, kind in _feature_kinds(task).items():
    values = [ex[key] for ex in examples]
    if kind == "strs":
      col = tf.RaggedTensor.from_row_lengths(
          tf.constant([v for vs in values for v in vs], tf.string, [sum(
              len(vs) for vs in values)]),
          tf.constant([len(vs) for vs in values], tf.int64, [len(values)]))
    else:
      dtype = {"str": tf.string, "int32": tf.int32, "int64": tf.int64}[kind]
      col = tf.constant(values, dtype, [len(values)])
    outer, _, inner = key.partition("/")
    if inner:
      columns.setdefault(outer, {})[inner] = col
    else:
      columns[key] = col
  if task == "axg" and examples and all("pair_id" in ex for ex in examples):
    columns["pair_id"] = tf.constant([ex["pair_id"] for ex in examples], tf.int32, [len(examples)])
  return tf.data.Dataset.from_tensor_slices(columns)


# ------------------------------------------------------------------ sources
def check_tfds_prepared(tfds_name: str, data_dir: Optional[str], *, host: str, local_setting: str,
                        error: type[Exception]) -> None:
  """Raises `error` in seconds when TFDS would have to download `tfds_name` ('name/config:version')
  without network, naming the dataset, the folder searched and both ways out: prepare it
  where there is network, or read the official files from `local_setting`."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  absl_logger = logging.getLogger("absl")  # TFDS warns "Variant folder ... has no dataset_info.json"
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)
  try:
    builder = tfds.builder(tfds_name, data_dir=data_dir)
    if builder.is_prepared():
      return
  finally:
    absl_logger.setLevel(level)
  policy = tfds_download_policy()
  if policy == "always" or (policy == "auto" and network_reachable(host)):
    return
  reason = (f"downloading is off ({ENV_TFDS_DOWNLOAD} / set_tfds_download: 'never')" if policy == "never" else
            f"{host} cannot be reached (no network; {ENV_TFDS_DOWNLOAD}=always would try anyway)")
  dataset, _, config = tfds_name.split(":")[0].partition("/")
  raise error(
      f"TFDS dataset {tfds_name} is not prepared under {builder.data_dir} and {reason}. Either prepare it "
      f"where there is network (`tfds build {dataset}{f' --config {config}' if config else ''}` then copy the "
      f"TFDS data dir and set TFDS_DATA_DIR or {ENV_TFDS_DATA_DIR}), or point {local_setting}.")


def _check_superglue_tfds(tfds_name: str) -> None:
  check_tfds_prepared(
      tfds_name, get_tfds_data_dir(), host=DOWNLOAD_HOST, error=SuperGlueDataError,
      local_setting=(f"{ENV_DATA_DIR} (or tasks.set_data_dir / gin superglue_data_dir.path) at a local folder "
                     "in the official SuperGLUE layout <dir>/<Task>/{train,val,test}.jsonl"))


class SuperGlueSource(seqio.DataSource):
  """Raw SuperGLUE examples from TFDS or JSONL files, chosen when read.

  Args:
    task: our task key ('boolq', ..., 'axb', 'axg'; see `CONFIGS`).
    local_dir: a fixed folder holding the task's JSONL files directly (e.g.
      the bundled samples); None follows the settings above.
    split_files: split -> file name in that folder; defaults to the official
      names (`train.jsonl`, `val.jsonl`, `test.jsonl`).
    train_filter: keeps a train example when it returns a true tf.bool (WSC
      trains on correct referents only).
  """

  def __init__(self, task: str, local_dir: Optional[str | os.PathLike] = None,
               split_files: Optional[Mapping[str, str]] = None,
               train_filter: Optional[Callable[[Any], tf.Tensor]] = None):
    if task not in CONFIGS:
      raise ValueError(f"unknown SuperGLUE task {task!r}; "
                       f"expected one of {sorted(CONFIGS)}")
    self._task = task
    self._config, self._folder, default_files = CONFIGS[task]
    self._local_dir = None if local_dir is None else Path(local_dir)
    self._split_files = dict(split_files or default_files)
    self._train_filter = train_filter
    super().__init__(splits=tuple(self._split_files))

  @property
  def tfds_name(self) -> str:
    return f"super_glue/{self._config}:{TFDS_VERSION}"

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return False

  def list_shards(self, split: str) -> Sequence[str]:
    return [split]

  def missing_local_files(self, splits: Sequence[str]) -> list[Path]:
    """The local JSONL files this source would read for `splits` and that do not exist
    ([] when it reads TFDS): the commands check them before any model loads."""
    files = [self._local_file(s) for s in splits if s in self._split_files]
    return [f for f in files if f is not None and not f.is_file()]

  def check_prepared(self, splits: Sequence[str]) -> None:
    """Raises SuperGlueDataError when a split of `splits` reads TFDS and TFDS cannot serve it
    offline (not prepared, no download): the commands call this before any model loads."""
    if any(self._local_file(s) is None for s in splits if s in self._split_files):
      _check_superglue_tfds(self.tfds_name)

  def _local_file(self, split: str) -> Optional[Path]:
    if self._local_dir is not None:
      return self._local_dir / self._split_files[split]
    root = get_data_dir()
    if root is None:
      return None
    return Path(root) / self._folder / self._split_files[split]

  def get_dataset(self, split: str = "train", shuffle: bool = True,
                  seed: Optional[int] = None, shard_info=None, *,
                  sequence_length=None, use_cached: bool = False,
                  num_epochs: Optional[int] = 1) -> tf.data.Dataset:
    del sequence_length, use_cached, num_epochs
    if split not in self._split_files:
      raise ValueError(f"split {split!r} not in {sorted(self._split_files)} "
                       f"for SuperGLUE task {self._task!r}")
    path = self._local_file(split)
    if path is None:
      _check_superglue_tfds(self.tfds_name)
      ds = seqio.TfdsDataSource(self.tfds_name, tfds_data_dir=get_tfds_data_dir(),
                                splits=[split]).get_dataset(
                                    split, shuffle=shuffle, seed=seed,
                                    shard_info=shard_info)
    else:
      numbered = read_jsonl(path)
      examples = convert_rows(self._task, [r for _, r in numbered], str(path),
                              [n for n, _ in numbered])
      ds = examples_to_dataset(self._task, examples)
      if shard_info is not None and shard_info.num_shards > 1:
        ds = ds.shard(shard_info.num_shards, shard_info.index)
      if shuffle and examples:
        ds = ds.shuffle(len(examples), seed=seed)
    if split == "train" and self._train_filter is not None:
      ds = ds.filter(self._train_filter)
    return ds
