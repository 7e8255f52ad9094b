"""`score --delta=PATH` scores with a trained delta, like torch on the merged weights."""
import json
import pathlib

import jax
import numpy as np
import pytest
import torch
from flax import traverse_util

import gin
from prompt_tuning_jax import methods, score
from prompt_tuning_jax.text import vocab
from prompt_tuning_jax.checkpoints import backbone, hf
from prompt_tuning_jax.model.config import SIZES
from prompt_tuning_jax.methods import files as delta_files

FIXTURE = pathlib.Path(__file__).parents[1] / "testdata/t5x_checkpoints/test_t5_tiny.checkpoint_0"
CFG = SIZES["tiny_inline"]


@pytest.fixture(autouse=True)
def _clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def test_score_with_a_lora_delta_matches_torch_on_merged_weights(tmp_path):
  method = methods.LoRA(rank=2, alpha=4.0)
  frozen = jax.device_get(backbone.load_frozen(str(FIXTURE), CFG)[0])
  full = methods.add_delta_params(methods.make_model(CFG, None, method), frozen, jax.random.PRNGKey(0))
  rng = np.random.RandomState(0)
  trained = {k: np.asarray(v) + 0.5 * rng.randn(*v.shape).astype(np.float32)
             for k, v in traverse_util.flatten_dict(full, sep="/").items() if "/lora_" in k}
  delta_files.save_delta(tmp_path, method, CFG, trained)
  pair = {"inputs": "rte hypothesis: A dog runs. premise: An animal moves fast.", "targets": "entailment"}
  (tmp_path / "pairs.jsonl").write_text(json.dumps(pair) + "\n")
  score.main(["--gin_file=tests/tiny_inline.gin", f"--gin.CHECKPOINT_PATH={FIXTURE}", f"--delta={tmp_path}",
              f"--input_file={tmp_path / 'pairs.jsonl'}", f"--output_file={tmp_path / 'out.jsonl'}"])
  row = json.loads((tmp_path / "out.jsonl").read_text())
  merged = method.merge(traverse_util.unflatten_dict({**traverse_util.flatten_dict(frozen, sep="/"), **trained},
                                                     sep="/"))
  v = vocab.load_vocabulary()
  enc = torch.tensor([list(v.encode(pair["inputs"])) + [1]])
  tgt = list(v.encode(pair["targets"])) + [1]
  with torch.no_grad():
    logits = hf.to_hf_torch_model(jax.device_get(merged), CFG)(input_ids=enc,
                                                               decoder_input_ids=torch.tensor([[0] + tgt[:-1]])).logits
  logp = torch.log_softmax(logits, -1)[0]
  want = float(sum(logp[i, t] for i, t in enumerate(tgt)))
  np.testing.assert_allclose(row["score"], want, rtol=1e-5)
  with torch.no_grad():
    plain = torch.log_softmax(hf.to_hf_torch_model(frozen, CFG)(
        input_ids=enc, decoder_input_ids=torch.tensor([[0] + tgt[:-1]])).logits, -1)[0]
  assert abs(float(sum(plain[i, t] for i, t in enumerate(tgt))) - want) > 1e-3  # the delta matters
