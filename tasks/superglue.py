"""SuperGLUE as text-to-text SeqIO tasks, in T5's format and the paper's
"taskless" variant (T5's format without the leading task name).

T5's format (reproduced from its super_glue preprocessing, checked by hand
against real rows in tests/test_superglue_tasks.py):

* classification tasks: `<task> <field>: <text> <field>: <text> ...`, fields
  sorted by name (WiC: sentence1, sentence2, word; MultiRC: question, answer,
  paragraph, with `<br>` -> space and `<b>`/`</b>` removed); AX-b and AX-g use
  RTE's prefix and fields (AX-b's sentence1/2 are premise/hypothesis).
  Targets are the label names, `<unk>` for unlabeled (test) rows.
* ReCoRD: `record query: <q> entities: <e1>, <e2> passage: <p>`, the passage's
  `\\n@highlight\\n` lines joined as sentences; one example per gold answer.
* WSC: `wsc: <text with the pronoun as *pronoun*>` -> the candidate referent;
  training keeps correct referents only; evaluation scores whether the
  generated referent matches the candidate, against the label.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Optional, Sequence

import gin
import seqio
import tensorflow as tf

from prompt_tuning_jax.evaluators import superglue_metrics
from prompt_tuning_jax.tasks import sources

UNK_TARGET = "<unk>"
LABEL_NAMES = sources.LABEL_NAMES

# Field order of T5's glue preprocessor per task (prefix, fields).
_TEXT_FORMAT: dict[str, tuple[str, tuple[str, ...]]] = {
    "boolq": ("boolq", ("passage", "question")),
    "cb": ("cb", ("hypothesis", "premise")),
    "copa": ("copa", ("choice1", "choice2", "premise", "question")),
    "multirc": ("multirc", ("question", "answer", "paragraph")),
    "rte": ("rte", ("hypothesis", "premise")),
    "wic": ("wic", ("sentence1", "sentence2", "word")),
    "axb": ("rte", ("hypothesis", "premise")),
    "axg": ("rte", ("hypothesis", "premise")),
}

# WSC rows whose pronoun index does not point at the bare pronoun; T5 blanks
# them by hand (text -> text with the pronoun replaced by X).
_WSC_BLANKED = {
    'The boy continued to whip the pony , and eventually the pony threw him '
    'over. John laughed out quite loud. "Good for him," he said. ':
        'The boy continued to whip the pony , and eventually the pony threw '
        'him over. John laughed out quite loud. "Good for X ," he said.',
    'When they had eventually calmed down a bit , and had gotten home, Mr. '
    'Farley put the magic pebble in an iron safe . Some day they might want '
    'to use it , but really for now, what more could they wish for?':
        'When they had eventually calmed down a bit , and had gotten home, Mr. '
        'Farley put the magic pebble in an iron safe . Some day they might '
        'want to use X , but really for now, what more could they wish for?',
}

# Mixture rates: training examples after preprocessing, as in T5's SuperGLUE
# mixture (ReCoRD counts one example per answer, WSC correct referents only).
MIXTURE_RATES = {"boolq": 9_427., "cb": 250., "copa": 400., "multirc": 27_243.,
                 "record": 138_854., "rte": 2_490., "wic": 5_428., "wsc": 259.}


# ------------------------------------------------------------ preprocessors
def _label_text(label: tf.Tensor, names: Sequence[str]) -> tf.Tensor:
  name = tf.gather(tf.constant(list(names)), tf.maximum(label, 0))
  return tf.where(label < 0, tf.constant(UNK_TARGET), name)


@seqio.map_over_dataset
def glue_text(x: Mapping[str, tf.Tensor], task: str) -> dict[str, tf.Tensor]:
  """Classification row -> {'inputs', 'targets', 'label', idx keys}."""
  prefix, fields = _TEXT_FORMAT[task]
  if task == "axb":
    x = {**x, "premise": x["sentence1"], "hypothesis": x["sentence2"]}
  parts = [prefix]
  for field in fields:
    parts += [field + ":", x[field]]
  inputs = tf.strings.join(parts, separator=" ")
  ex = {"targets": _label_text(x["label"], LABEL_NAMES[task]),
        "label": x["label"]}
  if task == "multirc":
    inputs = tf.strings.regex_replace(inputs, "<br>", " ")
    inputs = tf.strings.regex_replace(inputs, "<(/)?b>", "")
    for key in ("paragraph", "question", "answer"):
      ex["idx/" + key] = x["idx"][key]
  else:
    ex["idx"] = x["idx"]
  if "pair_id" in x:  # AX-g from the official files: Winogender pairs
    ex["pair_id"] = x["pair_id"]
  ex["inputs"] = inputs
  return ex


def record_text(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """ReCoRD query -> one example per gold answer ('<unk>' when none).

  Keeps every gold answer in 'answers' and the query id in 'idx/passage',
  'idx/query' so evaluation can score each query once.
  """
  def expand(x):
    answers = x["answers"]
    count = tf.maximum(tf.size(answers), 1)
    passage = tf.strings.regex_replace(
        x["passage"], r"(\.|\?|\!|\"|\')\n@highlight\n", r"\1 ")
    passage = tf.strings.regex_replace(passage, r"\n@highlight\n", ". ")
    inputs = tf.strings.join([
        "record query:", x["query"], "entities:",
        tf.strings.reduce_join(x["entities"], separator=", "), "passage:",
        passage], separator=" ")
    targets = tf.cond(tf.size(answers) > 0, lambda: answers,
                      lambda: tf.constant([UNK_TARGET]))
    repeat = lambda t: tf.broadcast_to(t, tf.concat([[count], tf.shape(t)], 0))
    return {"inputs": repeat(inputs), "targets": targets,
            "answers": repeat(answers),
            "idx/passage": repeat(x["idx"]["passage"]),
            "idx/query": repeat(x["idx"]["query"])}
  return dataset.map(expand, num_parallel_calls=tf.data.AUTOTUNE).unbatch()


@seqio.map_over_dataset
def wsc_text(x: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  """WSC row -> 'wsc: ... *pronoun* ...' with the candidate as target."""
  words = tf.strings.split(x["text"], sep=" ")
  i = x["span2_index"]
  blanked = tf.strings.join([
      tf.strings.reduce_join(words[:i], separator=" "), "X",
      tf.strings.reduce_join(words[i + 1:], separator=" ")], separator=" ")
  for text, fixed in _WSC_BLANKED.items():
    blanked = tf.where(tf.equal(x["text"], text), tf.constant(fixed), blanked)
  marked = tf.strings.regex_replace(
      blanked, " X ", tf.strings.join([" *", x["span2_text"], "* "]))
  return {"inputs": tf.strings.join(["wsc:", marked], separator=" "),
          "targets": x["span1_text"], "label": x["label"], "idx": x["idx"]}


def wsc_correct_referent(x: Mapping[str, tf.Tensor]) -> tf.Tensor:
  """Train filter: keep rows whose candidate is the pronoun's referent."""
  return tf.equal(x["label"], 1)


