"""GLUE paraphrase tasks for the QQP <-> MRPC transfer: T5's text format without the
task name, label words, the translated-label eval tasks, metrics, the eval hook."""
import dataclasses

import seqio
import tensorflow as tf

from prompt_tuning_jax.text import data
from prompt_tuning_jax.evaluators import task_evaluator
from prompt_tuning_jax.tasks import glue


def _rows(**columns):
  return tf.data.Dataset.from_tensor_slices(columns)


def test_text_format_is_t5_glue_without_the_task_name():
  qqp = _rows(question1=["How do I learn?", "Why?"], question2=["How to learn?", "What?"],
              label=[1, -1], idx=[7, 8])
  out = list(glue.paraphrase_text(qqp, task="qqp", label_task="qqp").as_numpy_iterator())
  # T5: 'qqp question1: How do I learn? question2: How to learn?' -> 'duplicate'
  assert out[0]["inputs"] == b"question1: How do I learn? question2: How to learn?"
  assert out[0]["targets"] == b"duplicate" and out[0]["idx"] == 7
  assert out[1]["targets"] == b"<unk>"  # unlabeled (test) row
  mrpc = _rows(sentence1=["He left."], sentence2=["He went."], label=[0], idx=[3])
  out = list(glue.paraphrase_text(mrpc, task="mrpc", label_task="mrpc").as_numpy_iterator())
  assert (out[0]["inputs"], out[0]["targets"]) == (b"sentence1: He left. sentence2: He went.", b"not_equivalent")


def test_transfer_tasks_keep_the_text_and_translate_the_labels():
  mrpc = _rows(sentence1=["A.", "B."], sentence2=["C.", "D."], label=[1, 0], idx=[0, 1])
  out = list(glue.paraphrase_text(mrpc, task="mrpc", label_task="qqp").as_numpy_iterator())
  assert [o["targets"] for o in out] == [b"duplicate", b"not_duplicate"]
  assert out[0]["inputs"] == b"sentence1: A. sentence2: C."
  task = seqio.get_mixture_or_task("glue_mrpc_from_qqp_taskless")
  assert task.source.tfds_dataset.name == "glue/mrpc:2.0.0" and list(task.source.splits) == ["validation"]
  # A QQP-trained model answers 'duplicate': scored as MRPC's class 1 (equivalent).
  assert task.postprocess_fn("duplicate") == 1 and task.postprocess_fn("equivalent") == -1
  own = seqio.get_mixture_or_task("glue_mrpc_taskless")
  assert own.postprocess_fn("equivalent") == 1 and own.source.tfds_dataset.name == "glue/mrpc:2.0.0"
  assert seqio.get_mixture_or_task("glue_qqp_from_mrpc_taskless").postprocess_fn("not_equivalent") == 0


def test_metrics_are_accuracy_and_f1_of_class_one():
  # targets 1,1,0,0; predictions 1,0,1,-1. An invalid output counts as the wrong class
  # (T5's f1_score_with_invalid), here a false positive: TP 1, FN 1, FP 2
  # -> accuracy 1/4 = 25, F1 = 2*1 / (2*1 + 2 + 1) = 40.
  assert glue.paraphrase_metric([1, 1, 0, 0], [1, 0, 1, -1]) == {"accuracy": 25.0, "f1": 40.0}


def test_transfer_evaluator_adds_the_target_under_a_prefix(monkeypatch):
  seen = []

  class FakeEvaluator:
    def __init__(self, data_config, model, eval_config):
      seen.append((data_config.mixture_or_task_name, eval_config.mode))
      self.name = data_config.mixture_or_task_name

    def __call__(self, params, step):
      return {"accuracy": 10.0 if self.name == "glue_qqp_taskless" else 20.0, "f1": float(step)}

  monkeypatch.setattr(task_evaluator, "make_train_evaluator",
                      lambda cfg, model, eval_config: FakeEvaluator(cfg.data, model, eval_config))
  monkeypatch.setattr(task_evaluator, "Evaluator", FakeEvaluator)
  cfg = type("Cfg", (), {"data": data.DataConfig("glue_qqp_taskless", "prompt_tuning_jax.tasks.glue", {"inputs": 8, "targets": 4})})
  evaluate = glue.transfer_evaluator(cfg, None, target_task="glue_mrpc_from_qqp_taskless")
  assert evaluate({}, 5) == {"accuracy": 10.0, "f1": 5.0, "target/accuracy": 20.0, "target/f1": 5.0}
  assert seen == [("glue_qqp_taskless", "greedy"), ("glue_mrpc_from_qqp_taskless", "greedy")]
  assert dataclasses.replace(cfg.data).mixture_or_task_name == "glue_qqp_taskless"  # not mutated
