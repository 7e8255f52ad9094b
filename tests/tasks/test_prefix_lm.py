"""The LM-adaptation task (Figure 3(d)): T5's prefix-LM preprocessing, token for token against
t5==0.9.4's own `prefix_lm`, and the text task's format on an in-memory corpus (no network)."""
import pytest
import seqio
import tensorflow as tf

import prompt_tuning_jax.tasks  # noqa: F401  (registers the tasks)
from prompt_tuning_jax.tasks import lm_adaptation as lm
from prompt_tuning_jax.text import vocab as vocab_lib
from tests import t5_reference

pytestmark = pytest.mark.timeout(300)


def _features():
  v = vocab_lib.load_vocabulary()
  return {"inputs": seqio.Feature(v, add_eos=True), "targets": seqio.Feature(v, add_eos=True)}


def _docs(lengths):
  docs = [list(range(2, 2 + n)) for n in lengths]
  return tf.data.Dataset.from_generator(lambda: ({"targets": d} for d in docs),
                                        output_signature={"targets": tf.TensorSpec([None], tf.int32)})


@pytest.mark.parametrize("seed,inputs_length,lengths", [
    (7, 8, (1, 2, 5, 17, 40, 3)), (0, 16, (0, 64, 15, 16, 33)), (123, 5, (9, 1, 100))])
def test_prefix_lm_equals_t5s_token_for_token(seed, inputs_length, lengths):
  t5_pre = t5_reference.preprocessors()
  lengths_map = {"inputs": inputs_length, "targets": inputs_length}
  with seqio.map_seed_manager(seed):
    ours = list(lm.prefix_lm(_docs(lengths), lengths_map, _features()).as_numpy_iterator())
  with seqio.map_seed_manager(seed):
    theirs = list(t5_pre.prefix_lm(_docs(lengths), lengths_map, _features()).as_numpy_iterator())
  assert len(ours) == len(theirs) > len(lengths)  # long documents become several segments
  for o, t in zip(ours, theirs):
    assert o["inputs"].tolist() == t["inputs"].tolist() and o["targets"].tolist() == t["targets"].tolist()
  # the split points vary (a random prefix), and every segment fits the inputs with its EOS
  assert len({len(o["inputs"]) for o in ours}) > 1
  assert all(len(o["inputs"]) + len(o["targets"]) <= inputs_length - 1 for o in ours)


def test_text_task_pairs_are_a_prefix_and_its_continuation():
  text = "The quick brown fox jumps over the lazy dog, again and again, until the day ends."
  name = lm.register_text_task("test_prefix_lm_text", [text])
  ds = seqio.get_mixture_or_task(name).get_dataset({"inputs": 12, "targets": 12}, split="train", shuffle=False,
                                                   use_cached=False, seed=3)
  rows = list(ds.as_numpy_iterator())
  vocab = vocab_lib.load_vocabulary()
  pieces = vocab.encode(text)
  eos = vocab.eos_id
  assert all(r["inputs"][-1] == eos and r["targets"][-1] == eos for r in rows)
  joined = [t for r in rows for t in r["inputs"][:-1].tolist() + r["targets"][:-1].tolist()]
  assert joined == pieces  # segments of 11 pieces, in order, each split into prefix -> rest
  assert all(len(r["inputs"]) >= 2 and len(r["targets"]) >= 2 for r in rows if len(r["inputs"]) + len(r["targets"]) > 4)
  with pytest.raises(ValueError, match="only a 'train' split"):
    seqio.get_mixture_or_task(name).get_dataset(None, split="validation", use_cached=False)


def test_c4_task_is_t5s_source():
  task = seqio.get_mixture_or_task(lm.TASK)
  assert lm.C4_TFDS == "c4/en:2.2.0" and lm.prefix_lm in task.preprocessors