@seqio.map_over_dataset
def drop_task_name(x: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  """'rte hypothesis: ...' -> 'hypothesis: ...' (the paper's taskless form)."""
  x = dict(x)
  x["inputs"] = tf.strings.regex_replace(x["inputs"], r"^[^ ]* ", "",
                                         replace_global=False)
  return x


def text_preprocessors(task: str, taskless: bool) -> list[Callable[..., Any]]:
  """The text-to-text steps for `task`, before tokenization."""
  if task == "record":
    steps = [record_text]
  elif task == "wsc":
    steps = [wsc_text]
  else:
    steps = [functools.partial(glue_text, task=task)]
  return steps + ([drop_task_name] if taskless else [])


# ----------------------------------------------------------- postprocessors
def _text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def text_to_label(text: str | bytes, label_names: Sequence[str]) -> int:
  """Index of the decoded label string, or -1 if it is no label.

  An exact match, as T5's `string_label_to_class_id`: " True" is no label.
  """
  text = _text(text)
  return list(label_names).index(text) if text in label_names else -1


def classification_postprocess(output: Any, label_names: Sequence[str],
                               example: Optional[Mapping[str, Any]] = None,
                               is_target: bool = False) -> int:
  del example, is_target
  return text_to_label(output, label_names)


def multirc_postprocess(output: Any,
                        example: Optional[Mapping[str, Any]] = None,
                        is_target: bool = False) -> dict[str, Any]:
  """{'value': 0/1/-1, 'group': (paragraph idx, question idx) or None}."""
  del is_target
  group = None
  if example is not None:
    group = (int(example["idx/paragraph"]), int(example["idx/question"]))
  return {"value": text_to_label(output, LABEL_NAMES["multirc"]),
          "group": group}


def record_postprocess(output: Any, example: Optional[Mapping[str, Any]] = None,
                       is_target: bool = False) -> dict[str, Any]:
  """Prediction -> {'text', 'group'}; target -> {'answers', 'group'}."""
  group = None
  if example is not None:
    group = (int(example["idx/passage"]), int(example["idx/query"]))
  if is_target:
    return {"answers": [_text(a) for a in example["answers"]], "group": group}
  return {"text": _text(output), "group": group}  # unstripped, as T5's `record`


_DETERMINERS = frozenset(
    "a an few her his each every many much my our some that the their these "
    "this those which whose your".split())
WSC_INVALID = -1  # an empty or determiner-only referent: always wrong, counted in invalid_rate


def _wsc_clean(text: str) -> str:
  """Lower-cased, stripped, determiners dropped (T5's `wsc_simple` clean)."""
  return " ".join(w for w in text.strip().lower().split(" ") if w not in _DETERMINERS)


def wsc_referent_matches(prediction: str, candidate: str) -> int:
  """1 if a generated referent names the candidate, 0 if not, -1 if it names nothing.

  T5's `wsc_simple` rule: case and determiners are ignored; one word set must contain
  the other; a possessive on only one side ("Bob" vs "Bob's hat") is no match; an empty
  or determiner-only prediction ("", "the", "his") is -1, so it can never match a label.
  """
  pred, cand = _wsc_clean(prediction), _wsc_clean(candidate)
  if not pred:
    return WSC_INVALID
  if ("'" in pred) != ("'" in cand):
    return 0
  p, c = set(pred.split(" ")), set(cand.split(" "))
  return int(p <= c or c <= p)


def wsc_postprocess(output: Any, example: Optional[Mapping[str, Any]] = None,
                    is_target: bool = False) -> int:
  """Target -> the 0/1 label; prediction -> 1 / 0 / -1 (see `wsc_referent_matches`)."""
  if example is None:
    raise ValueError("wsc_postprocess needs the example (its candidate and "
                     "label), as seqio passes it")
  if is_target:
    return int(example["label"])
  return wsc_referent_matches(_text(output), _text(example["targets_pretokenized"]))


# ------------------------------------------------------------- metric fns
def accuracy_metric(targets, predictions) -> dict[str, float]:
  return {"accuracy": superglue_metrics.accuracy(targets, predictions)}


def cb_metric(targets, predictions) -> dict[str, float]:
  return {"accuracy": superglue_metrics.accuracy(targets, predictions),
          "macro_f1": superglue_metrics.macro_f1(targets, predictions, num_classes=3)}


def axb_metric(targets, predictions) -> dict[str, float]:
  return {"matthews_corrcoef": superglue_metrics.matthews_corrcoef(targets, predictions),
          "accuracy": superglue_metrics.accuracy(targets, predictions)}


def multirc_metric(targets, predictions) -> dict[str, float]:
  return superglue_metrics.multirc_scores([t["value"] for t in targets],
                                [p["value"] for p in predictions],
                                [t["group"] for t in targets])


def record_metric(targets, predictions) -> dict[str, float]:
  return superglue_metrics.record_scores([t["answers"] for t in targets],
                               [p["text"] for p in predictions],
                               [t["group"] for t in targets])


def postprocess_fn(task: str) -> Callable[..., Any]:
  if task == "multirc":
    return multirc_postprocess
  if task == "record":
    return record_postprocess
  if task == "wsc":
    return wsc_postprocess
  return functools.partial(classification_postprocess,
                           label_names=LABEL_NAMES[task])


def metric_fns(task: str) -> list[Callable[..., dict[str, float]]]:
  return {"cb": [cb_metric], "multirc": [multirc_metric],
          "record": [record_metric], "axb": [axb_metric]
          }.get(task, [accuracy_metric])


# ------------------------------------------------------------- registration
TASKS = ("boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc",
         "axb", "axg")
SAMPLE_TASKS = TASKS[:8]
SAMPLE_SPLIT_FILES = {"train": "train.jsonl", "validation": "dev32.jsonl"}


def task_name(task: str, taskless: bool = False, sample: bool = False) -> str:
  """'superglue_rte', 'superglue_rte_taskless', 'superglue_rte_sample', ..."""
  return ("superglue_" + task + ("_sample" if sample else "") +
          ("_taskless" if taskless else ""))


def mixture_name(taskless: bool = False, sample: bool = False) -> str:
  return ("superglue" + ("_sample" if sample else "") +
          ("_taskless" if taskless else ""))


def output_features(vocabulary: seqio.Vocabulary
                    ) -> dict[str, seqio.Feature]:
  return {"inputs": seqio.Feature(vocabulary, add_eos=True),
          "targets": seqio.Feature(vocabulary, add_eos=True)}


def _add_task(name: str, task: str, taskless: bool, source: seqio.DataSource,
              vocabulary: seqio.Vocabulary) -> None:
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
      name, source=source,
      preprocessors=text_preprocessors(task, taskless) + [
          seqio.preprocessors.tokenize, seqio.CacheDatasetPlaceholder(),
          seqio.preprocessors.append_eos_after_trim],
      output_features=output_features(vocabulary),
      postprocess_fn=postprocess_fn(task), metric_fns=metric_fns(task))


