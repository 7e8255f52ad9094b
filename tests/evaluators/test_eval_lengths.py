"""Evaluation as T5X's infer_eval: untruncated inputs, decoding to the split's longest target,
batches sorted by length and cut to a power-of-two bucket (memory bounded per batch)."""
import dataclasses
import json

import numpy as np
import pytest

from prompt_tuning_jax.text import data
from prompt_tuning_jax.evaluators import predictor, task_evaluator
from prompt_tuning_jax.tasks import SAMPLES_DIR, get_vocabulary

MULTIRC = "superglue_multirc_sample_taskless"
RECORD = "superglue_record_sample_taskless"
pytestmark = pytest.mark.timeout(300)


def _dev_rows(folder):
  with open(SAMPLES_DIR / folder / "dev32.jsonl") as f:
    return [json.loads(line) for line in f]


def test_inputs_are_untruncated_by_default_and_cut_on_request():
  cfg = data.DataConfig(mixture_or_task_name=MULTIRC, task_feature_lengths={"inputs": 64, "targets": 8})
  td = task_evaluator.load_task_data(cfg)
  lengths = predictor.token_lengths(td.inputs)
  vocab = get_vocabulary()
  for i in (0, int(np.argmax(lengths))):  # each row is its whole tokenized text + EOS
    want = list(vocab.encode(task_evaluator.as_text(td.examples[i]["inputs_pretokenized"]))) + [1]
    assert list(td.inputs[i, : lengths[i]]) == want
  assert lengths.max() > 64  # MultiRC paragraphs are long: nothing was cut to the training length
  cut = task_evaluator.load_task_data(dataclasses.replace(cfg, eval_inputs_length=64))
  assert cut.inputs.shape[1] == 64 and all(row[row > 0][-1] == 1 for row in cut.inputs)  # EOS kept


def test_decode_length_is_the_longest_target_of_the_split():
  cfg = data.DataConfig(mixture_or_task_name=RECORD, task_feature_lengths={"inputs": 512, "targets": 8})
  td = task_evaluator.load_task_data(cfg)
  vocab = get_vocabulary()
  answers = [e["text"] for row in _dev_rows("ReCoRD") for q in row["qas"] for e in q["answers"]]
  assert td.decode_length == max(len(vocab.encode(a)) for a in answers) + 1  # + EOS, from the raw JSON
  capped = task_evaluator.load_task_data(dataclasses.replace(cfg, eval_targets_length=5))
  assert capped.decode_length == 5


def test_length_sorted_buckets_give_the_same_outputs_in_order():
  rng = np.random.RandomState(0)
  lengths = rng.randint(1, 300, size=37)
  tokens = np.zeros((37, 300), np.int32)
  for i, n in enumerate(lengths):
    tokens[i, :n] = rng.randint(2, 100, n)
  extra = np.arange(37)
  widths = []

  def fn(x, e):
    widths.append(x.shape[1])
    return x.sum(1), e * 2

  sums, doubled = predictor.run_by_length(fn, [tokens, extra], 8)
  np.testing.assert_array_equal(sums, tokens.sum(1))
  np.testing.assert_array_equal(doubled, extra * 2)
  np.testing.assert_array_equal(predictor.token_lengths(tokens), lengths)
  assert widths[0] == 300 and all(w in (16, 32, 64, 128, 256, 300) for w in widths)
  assert widths == sorted(widths, reverse=True) and widths[-1] < 300  # short rows ride in short batches
