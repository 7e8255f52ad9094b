"""Prompt ensembles and mixed-task batches: one batch over a prompt bank must give,
example by example, what each prompt gives alone with a plain [P, d] prompt."""
import collections
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning_jax.text import data
from prompt_tuning_jax.model.config import T5Config
from prompt_tuning_jax.evaluators import ensemble, predictor
from prompt_tuning_jax.evaluators.config import EvalConfig
from prompt_tuning_jax.prompt import wrapper

CFG = T5Config(vocab_size=64, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32,
               num_encoder_layers=1, num_decoder_layers=1)
N, E, P = 3, 5, 4


@pytest.fixture(scope="module")
def setup():
  single = wrapper.make_model(CFG, wrapper.PromptConfig(length=P))
  tok = jnp.ones((1, 2), jnp.int32)
  frozen = nn.unbox(jax.jit(single.init)(jax.random.PRNGKey(0), tok, tok, tok)["params"])
  frozen["encoder"].pop("prompt")
  kernel = frozen["decoder"]["logits_dense"]["kernel"]
  frozen["decoder"]["logits_dense"]["kernel"] = kernel.at[:, 1].mul(2.0)  # varied lengths
  bank = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (N, P, CFG.emb_dim)))
  rng = np.random.RandomState(0)
  inputs = rng.randint(2, CFG.vocab_size, size=(E, 8)).astype(np.int32)
  inputs[:, 6] = 1
  inputs[:, 7] = 0
  return single, frozen, bank, inputs


def alone(setup, fn):
  """fn(predictor, params, inputs) for each prompt on its own -> list of N results."""
  single, frozen, bank, inputs = setup
  pred = predictor.Predictor(single, max_decode_length=5, num_beams=2, alpha=0.6)
  return [fn(pred, wrapper.set_prompt(frozen, bank[n]), inputs) for n in range(N)]


def test_stack_and_tile():
  bank = ensemble.stack_prompts([np.zeros((2, 3)), np.ones((2, 3))])
  assert bank.shape == (2, 2, 3) and bank.dtype == np.float32
  with pytest.raises(ValueError, match="prompt 1"):
    ensemble.stack_prompts([np.zeros((2, 3)), np.zeros((4, 3))])
  tokens, ids = ensemble.tile_examples(np.array([[7, 1], [8, 1]]), 3)
  np.testing.assert_array_equal(ids, [0, 1, 2, 0, 1, 2])
  np.testing.assert_array_equal(tokens[:, 0], [7, 7, 7, 8, 8, 8])


def test_majority_vote_and_tie_breaks():
  preds = [["a", "b", "a"], ["a", "b", "c"], ["x", "y", "y", "x"], ["p", "q"]]
  scores = [[-1, -0.1, -1], [-3, -1, -2], [-1, -2, -2, -1], [-1, -1]]
  winners, first = ensemble.majority_vote(preds, [np.array(s) for s in scores])
  # 2 votes win; all-different -> best single score; 2-2 -> higher summed score (x: -2 > y: -4);
  # exact tie of counts and sums -> lowest prompt index.
  assert winners == ["a", "b", "x", "p"]
  np.testing.assert_array_equal(first, [0, 1, 0, 0])


def test_average_scores_differs_from_vote():
  # Two prompts mildly prefer label 0, one strongly prefers label 1.
  cand = np.log(np.array([[[0.6, 0.4], [0.6, 0.4], [0.01, 0.99]]]))
  best, mean = ensemble.average_scores(cand)
  assert best.tolist() == [1]
  np.testing.assert_allclose(mean[0], cand[0].mean(0))
  assert ensemble.majority_vote([[0, 0, 1]], cand[0].max(1)[None])[0] == [0]


@pytest.mark.slow
def test_ensemble_batch_equals_each_prompt_alone(setup):
  """Examples x prompts in one greedy batch == each prompt alone (tokens; scores to 1e-5).
  Rank scores through a bank are checked the same way in test_evaluation (mixed tasks)."""
  single, frozen, bank, inputs = setup
  model = ensemble.bank_model(CFG, bank)
  params = ensemble.bank_params(frozen, bank)
  pred = predictor.Predictor(model, max_decode_length=5, num_beams=2, alpha=0.6)
  tiled, ids = ensemble.tile_examples(inputs, N)
  tokens, scores = pred.generate(params, tiled, ids)
  ref = alone(setup, lambda p, prm, x: p.generate(prm, x))
  for n in range(N):
    rows = np.arange(E) * N + n
    np.testing.assert_array_equal(tokens[rows], ref[n][0])
    np.testing.assert_allclose(scores[rows], ref[n][1], atol=1e-5)
  assert len({tuple(t) for t in tokens[:, 0]}) > 1  # the prompts do change the outputs


def test_mixed_task_batch_equals_each_prompt_alone(setup):
  """Each example with its own prompt id (a task index), beam search, one batch."""
  single, frozen, bank, inputs = setup
  model = ensemble.bank_model(CFG, bank)
  params = ensemble.bank_params(frozen, bank)
  ids = np.array([2, 0, 1, 0, 2], np.int32)
  pred = predictor.Predictor(model, max_decode_length=5, num_beams=2, alpha=0.6)
  tokens, scores = pred.generate(params, inputs, ids, mode="beam")
  ref = alone(setup, lambda p, prm, x: p.generate(prm, x, mode="beam"))
  for e, n in enumerate(ids):
    np.testing.assert_array_equal(tokens[e], ref[n][0][e])
    np.testing.assert_allclose(scores[e], ref[n][1][e], atol=1e-5)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ensemble_evaluator_metrics_match_written_predictions(tmp_path):
  cfg = T5Config(emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32, num_encoder_layers=1, num_decoder_layers=1)
  task = "superglue_rte_sample_taskless"
  dc = data.DataConfig(mixture_or_task_name=task, task_feature_lengths={"inputs": 48, "targets": 6},
                       batch_size=16)
  bank = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (3, P, cfg.emb_dim)))
  model = ensemble.bank_model(cfg, bank)
  tok = jnp.ones((1, 2), jnp.int32)
  init = jax.jit(lambda r: model.init(r, tok, tok, tok, prompt_ids=jnp.zeros((1,), jnp.int32)))
  params = ensemble.bank_params(nn.unbox(init(jax.random.PRNGKey(0))["params"]), bank)
  scores = ensemble.EnsembleEvaluator(dc, model, EvalConfig(mode="rank", output_dir=str(tmp_path)), 3)(params)
  records = [json.loads(line) for line in open(tmp_path / f"{task}.ensemble.predictions.jsonl")]
  acc = lambda outs: 100.0 * np.mean([o == r["targets"] for o, r in zip(outs, records)])
  for k in range(3):
    assert scores[f"member_{k}/accuracy"] == pytest.approx(acc([r["members"][k]["output"] for r in records]))
  votes = []
  for r in records:  # independent vote: most common, ties to the best summed score
    count = collections.Counter(m["output"] for m in r["members"])
    top = max(count.values())
    tied = [o for o in count if count[o] == top]
    votes.append(max(tied, key=lambda o: sum(m["score"] for m in r["members"] if m["output"] == o)))
  assert [r["vote"] for r in records] == votes
  assert scores["vote/accuracy"] == pytest.approx(acc(votes))
  assert scores["average/accuracy"] == pytest.approx(acc([r["average"] for r in records]))
  members = [scores[f"member_{k}/accuracy"] for k in range(3)]
  assert scores["member_mean/accuracy"] == pytest.approx(np.mean(members))