# ------------------------------------------- Figure 3(c): span corruption + sentinel
def sentinel_id(vocabulary: seqio.Vocabulary) -> int:
  """<extra_id_0>, the first sentinel: the vocabulary's last id (as seqio/T5 count them)."""
  return vocabulary.vocab_size - 1


def add_sentinel_to_targets(dataset: tf.data.Dataset, output_features: Mapping[str, seqio.Feature],
                            **unused: Any) -> tf.data.Dataset:
  """Token preprocessor: <extra_id_0> before every target ([n] -> [n + 1] ids), the form a
  span-corruption model writes; the paper's Figure 3(c) "Span Corruption + Sentinel"."""
  first = sentinel_id(output_features["targets"].vocabulary)

  @seqio.map_over_dataset
  def add(x):
    x = dict(x)
    x["targets"] = tf.concat([tf.constant([first], x["targets"].dtype), x["targets"]], axis=0)
    return x

  return add(dataset)


def strip_sentinel(postprocess: Callable[..., Any], vocabulary: seqio.Vocabulary) -> Callable[..., Any]:
  """The task's postprocess, after removing a leading '<extra_id_0>' from decoded outputs."""
  marker = vocabulary.decode([sentinel_id(vocabulary)])

  def fn(output: Any, example: Any = None, is_target: bool = False) -> Any:
    if not is_target:
      text = _text(output)
      output = text[len(marker):].strip() if text.startswith(marker) else text
    return postprocess(output, example=example, is_target=is_target)

  return fn


