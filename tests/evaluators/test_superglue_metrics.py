"""SuperGLUE metrics against hand-computed values (no library reference)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from prompt_tuning_jax.evaluators import superglue_metrics


def test_accuracy_counts_invalid_as_wrong():
  # 3 of 5 correct; the -1 (text that is no label) is wrong.
  got = superglue_metrics.accuracy([0, 1, 1, 0, 1], [0, 1, -1, 1, 1])
  assert got == pytest.approx(60.0)


@pytest.mark.parametrize("fn", [superglue_metrics.accuracy, superglue_metrics.binary_f1,
                                superglue_metrics.matthews_corrcoef])
def test_empty_and_mismatched_inputs_raise(fn):
  with pytest.raises(ValueError, match="no examples"):
    fn([], [])
  with pytest.raises(ValueError, match="equal"):
    fn([0, 1], [0])


def test_binary_f1_hand_value():
  # targets 1 1 1 0 0, preds 1 0 1 1 0: TP=2 FP=1 FN=1 -> F1 = 4/6.
  assert superglue_metrics.binary_f1([1, 1, 1, 0, 0], [1, 0, 1, 1, 0]) == pytest.approx(
      100 * 4 / 6)


def test_binary_f1_invalid_prediction_is_wrong():
  # The -1 on a positive target is a FN; on a negative target it is a FP.
  # targets 1 0 1, preds -1 -1 1: TP=1 FP=1 FN=1 -> 2/4.
  assert superglue_metrics.binary_f1([1, 0, 1], [-1, -1, 1]) == pytest.approx(50.0)


def test_binary_f1_degenerate_cases_are_zero():
  # No positives anywhere: 0/0 is defined as 0.0 (sklearn zero_division=0).
  assert superglue_metrics.binary_f1([0, 0, 0], [0, 0, 0]) == 0.0
  # All predictions the negative class with positive targets: TP=0.
  assert superglue_metrics.binary_f1([1, 1, 0], [0, 0, 0]) == 0.0
  # All predictions positive: TP=2 FP=1 FN=0 -> 4/5.
  assert superglue_metrics.binary_f1([1, 1, 0], [1, 1, 1]) == pytest.approx(80.0)


def test_binary_f1_rejects_non_binary_targets():
  with pytest.raises(ValueError, match="targets must be 0 or 1"):
    superglue_metrics.binary_f1([0, 2], [0, 1])


def test_macro_f1_three_classes_hand_value():
  t = [0, 0, 1, 1, 2, 2]
  p = [0, 1, 1, 1, 2, 0]
  # class 0: TP1 FP1 FN1 -> 0.5; class 1: TP2 FP1 FN0 -> 0.8;
  # class 2: TP1 FP0 FN1 -> 2/3.  Mean = (0.5 + 0.8 + 2/3) / 3.
  assert superglue_metrics.macro_f1(t, p, num_classes=3) == pytest.approx(
      100 * (0.5 + 0.8 + 2 / 3) / 3)


def test_macro_f1_absent_class_and_invalid_predictions():
  # Class 2 never appears nor is predicted: its F1 is 0 and it still counts.
  # Invalid -1 is a FN for class 1 only. class0: TP1 -> 1.0; class1: TP1 FN1
  # -> 2/3; class2: 0.
  assert superglue_metrics.macro_f1([0, 1, 1], [0, 1, -1], num_classes=3) == (
      pytest.approx(100 * (1 + 2 / 3 + 0) / 3))


def test_matthews_hand_value_and_degenerate():
  # TP=2 TN=1 FP=1 FN=1: (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6.
  t = [1, 1, 1, 0, 0]
  p = [1, 1, 0, 1, 0]
  assert superglue_metrics.matthews_corrcoef(t, p) == pytest.approx(100 / 6)
  # Perfect and inverted.
  mcc = superglue_metrics.matthews_corrcoef
  assert mcc([0, 1, 0, 1], [0, 1, 0, 1]) == pytest.approx(100)
  assert mcc([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-100)
  # All predictions one class: zero denominator -> 0.0.
  assert superglue_metrics.matthews_corrcoef([0, 1, 1], [1, 1, 1]) == 0.0


def test_multirc_groups_by_question():
  # Question (0,0): answers all right. Question (0,1): one wrong.
  # Question (1,0): all right. Same question id under another paragraph is a
  # different group.
  groups = [(0, 0), (0, 0), (0, 1), (0, 1), (1, 0)]
  t = [1, 0, 1, 0, 1]
  p = [1, 0, 1, 1, 1]
  got = superglue_metrics.multirc_scores(t, p, groups)
  # F1 over all answers: TP=3 FP=1 FN=0 -> 6/7.
  assert got["f1a"] == pytest.approx(100 * 6 / 7)
  assert got["em"] == pytest.approx(100 * 2 / 3)
  with pytest.raises(ValueError, match="one group per answer"):
    superglue_metrics.multirc_scores(t, p, groups[:2])


def test_squad_normalization():
  assert superglue_metrics.normalize_squad("The  Chelsea F.C.!") == "chelsea fc"
  assert superglue_metrics.normalize_squad("An apple, a day") == "apple day"


def test_record_max_over_answers_and_dedup():
  answers = [["Shane Reeves", "Reeves"], ["Shane Reeves", "Reeves"],
             ["Peter Roberts"], ["the Blues"]]
  preds = ["reeves", "ignored duplicate", "Roberts", "Blues!"]
  groups = [(1, 10), (1, 10), (1, 11), (2, 12)]
  got = superglue_metrics.record_scores(answers, preds, groups)
  # Query 10: EM 1 (matches "Reeves"), F1 1. Query 11: EM 0, token F1 of
  # "roberts" vs "peter roberts" = 2*(1*0.5)/(1.5) = 2/3. Query 12: after
  # normalization both are "blues": EM 1, F1 1.
  assert got["em"] == pytest.approx(100 * 2 / 3)
  assert got["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1) / 3)
  with pytest.raises(ValueError, match="no gold answers"):
    superglue_metrics.record_scores([[]], ["x"])


def test_superglue_average_matches_t5_11b_leaderboard():
  # T5-11B SuperGLUE test scores (Raffel et al. 2020, Table 14), overall 89.3.
  scores = {
      "boolq": {"accuracy": 91.2}, "cb": {"macro_f1": 93.9, "accuracy": 96.8},
      "copa": {"accuracy": 94.8}, "multirc": {"f1a": 88.1, "em": 63.3},
      "record": {"f1": 94.1, "em": 93.4}, "rte": {"accuracy": 92.5},
      "wic": {"accuracy": 76.9}, "wsc": {"accuracy": 93.8},
      "axb": {"matthews_corrcoef": 67.9},  # ignored: not in the average
  }
  # By hand: 91.2 + 95.35 + 94.8 + 75.7 + 93.75 + 92.5 + 76.9 + 93.8 = 714.0,
  # / 8 = 89.25; the published 89.3 comes from the unrounded task scores.
  got = superglue_metrics.superglue_average(scores)
  assert got == pytest.approx(89.25)
  assert abs(got - 89.3) < 0.051
  assert superglue_metrics.task_score("cb", scores["cb"]) == pytest.approx(95.35)


def test_superglue_average_missing_tasks():
  with pytest.raises(ValueError, match="missing"):
    superglue_metrics.superglue_average({"rte": {"accuracy": 80.0}})
  partial = {"rte": {"accuracy": 80.0},
             "cb": {"macro_f1": 50., "accuracy": 70.}}
  assert superglue_metrics.superglue_average(partial, require_all=False) == (
      pytest.approx((80 + 60) / 2))
  with pytest.raises(ValueError, match="metrics"):
    superglue_metrics.task_score("multirc", {"f1a": 1.0})


def test_write_jsonl_appends_lines(tmp_path):
  path = tmp_path / "sub" / "superglue_metrics.jsonl"
  superglue_metrics.write_jsonl(path, {"step": np.int64(3), "acc": np.float32(0.5)})
  superglue_metrics.write_jsonl(path, {"step": 4, "loss": float("nan"),
                             "arr": np.arange(2)})
  lines = path.read_text().splitlines()
  assert len(lines) == 2
  assert json.loads(lines[0]) == {"acc": 0.5, "step": 3}
  second = json.loads(lines[1])
  assert second["step"] == 4 and math.isnan(second["loss"])
  assert second["arr"] == [0, 1]
  with pytest.raises(TypeError, match="cannot serialize"):
    superglue_metrics.write_jsonl(path, {"bad": object()})
