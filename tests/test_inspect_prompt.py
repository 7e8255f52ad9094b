"""Prompt inspection (Section 7) on the bundled demo model: prompts built from known
embedding rows must find those rows, and the label share must match a hand count."""
import json

import numpy as np
import pytest

from prompt_tuning_jax import inspect_prompt

from prompt_tuning_jax.text import vocab
from prompt_tuning_jax.demo import DEMO_CHECKPOINT
from prompt_tuning_jax.prompt import files as prompt_files


@pytest.fixture(scope="module")
def table():
  return inspect_prompt.embedding_table(str(DEMO_CHECKPOINT))


def test_rows_of_the_table_are_their_own_nearest_neighbours(table, tmp_path):
  v = vocab.load_vocabulary()
  yes = list(v.encode("entailment"))  # the label's pieces
  rows = [yes[0], 100, 2000]
  prompt = np.stack([3.0 * table[r] for r in rows])  # scale does not change cosine
  prompt[2] = table[2000] + 1e-3 * table[5]
  path = tmp_path / "p.npy"
  prompt_files.save_npy(path, prompt.astype(np.float32))
  out = tmp_path / "out"
  result = inspect_prompt.main([f"--prompt={path}", f"--checkpoint={DEMO_CHECKPOINT}", "--k=4",
                                "--labels=entailment", f"--output_dir={out}"])
  firsts = [t["neighbours"][0] for t in result["tokens"]]
  assert [n["id"] for n in firsts] == rows and firsts[0]["cosine"] == pytest.approx(1.0, abs=1e-6)
  assert firsts[0]["piece"] == v.tokenizer.id_to_piece(yes[0]) and firsts[0]["label"]
  # hand count of label pieces among the 3 x 4 neighbours, by brute-force cosine
  unit = table / np.linalg.norm(table, axis=1, keepdims=True)
  sims = (prompt / np.linalg.norm(prompt, axis=1, keepdims=True)) @ unit.T
  top = np.argsort(-sims, axis=1)[:, :4]
  assert [[n["id"] for n in t["neighbours"]] for t in result["tokens"]] == top.tolist()
  want = np.isin(top, yes).mean()
  assert result["label_share"] == pytest.approx(want) and want > 0
  saved = json.loads((out / "neighbours.json").read_text())
  assert saved["label_share"] == pytest.approx(want)
  assert (out / "neighbours.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_wrong_width_is_refused_naming_both(table, tmp_path):
  path = tmp_path / "p.npy"
  prompt_files.save_npy(path, np.ones((3, 8), np.float32))
  with pytest.raises(SystemExit, match="prompt width 8 != embedding width 64"):
    inspect_prompt.main([f"--prompt={path}", f"--checkpoint={DEMO_CHECKPOINT}"])
