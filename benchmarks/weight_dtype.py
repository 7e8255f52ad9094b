"""float32 vs bfloat16 frozen-weight storage on the bundled tiny T5X fixture.

Trains the same prompt twice (same seed, data, bfloat16 activations as in the paper) and
prints the per-step training loss of both, and how far the trained prompts drift apart.

  python benchmarks/weight_dtype.py --steps 20
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from prompt_tuning_jax.text import data  # noqa: E402
from prompt_tuning_jax.model.config import SIZES  # noqa: E402
from prompt_tuning_jax.prompt import initializers, wrapper  # noqa: E402
from prompt_tuning_jax.trainer import loop  # noqa: E402

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "tests/testdata/t5x_checkpoints/test_t5_tiny.checkpoint_0")


def run(weight_dtype: str, steps: int, model_dir: str) -> tuple[list[float], np.ndarray]:
  cfg = loop.TrainConfig(
      model_dir=model_dir, initial_checkpoint_path=FIXTURE,
      t5=SIZES["tiny_inline"].replace(dtype="bfloat16", weight_dtype=weight_dtype),
      data=data.DataConfig("superglue_rte_sample_taskless", "prompt_tuning_jax.tasks", {"inputs": 32, "targets": 4},
                           batch_size=8),
      prompt=wrapper.PromptConfig(length=5), prompt_init=initializers.sampled_vocab(), train_steps=steps,
      eval_period=10 ** 6, checkpoint_period=10 ** 6, log_period=1, progress_bar=False)
  result = loop.train(cfg)
  rows = [json.loads(line) for line in open(os.path.join(model_dir, "metrics.jsonl"))]
  return [r["train/loss"] for r in rows if "train/loss" in r], np.asarray(wrapper.get_prompt(result.trainable))


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--steps", type=int, default=20)
  args = p.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    f32, p32 = run("float32", args.steps, os.path.join(tmp, "f32"))
    b16, p16 = run("bfloat16", args.steps, os.path.join(tmp, "bf16"))
  print("| step | loss, float32 weights | loss, bfloat16 weights | relative difference |")
  print("|---:|---:|---:|---:|")
  for i, (a, b) in enumerate(zip(f32, b16), 1):
    if i in (1, 2, 5) or i % 5 == 0:
      print(f"| {i} | {a:.5f} | {b:.5f} | {abs(b - a) / abs(a):.2e} |")
  diff = np.abs(p16 - p32)
  print(f"\ntrained prompt {p32.shape}: max |bf16 - f32| = {diff.max():.3e}, "
        f"relative L2 = {np.linalg.norm(p16 - p32) / np.linalg.norm(p32):.3e}, "
        f"cosine = {float((p16 * p32).sum() / np.linalg.norm(p16) / np.linalg.norm(p32)):.6f}")


if __name__ == "__main__":
  main()
