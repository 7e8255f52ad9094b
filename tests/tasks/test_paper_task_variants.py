"""Task variants the paper's baselines and ablations need: Figure 3(c)'s sentinel targets, the
multi-task baseline's mixture (T5's SuperGLUE mixture with DPR, DPR text against T5's own
preprocessor), checked on the bundled samples and in-memory rows (no network)."""
import pytest
import seqio
import tensorflow as tf

import prompt_tuning_jax.tasks  # noqa: F401  (registers the tasks)
from prompt_tuning_jax.tasks import superglue
from tests import t5_reference

pytestmark = pytest.mark.timeout(300)


def _rows(name, split="validation", lengths=None):
  ds = seqio.get_mixture_or_task(name).get_dataset(lengths, split=split, shuffle=False, use_cached=False)
  return list(ds.as_numpy_iterator())


def test_sentinel_task_prepends_extra_id_0_to_targets_and_strips_it_when_scoring():
  plain, marked = _rows("superglue_rte_sample_taskless"), _rows("superglue_rte_sample_taskless_sentinel")
  assert len(plain) == len(marked) > 0
  for p, m in zip(plain, marked):
    assert m["targets"].tolist() == [32099] + p["targets"].tolist()  # <extra_id_0>, then the label, EOS
    assert m["inputs"].tolist() == p["inputs"].tolist()  # inputs untouched (the paper: "added to targets")
  task = seqio.get_mixture_or_task("superglue_rte_sample_taskless_sentinel")
  ex = marked[0]
  assert task.postprocess_fn("<extra_id_0> not_entailment", example=ex, is_target=False) == 1
  assert task.postprocess_fn("entailment", example=ex, is_target=False) == 0  # no sentinel: scored as is
  train = _rows("superglue_wsc_sample_taskless_sentinel", split="train", lengths={"inputs": 512, "targets": 8})
  assert all(r["targets"][0] == 32099 and r["targets"][-1] == 1 for r in train)


def test_dpr_text_is_t5s_definite_pronoun_resolution_simple():
  rows = [{"sentence": "Bob asked Tom if he can lend some money.", "pronoun": "he", "candidates": ["Bob", "Tom"],
           "label": 1},
          {"sentence": "The cat chased the mouse because it was hungry, and it ran.", "pronoun": "it",
           "candidates": ["The cat", "the mouse"], "label": 0},
          {"sentence": "Anna thanked Mary, because she had helped.", "pronoun": "she",
           "candidates": ["Anna", "Mary"], "label": 1}]

  def ds():
    return tf.data.Dataset.from_generator(lambda: iter(rows), output_signature={
        "sentence": tf.TensorSpec([], tf.string), "pronoun": tf.TensorSpec([], tf.string),
        "candidates": tf.TensorSpec([2], tf.string), "label": tf.TensorSpec([], tf.int64)})
  ours = list(superglue.dpr_text(ds()).as_numpy_iterator())
  theirs = list(t5_reference.preprocessors().definite_pronoun_resolution_simple(ds()).as_numpy_iterator())
  assert [(o["inputs"], o["targets"]) for o in ours] == [(t["inputs"], t["targets"]) for t in theirs]
  assert ours[0]["inputs"] == b"wsc: Bob asked Tom if *he* can lend some money." and ours[0]["targets"] == b"Tom"


def test_multitask_mixture_is_t5s_superglue_mixture_with_dpr():
  mixture = seqio.get_mixture_or_task(superglue.MULTITASK_MIXTURE)
  rates = {t.name: mixture.get_rate(t) for t in mixture.tasks}
  # T5's super_glue_v102_proportional: every task WITH its task name, at its training-example count
  assert rates == {"dpr_simple": 1322.0, "superglue_boolq": 9427.0, "superglue_cb": 250.0, "superglue_copa": 400.0,
                   "superglue_multirc": 27243.0, "superglue_record": 138854.0, "superglue_rte": 2490.0,
                   "superglue_wic": 5428.0, "superglue_wsc": 259.0}
  assert _rows("superglue_rte_sample")[0]["inputs_pretokenized"].startswith(b"rte ")  # the task-name prefix
