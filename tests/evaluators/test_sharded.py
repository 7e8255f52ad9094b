"""Evaluation on a mesh of 8 simulated CPU devices must give what one device gives:
rank classification, greedy and beam decoding, pair scoring, with weights read from a
real T5X checkpoint straight into their shards and each batch split over 'data'."""
import dataclasses

import jax
import numpy as np
import pytest

from prompt_tuning_jax.parallel import sharding
from prompt_tuning_jax.checkpoints import backbone
from prompt_tuning_jax.model.config import SIZES
from prompt_tuning_jax.evaluators import ensemble, predictor, scorer, sharded
from prompt_tuning_jax.text.vocab import load_vocabulary

CKPT = "tests/testdata/t5x_checkpoints/test_t5_tiny.checkpoint_0"
CFG = dataclasses.replace(SIZES["tiny_inline"], dtype="float32")  # the fixture's shape
ROWS, BATCH = 13, 8  # 13 rows in batches of 8: the last batch is padded


def _placement(num_partitions: int) -> sharded.Placement:
  partition = sharding.PartitionConfig(num_partitions=num_partitions)
  return sharded.Placement(sharding.make_mesh(partition), partition.rules)


@pytest.fixture(scope="module")
def setup():
  bank = np.random.RandomState(0).normal(size=(2, 3, CFG.emb_dim)).astype(np.float32)
  model = ensemble.bank_model(CFG, bank)
  rng = np.random.RandomState(1)
  tokens = rng.randint(2, 500, size=(ROWS, 10)).astype(np.int32)
  tokens[:, 7], tokens[:, 8:] = 1, 0
  ids = (np.arange(ROWS) % 2).astype(np.int32)
  single, _ = backbone.load_frozen(CKPT, CFG)
  return model, bank, tokens, ids, ensemble.bank_params(single, bank)


def _outputs(pred, params, tokens, ids):
  shared = np.array([[5, 1, 0], [9, 12, 1]], np.int32)
  per_example = np.stack([shared[::-1] if i % 3 else shared for i in range(ROWS)])
  return {
      "rank": predictor.run_batched(lambda x, p: pred.score_async(params, x, shared, p), [tokens, ids], BATCH),
      "rank_per_example": predictor.run_batched(lambda x, c, p: pred.score_async(params, x, c, p),
                                                [tokens, per_example, ids], BATCH),
      "greedy": predictor.run_batched(lambda x, p: pred.generate_async(params, x, p, mode="greedy"),
                                      [tokens, ids], BATCH),
      "beam": predictor.run_batched(lambda x, p: pred.generate_async(params, x, p, mode="beam"),
                                    [tokens, ids], BATCH),
  }


@pytest.mark.slow  # ~40 s on an idle 2-core box: 8 compilations
def test_sharded_predictions_equal_one_device(setup, num_partitions=2):
  model, bank, tokens, ids, single_params = setup
  where = _placement(num_partitions)
  frozen, _ = sharded.load_backbone(CKPT, CFG, where)
  wi = frozen["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]  # [embed, mlp]: mlp over 'model'
  assert wi.sharding.spec == jax.sharding.PartitionSpec(None, "model")
  assert wi.addressable_shards[0].data.shape == (CFG.emb_dim, CFG.mlp_dim // num_partitions)  # 4 x 2 mesh
  placed = where.place_rows(np.zeros((BATCH, 10), np.int32))
  assert {s.data.shape[0] for s in placed.addressable_shards} == {BATCH // where.data_size}

  kwargs = dict(max_decode_length=4, num_beams=2, alpha=0.6)
  want = _outputs(predictor.Predictor(model, **kwargs), single_params, tokens, ids)
  got = _outputs(predictor.Predictor(model, placement=where, **kwargs), ensemble.bank_params(frozen, bank),
                 tokens, ids)
  for rank in ("rank", "rank_per_example"):
    assert got[rank].shape == (ROWS, 2)
    np.testing.assert_array_equal(got[rank].argmax(1), want[rank].argmax(1))
    np.testing.assert_allclose(got[rank], want[rank], rtol=1e-5, atol=1e-5)
  for mode, beams in (("greedy", 1), ("beam", 2)):
    (got_tokens, got_scores), (want_tokens, want_scores) = got[mode], want[mode]
    assert got_tokens.shape == (ROWS, beams, 4)
    np.testing.assert_array_equal(got_tokens, want_tokens)
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5, atol=1e-5)
  assert want["rank"].std() > 0 and len({tuple(r) for r in want["greedy"][0][:, 0]}) > 1  # not degenerate


def test_sharded_scorer_equals_one_device():
  from prompt_tuning_jax.prompt import wrapper
  model = wrapper.make_model(CFG, None)
  where = _placement(2)
  pairs = [("question: is the sky blue", "True"), ("premise: a cat sat", "entailment"), ("x", "no"),
           ("a longer input with more words in it", "not_entailment"), ("y", "False")]
  vocab = load_vocabulary()
  single, _ = backbone.load_frozen(CKPT, CFG)
  frozen, _ = sharded.load_backbone(CKPT, CFG, where)
  want = scorer.Scorer(model, single, vocab, batch_size=3).score(pairs)
  got_scorer = scorer.Scorer(model, frozen, vocab, batch_size=3, placement=where)
  assert got_scorer.batch_size == 4  # rounded up to the 4 data replicas
  got = got_scorer.score(pairs)
  assert [g["target_ids"] for g in got] == [w["target_ids"] for w in want]
  np.testing.assert_allclose([g["score"] for g in got], [w["score"] for w in want], rtol=1e-5, atol=1e-5)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g["token_log_probs"], w["token_log_probs"], rtol=1e-5, atol=1e-5)
