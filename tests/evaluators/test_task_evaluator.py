"""Evaluator modes on the bundled SuperGLUE samples with a tiny random prompted T5.

Reference values are recomputed from the written predictions file (labels, argmax of
the candidate scores, exact-match accuracy), never taken from the code under test.
"""
import dataclasses
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning_jax.text import data
from prompt_tuning_jax.model.config import T5Config
from prompt_tuning_jax.evaluators import task_evaluator
from prompt_tuning_jax.evaluators.config import EvalConfig
from prompt_tuning_jax.prompt import wrapper

CFG = T5Config(emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32, num_encoder_layers=1, num_decoder_layers=1)
RTE = "superglue_rte_sample_taskless"
CB = "superglue_cb_sample_taskless"
DATA = data.DataConfig(mixture_or_task_name=RTE, task_feature_lengths={"inputs": 48, "targets": 6},
                       batch_size=16)
pytestmark = pytest.mark.timeout(300)


def _init(num_prompts):
  model = wrapper.make_model(CFG, wrapper.PromptConfig(length=4, num_prompts=num_prompts))
  tok = jnp.ones((1, 2), jnp.int32)
  init = jax.jit(lambda r: model.init(r, tok, tok, tok, prompt_ids=jnp.zeros((1,), jnp.int32)))
  return model, nn.unbox(init(jax.random.PRNGKey(0))["params"])


@pytest.fixture(scope="module")
def single():
  model, params = _init(1)
  prompt = jax.random.normal(jax.random.PRNGKey(3), (4, CFG.emb_dim))
  return model, wrapper.set_prompt(params, prompt)


def _read(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_candidate_labels_sources_and_fallbacks():
  def labels(name):
    td = task_evaluator.load_task_data(DATA, task_name=name)
    return td.labels, td.rank_note
  assert labels(RTE)[0] == ("entailment", "not_entailment")
  multirc, note = labels("superglue_multirc_sample_taskless")  # postprocessor has no label_names
  assert multirc == ("False", "True") and "LABEL_NAMES" in note
  wsc, note = labels("superglue_wsc_sample_taskless")  # targets are referents, not False/True
  assert wsc is None and "not all labels" in note
  assert labels("superglue_record_sample_taskless")[0] is None


@pytest.mark.slow
def test_rank_mode_writes_consistent_outputs(single, tmp_path):
  model, params = single
  ev = task_evaluator.Evaluator(DATA, model, EvalConfig(mode="rank", output_dir=str(tmp_path)))
  scores = ev(params, step=7)
  records = _read(tmp_path / f"{RTE}.step_7.predictions.jsonl")
  assert len(records) == 32 and scores["invalid_rate"] == 0.0
  for rec in records:
    cand = rec["candidate_scores"]
    assert rec["output"] == max(cand, key=cand.get)
    assert rec["score"] == pytest.approx(max(cand.values()))
  accuracy = 100.0 * np.mean([r["output"] == r["targets"] for r in records])
  assert scores["accuracy"] == pytest.approx(accuracy)
  summary = json.load(open(tmp_path / f"{RTE}.step_7.metrics.json"))
  assert summary["mode"] == "rank" and summary["metrics"]["accuracy"] == pytest.approx(accuracy)
  assert os.listdir(tmp_path / "tensorboard")  # event file written
  logged = json.loads(open(tmp_path / "metrics.jsonl").readline())
  assert logged[f"eval/{RTE}/accuracy"] == pytest.approx(accuracy) and logged["step"] == 7


def test_greedy_mode_invalid_rate(single, tmp_path):
  model, params = single
  ev = task_evaluator.Evaluator(DATA, model, EvalConfig(mode="greedy", output_dir=str(tmp_path)))
  scores = ev(params)
  records = _read(tmp_path / f"{RTE}.predictions.jsonl")
  invalid = np.mean([r["output"].strip() not in ("entailment", "not_entailment") for r in records])
  assert scores["invalid_rate"] == pytest.approx(invalid)
  correct = [r["output"].strip() == r["targets"] for r in records]
  assert scores["accuracy"] == pytest.approx(100.0 * np.mean(correct))


def test_rank_falls_back_to_greedy_without_labels(single, tmp_path):
  model, _ = single
  cfg = dataclasses.replace(DATA, mixture_or_task_name="superglue_wsc_sample_taskless")
  ev = task_evaluator.Evaluator(cfg, model, EvalConfig(mode="rank"))
  assert ev.mode == "greedy"
  with pytest.raises(ValueError, match="mode"):
    task_evaluator.Evaluator(DATA, model, EvalConfig(mode="sample"))


@pytest.mark.slow
def test_mixed_task_batches_match_each_prompt_alone(single, tmp_path):
  """RTE with prompt 1 and CB with prompt 0 of a bank, interleaved in shared batches,
  give the same candidate scores as each task run alone with a plain [P, d] prompt."""
  model, params = single
  bank = jax.random.normal(jax.random.PRNGKey(5), (2, 4, CFG.emb_dim))
  bank_model, bank_params = _init(2)
  bank_params = wrapper.set_prompt(bank_params, bank)
  multi = task_evaluator.MultiTaskEvaluator(
      DATA, bank_model, EvalConfig(mode="rank", output_dir=str(tmp_path / "mixed")), [RTE, CB], prompt_ids=[1, 0])
  mixed = multi.evaluate(bank_params)
  assert set(mixed) == {RTE, CB}
  for name, k in ((RTE, 1), (CB, 0)):
    cfg = dataclasses.replace(DATA, mixture_or_task_name=name)
    alone = task_evaluator.Evaluator(cfg, model, EvalConfig(mode="rank", output_dir=str(tmp_path / name)))(
        wrapper.set_prompt(params, bank[k]))
    assert alone == pytest.approx(mixed[name])
    a = _read(tmp_path / name / f"{name}.predictions.jsonl")
    m = _read(tmp_path / "mixed" / f"{name}.predictions.jsonl")
    for ra, rm in zip(a, m):
      assert ra["output"] == rm["output"]
      for label in ra["candidate_scores"]:
        assert ra["candidate_scores"][label] == pytest.approx(rm["candidate_scores"][label], abs=1e-5)