def sentinel_task_name(name: str) -> str:
  return name + "_sentinel"


def _add_sentinel_task(name: str, vocabulary: seqio.Vocabulary) -> None:
  """`<name>_sentinel`: the registered task with <extra_id_0> before each target."""
  base = seqio.TaskRegistry.get(name)
  steps = list(base.preprocessors)
  steps.insert(len(steps) - 1, add_sentinel_to_targets)  # before append_eos_after_trim
  new = sentinel_task_name(name)
  if new in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(new)
  seqio.TaskRegistry.add(new, source=base.source, preprocessors=steps, output_features=base.output_features,
                         postprocess_fn=strip_sentinel(base.postprocessor, vocabulary), metric_fns=base.metric_fns)


# --------------------------------- Figure 1 "Model Tuning (Multi-task)": T5's mixture + DPR
DPR_TFDS = "definite_pronoun_resolution:1.1.0"  # T5's dpr_v001_simple source
DPR_RATE = 1_322.  # T5's SUPER_GLUE_WEIGHT_MAPPING: training examples
MULTITASK_MIXTURE = "superglue_multitask"


@seqio.map_over_dataset
def dpr_text(x: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  """DPR as T5's `definite_pronoun_resolution_simple`: 'wsc: <sentence, first pronoun as
  *pronoun*>' -> the correct candidate."""
  marked = tf.strings.regex_replace(x["sentence"], tf.strings.join([r" (", x["pronoun"], r")( |\.|,)"]),
                                    r" *\1*\2", replace_global=False)
  return {"inputs": tf.strings.join(["wsc:", marked], separator=" "),
          "targets": x["candidates"][x["label"]]}


def _dpr_source() -> seqio.DataSource:
  def load(split: str, shuffle_files: bool = False, seed: int | None = None) -> tf.data.Dataset:
    import tensorflow_datasets as tfds
    return tfds.load(DPR_TFDS, split=split, shuffle_files=shuffle_files, data_dir=sources.get_tfds_data_dir(),
                     read_config=tfds.ReadConfig(shuffle_seed=seed))
  return seqio.FunctionDataSource(load, splits=("train", "test"))


def _add_dpr(vocabulary: seqio.Vocabulary) -> None:
  if "dpr_simple" in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove("dpr_simple")
  seqio.TaskRegistry.add(
      "dpr_simple", source=_dpr_source(),
      preprocessors=[dpr_text, seqio.preprocessors.tokenize, seqio.CacheDatasetPlaceholder(),
                     seqio.preprocessors.append_eos_after_trim],
      output_features=output_features(vocabulary), metric_fns=[accuracy_metric])


def multitask_rates() -> dict[str, float]:
  """T5's `super_glue_v102_proportional`: the eight tasks WITH their task names (T5's format;
  the paper's multi-task baseline keeps "a text prefix indicating the task name") plus DPR,
  each at its number of training examples (examples-proportional mixing)."""
  return {**{task_name(t): r for t, r in MIXTURE_RATES.items()}, "dpr_simple": DPR_RATE}


@gin.configurable
def multitask_evaluator(train_config: Any, model: Any, *, tasks: Sequence[str] = TASKS[:8],
                        mode: str = "greedy", sample: bool = False) -> Callable[[Any, int], dict[str, float]]:
  """Eval hook of the multi-task baseline: every SuperGLUE task's dev set (T5 format, task
  names kept), metrics as '<task>/<metric>' (e.g. `eval/cb/macro_f1`); each
  task's score is later read at that task's own best eval (per-task selection). `sample`: the
  bundled 32-row samples instead (offline smoke runs)."""
  import dataclasses

  from prompt_tuning_jax.evaluators import config as eval_config_lib
  from prompt_tuning_jax.evaluators import task_evaluator
  each = {t: task_evaluator.Evaluator(
      dataclasses.replace(train_config.data, mixture_or_task_name=task_name(t, sample=sample)), model,
      eval_config_lib.EvalConfig(mode=mode)) for t in tasks}  # no prompt: one task per batch

  def evaluate(params: Any, step: int) -> dict[str, float]:
    return {f"{t}/{k}": v for t, ev in each.items() for k, v in ev(params, step).items()}

  return evaluate


def _add_mixture(name: str, rates: Mapping[str, float]) -> None:
  if name in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove(name)
  seqio.MixtureRegistry.add(name, list(rates.items()))


def register_superglue(vocabulary: seqio.Vocabulary, samples_dir: str) -> None:
  """Registers every SuperGLUE task and mixture (re-registering is safe).

  Tasks: `superglue_<task>[_taskless]` for the ten tasks (AX-b/AX-g: test
  split only, formatted as RTE); `superglue_<task>_sample[_taskless]` read
  from `samples_dir/<Task>/{train,dev32}.jsonl` (validation = dev32).
  Mixtures: `superglue[_taskless]` over the eight tasks with `MIXTURE_RATES`,
  `superglue_sample[_taskless]` over the samples, equally.
  """
  for taskless in (False, True):
    for task in TASKS:
      train_filter = wsc_correct_referent if task == "wsc" else None
      _add_task(task_name(task, taskless), task, taskless,
                sources.SuperGlueSource(task, train_filter=train_filter),
                vocabulary)
    for task in SAMPLE_TASKS:
      folder = sources.CONFIGS[task][1]
      train_filter = wsc_correct_referent if task == "wsc" else None
      _add_task(task_name(task, taskless, sample=True), task, taskless,
                sources.SuperGlueSource(
                    task, local_dir=f"{samples_dir}/{folder}",
                    split_files=SAMPLE_SPLIT_FILES, train_filter=train_filter),
                vocabulary)
    _add_mixture(mixture_name(taskless),
                 {task_name(t, taskless): r for t, r in MIXTURE_RATES.items()})
    # The leaderboard's ten test sets (8 tasks + AX-b + AX-g): `eval --split=test` on it
    # writes one submission file per task.
    _add_mixture(("superglue_submission" + ("_taskless" if taskless else "")),
                 {task_name(t, taskless): 1.0 for t in TASKS})
    _add_mixture(mixture_name(taskless, sample=True),
                 {task_name(t, taskless, sample=True): 1.0
                  for t in SAMPLE_TASKS})
  for task in SAMPLE_TASKS:  # Figure 3(c): the taskless tasks with a sentinel before each target
    _add_sentinel_task(task_name(task, taskless=True), vocabulary)
    _add_sentinel_task(task_name(task, taskless=True, sample=True), vocabulary)
  _add_dpr(vocabulary)
  _add_mixture(MULTITASK_MIXTURE, multitask_rates())
