"""Our SuperGLUE postprocessing against T5's own functions (t5==0.9.4), case by case."""
import numpy as np

from prompt_tuning_jax.evaluators import task_evaluator
from prompt_tuning_jax.tasks import superglue
from tests import t5_reference

T5 = t5_reference.postprocessors()

WSC_OUTPUTS = ["", " ", "the", "his", "The", "the the", "a few", "Demonstrators", "the demonstrators",
               "city councilmen", "demonstrators'", "Bob", "Bob's hat", "fuzzy bunny", "bunny", "his dog",
               "  the  bunny ", "x"]
CANDIDATES = [b"the demonstrators", b"Bob's hat", b"the bunny", b"city councilmen", b"his dog"]


def test_wsc_matches_t5_wsc_simple_including_empty_and_determiner_only():
  for cand in CANDIDATES:
    ex = {"targets_pretokenized": cand, "label": 1}
    for out in WSC_OUTPUTS:
      assert superglue.wsc_postprocess(out, ex) == T5.wsc_simple(out, ex), (out, cand)
  ex = {"targets_pretokenized": b"the bunny", "label": 0}
  assert superglue.wsc_postprocess("his", ex) == -1
  assert task_evaluator.is_invalid(superglue.wsc_postprocess("the", ex))


def test_wsc_empty_outputs_are_wrong_and_counted_invalid():
  """Labels 0 and 1 with outputs '', 'the', 'bunny': T5 scores the first two -1 (wrong)."""
  exs = [{"targets_pretokenized": b"the bunny", "label": lab} for lab in (0, 0, 1)]
  preds = [superglue.wsc_postprocess(o, ex) for o, ex in zip(["", "the", "bunny"], exs)]
  targets = [superglue.wsc_postprocess(None, ex, is_target=True) for ex in exs]
  assert preds == [T5.wsc_simple(o, ex) for o, ex in zip(["", "the", "bunny"], exs)] == [-1, -1, 1]
  assert abs(superglue.accuracy_metric(targets, preds)["accuracy"] - 100.0 / 3) < 1e-9
  assert np.mean([task_evaluator.is_invalid(p) for p in preds]) == 2 / 3


def test_label_matching_is_exact_as_t5():
  for task in ("rte", "cb", "boolq", "copa", "wic"):
    names = list(superglue.LABEL_NAMES[task])
    for out in names + [n + " " for n in names] + [" " + n for n in names] + [n.lower() for n in names] + [""]:
      assert superglue.text_to_label(out, names) == T5.string_label_to_class_id(out, label_classes=names), out


def test_multirc_value_matches_t5():
  for out in ("True", "False", "True ", "true", ""):
    ex = {"idx/paragraph": 0, "idx/question": 3}
    assert superglue.multirc_postprocess(out, ex)["value"] == T5.multirc(out, ex)["value"]
