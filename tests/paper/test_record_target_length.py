"""ReCoRD's training target length comes from the data (the paper gives none): the bundled
samples hold answers longer than the SuperGLUE default of 8 slots, and the grid's length
covers the longest of them."""
import json

from prompt_tuning_jax.paper import experiments
from prompt_tuning_jax.tasks import SAMPLES_DIR
from prompt_tuning_jax.text import vocab as vocab_lib


def test_record_targets_cover_the_longest_sample_answer():
  vocab = vocab_lib.load_vocabulary()
  answers = [a["text"] for name in ("train.jsonl", "dev32.jsonl")
             for line in (SAMPLES_DIR / "ReCoRD" / name).read_text().splitlines()
             for q in json.loads(line)["qas"] for a in q.get("answers", [])]
  slots = [len(vocab.encode(t)) + 1 for t in answers]  # pieces + EOS
  assert len(answers) == 153 and sum(s > 8 for s in slots) == 4 and max(slots) == 11
  assert experiments.RECORD_TARGET_LENGTH >= max(slots)
  files, bindings = experiments.gin_args(experiments.Setting("record", "base"))
  assert ("TASK_FEATURE_LENGTHS", '{"inputs": 512, "targets": 16}') in bindings
  assert not any(k == "TASK_FEATURE_LENGTHS" for k, _ in experiments.gin_args(experiments.Setting("rte", "base"))[1])
