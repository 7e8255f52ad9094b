"""SuperGLUE text formats on real rows, checked by hand against T5's format.

Each expected string below was written from the JSONL row (read by eye) and
the format rules of T5's super_glue preprocessing: fields sorted by name after
the task name, WiC/MultiRC in their fixed orders, ReCoRD highlights joined as
sentences, WSC with the pronoun starred. The taskless variant drops the first
word (the task name).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import seqio

import prompt_tuning_jax.tasks as tasks
from prompt_tuning_jax.tasks import sources, superglue

SAMPLES = tasks.SAMPLES_DIR


def _examples(name: str, split: str) -> list[dict]:
  ds = seqio.get_mixture_or_task(name).get_dataset(None, split=split,
                                                   shuffle=False)
  return list(ds.as_numpy_iterator())


def _first_text(name: str, split: str) -> tuple[str, str]:
  ex = _examples(name, split)[0]
  return (ex["inputs_pretokenized"].decode(),
          ex["targets_pretokenized"].decode())


def _row(folder: str, split_file: str, line: int = 0) -> dict:
  with open(SAMPLES / folder / split_file, encoding="utf-8") as f:
    return json.loads(f.readlines()[line])


def _check(task: str, split: str, t5_inputs: str, target: str):
  got = _first_text(superglue.task_name(task, sample=True), split)
  assert got == (t5_inputs, target)
  taskless = _first_text(superglue.task_name(task, True, sample=True), split)
  assert taskless == (t5_inputs.split(" ", 1)[1], target)


@pytest.mark.timeout(60)
def test_short_classification_rows_by_hand():
  # CB/dev32.jsonl line 1.
  _check("cb", "validation",
         "cb hypothesis: Ely had considered him wanting to be free premise: "
         "``Ely,'' I said (that was her name and the first time I 'd ever used "
         "it), ``I want to be free.'' She looked stunned. I don't think she 'd "
         "considered this.", "contradiction")
  # COPA/dev32.jsonl line 1 (label 1 -> choice2).
  _check("copa", "validation",
         "copa choice1: I encouraged her to take deep breaths. choice2: I took "
         "her to the emergency room. premise: My daughter suffered an allergy "
         "attack. question: effect", "choice2")
  # WiC/dev32.jsonl line 1 (start/end offsets are not in the text).
  _check("wic", "validation",
         "wic sentence1: Roughcast a wall. sentence2: To roughcast a wall or "
         "building. word: roughcast", "True")
  # RTE/dev32.jsonl line 1.
  _check("rte", "validation",
         "rte hypothesis: A UFO might have been seen in Turkey. premise: On "
         "Wednesday night people in the Bah\u00e7elievler district of "
         "Yenibosna in Istanbul, Turkey, claimed that they had seen a UFO "
         "flying in the sky, the Turkish newspaper Sabah reports. They said "
         "that the UFO was glowing with white lights and that it revolved "
         "around itself. Istanbul has had previous UFO incidents in the past, "
         "and in 2002, the Istanbul UFO Museum was opened to the public.",
         "entailment")


@pytest.mark.timeout(60)
def test_long_passage_rows_by_template():
  # BoolQ/train.jsonl line 1: passage before question, label false.
  row = _row("BoolQ", "train.jsonl")
  assert row["question"] == "is ghost in the shell based on the anime"
  _check("boolq", "train",
         f"boolq passage: {row['passage']} question: is ghost in the shell "
         "based on the anime", "False")
  # MultiRC/train.jsonl line 1, first answer (label 0); no HTML in this row.
  row = _row("MultiRC", "train.jsonl")
  _check("multirc", "train",
         "multirc question: How does Jason react to the stranger who arrives "
         "with Susan? answer: He welcomes him with open arm paragraph: "
         f"{row['passage']['text']}", "False")


@pytest.mark.timeout(60)
def test_record_row_by_hand():
  # ReCoRD/train.jsonl line 13 (idx 29280): entities read from the spans,
  # "\n@highlight\n" after "years" (no punctuation) becomes ". ".
  passage = (
      "By Leon Watson PUBLISHED: 12:24 EST, 15 October 2012 | UPDATED: 01:47 "
      "EST, 16 October 2012 A thug who stabbed his friend 11 times and left "
      "him for dead after a row over a game of darts has been jailed for eight "
      "years. Peter Roberts, 46, from Northampton, launched a 'frenzied and "
      "determined' attack on Shane Reeves, 22, after they fell out on July 5 "
      "this year. Roberts plunged a kitchen knife into his friend's chest, "
      "abdomen, shoulder and arm before dumping him on a landing. Peter "
      "Roberts, from Northampton, stabbed his friend 11 times and left him for "
      "dead after a row over a game of darts. He has been jailed for eight "
      "years. Peter Roberts, from Northampton, jailed for attack on Shane "
      "Reeves. The pair, aged 46 and 22, were friends but fell out on July 5 "
      "this year")
  expected = ("record query: After undergoing surgery, Mr @placeholder spent a "
              "month recovering from his injuries. entities: Leon Watson, "
              "Northampton, Peter Roberts, Roberts, Shane Reeves passage: " +
              passage)
  for taskless in (False, True):
    exs = [e for e in _examples(superglue.task_name("record", taskless, True),
                                "train") if e["idx/passage"] == 29280]
    assert len(exs) == 1  # two gold spans, one distinct answer text
    want = expected.split(" ", 1)[1] if taskless else expected
    assert exs[0]["inputs_pretokenized"].decode() == want
    assert exs[0]["targets_pretokenized"].decode() == "Shane Reeves"


@pytest.mark.timeout(60)
def test_record_one_example_per_answer_keeps_all_answers():
  # ReCoRD/dev32.jsonl line 1 has answers 'Benazir Bhutto' and 'Bhutto'.
  exs = [e for e in _examples("superglue_record_sample", "validation")
         if e["idx/passage"] == _row("ReCoRD", "dev32.jsonl")["idx"]]
  assert [e["targets_pretokenized"] for e in exs] == [b"Benazir Bhutto",
                                                       b"Bhutto"]
  for e in exs:
    assert e["answers"].tolist() == [b"Benazir Bhutto", b"Bhutto"]
  assert exs[0]["inputs_pretokenized"] == exs[1]["inputs_pretokenized"]


def _run(fn, task: str, rows: list[dict]) -> list[dict]:
  ds = fn(sources.examples_to_dataset(task, sources.convert_rows(task, rows)))
  return list(ds.as_numpy_iterator())


def test_record_highlight_after_punctuation_and_test_rows():
  text = 'He won.\n@highlight\n"Great"\n@highlight\nEnd'
  row = {"idx": 1, "passage": {"text": text,
                               "entities": [{"start": 0, "end": 1}]},
         "qas": [{"query": "@placeholder won", "idx": 2}]}
  (ex,) = _run(superglue.record_text, "record", [row])
  assert ex["inputs"].decode() == (
      'record query: @placeholder won entities: He passage: He won. "Great" '
      'End')
  assert ex["targets"] == b"<unk>"  # a test row has no answers


def test_multirc_html_removed():
  answer = {"text": "x", "idx": 2, "label": 1}
  row = {"idx": 0, "passage": {"text": "A <b>bold</b> line<br>next",
                               "questions": [{"question": "Q?", "idx": 1,
                                              "answers": [answer]}]}}
  (ex,) = _run(lambda d: superglue.glue_text(d, task="multirc"), "multirc",
               [row])
  assert ex["inputs"].decode() == (
      "multirc question: Q? answer: x paragraph: A bold line next")
  assert ex["targets"] == b"True"
  idx = (ex["idx/paragraph"], ex["idx/question"], ex["idx/answer"])
  assert idx == (0, 1, 2)


def test_diagnostics_use_rte_format():
  axb = {"sentence1": "The cat sat.", "sentence2": "A cat sat.", "idx": 3,
         "label": "not_entailment"}
  (ex,) = _run(lambda d: superglue.glue_text(d, task="axb"), "axb", [axb])
  assert ex["inputs"].decode() == (
      "rte hypothesis: A cat sat. premise: The cat sat.")
  assert ex["targets"] == b"not_entailment"
  axg = {"premise": "P.", "hypothesis": "H.", "idx": 0, "label": "entailment",
         "pair_id": 9}
  (ex,) = _run(lambda d: superglue.drop_task_name(
      superglue.glue_text(d, task="axg")), "axg", [axg])
  assert ex["inputs"].decode() == "hypothesis: H. premise: P."


@pytest.mark.timeout(60)
def test_wsc_rows_by_hand():
  exs = _examples("superglue_wsc_sample", "train")
  texts = [(e["inputs_pretokenized"].decode(),
            e["targets_pretokenized"].decode()) for e in exs]
  # WSC/train.jsonl line 2: pronoun 'they' at word 9; the candidate
  # 'The demonstrators' is repaired to the text's 'the demonstrators'.
  assert texts[1] == ("wsc: The city councilmen refused the demonstrators a "
                      "permit because *they* advocated violence.",
                      "the demonstrators")
  # Line 4: the index points at 'him,"', so the pronoun is blanked by hand and
  # the trailing space is dropped.
  assert texts[3] == ('wsc: The boy continued to whip the pony , and '
                      'eventually the pony threw him over. John laughed out '
                      'quite loud. "Good for *him* ," he said.', "pony")
  taskless = _examples("superglue_wsc_sample_taskless", "train")
  assert taskless[1]["inputs_pretokenized"].decode() == (
      "The city councilmen refused the demonstrators a permit because *they* "
      "advocated violence.")


@pytest.mark.timeout(60)
def test_wsc_trains_on_correct_referents_only(tmp_path):
  # dev32 has 10 rows with label true out of 32; used as a train file.
  folder = tmp_path / "WSC"
  folder.mkdir()
  (folder / "train.jsonl").write_text(
      (SAMPLES / "WSC" / "dev32.jsonl").read_text())
  src = sources.SuperGlueSource("wsc", local_dir=folder,
                                split_files={"train": "train.jsonl",
                                             "validation": "train.jsonl"},
                                train_filter=superglue.wsc_correct_referent)
  train = list(src.get_dataset("train", shuffle=False).as_numpy_iterator())
  assert len(train) == 10 and all(e["label"] == 1 for e in train)
  assert len(list(src.get_dataset("validation", shuffle=False))) == 32


def test_postprocessors_map_text_to_labels():
  names = superglue.LABEL_NAMES["rte"]
  assert superglue.text_to_label("not_entailment", names) == 1
  assert superglue.text_to_label(b"entailment", names) == 0
  assert superglue.text_to_label(b"entailment ", names) == -1  # exact match, as T5
  assert superglue.text_to_label("entail", names) == -1
  cb = superglue.postprocess_fn("cb")
  assert cb("neutral", example={}, is_target=False) == 2
  mrc = superglue.multirc_postprocess(
      "True", example={"idx/paragraph": 4, "idx/question": 7}, is_target=True)
  assert mrc == {"value": 1, "group": (4, 7)}
  rec = {"idx/passage": 1, "idx/query": 2,
         "answers": np.array([b"Shane Reeves"], dtype=object)}
  assert superglue.record_postprocess(b"x", rec, is_target=True) == {
      "answers": ["Shane Reeves"], "group": (1, 2)}
  assert superglue.record_postprocess(b" Reeves", rec)["text"] == " Reeves"  # the metric normalizes


def test_wsc_postprocess_matches_referent_leniently():
  ex = {"targets_pretokenized": b"the demonstrators", "label": 1}
  assert superglue.wsc_postprocess("Demonstrators", ex) == 1
  assert superglue.wsc_postprocess("the city councilmen", ex) == 0
  assert superglue.wsc_postprocess("x", ex, is_target=True) == 1
  assert superglue.wsc_referent_matches("Bob", "Bob's hat") == 0
  assert superglue.wsc_referent_matches("fuzzy bunny", "the bunny") == 1
  assert superglue.wsc_postprocess("the", ex) == superglue.wsc_postprocess("", ex) == -1


def test_registered_names_mixtures_and_vocabulary():
  names = set(seqio.TaskRegistry.names())
  for task in superglue.TASKS:
    assert {f"superglue_{task}", f"superglue_{task}_taskless"} <= names
  for task in superglue.SAMPLE_TASKS:
    assert {f"superglue_{task}_sample",
            f"superglue_{task}_sample_taskless"} <= names
  mix = seqio.get_mixture_or_task("superglue_taskless")
  assert sorted(t.name for t in mix.tasks) == sorted(
      f"superglue_{t}_taskless" for t in superglue.SAMPLE_TASKS)
  assert mix.get_rate(seqio.get_mixture_or_task(
      "superglue_record_taskless")) == 138_854
  assert seqio.get_mixture_or_task("superglue_axb").source.splits == ("test",)
  vocab = tasks.get_vocabulary()
  assert vocab.vocab_size == 32_100 and vocab.eos_id == 1
  feats = seqio.get_mixture_or_task("superglue_rte").output_features
  assert feats["inputs"].add_eos and feats["targets"].add_eos


@pytest.mark.timeout(60)
def test_tokenized_sample_ends_with_eos():
  ex = _examples("superglue_copa_sample_taskless", "validation")[0]
  vocab = tasks.get_vocabulary()
  assert ex["targets"].tolist() == vocab.encode("choice2") + [1]
  assert ex["inputs"][-1] == 1
  assert vocab.decode(ex["inputs"].tolist()).startswith("choice1: I encouraged")


def test_task_metric_fns():
  cb = seqio.get_mixture_or_task("superglue_cb")
  (fn,) = cb.metric_fns
  got = fn([0, 1, 2, 2], [0, 1, 2, -1])
  # accuracy 3/4; F1 per class 1, 1, 2/3.
  assert got["accuracy"] == pytest.approx(75.0)
  assert got["macro_f1"] == pytest.approx(100 * (1 + 1 + 2 / 3) / 3)
  (mrc,) = seqio.get_mixture_or_task("superglue_multirc").metric_fns
  got = mrc([{"value": 1, "group": (0, 1)}, {"value": 0, "group": (0, 1)}],
            [{"value": 1}, {"value": 1}])
  assert got["em"] == 0.0 and got["f1a"] == pytest.approx(100 * 2 / 3)
  (rec,) = seqio.get_mixture_or_task("superglue_record").metric_fns
  gold = {"answers": ["A b"], "group": 1}
  got = rec([gold, gold], [{"text": "a b"}, {"text": "zzz"}])
  assert got == {"em": 100.0, "f1": 100.0}  # the duplicate query is skipped
