"""Regenerate the embedded demo's frozen model (prompt_tuning_jax/assets/demo_model/).

A tiny T5 1.1 (SIZES['demo']) is trained from random weights with this project's own
model-tuning code (every weight trainable, Adafactor) on the `demo_pretrain` mixture:
three tasks that share inputs and differ only in their text prefix. The result is saved
in T5X format (bfloat16 arrays, to keep the repository small).

  python scripts/make_demo_model.py [--steps 1500] [--out prompt_tuning_jax/assets/demo_model]
"""
import argparse
import dataclasses
import os
import shutil
import tempfile

from prompt_tuning_jax.text import data
from prompt_tuning_jax.checkpoints import t5x
from prompt_tuning_jax.model.config import SIZES
from prompt_tuning_jax.trainer import loop, optim, step


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--steps", type=int, default=1500)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--learning_rate", type=float, default=0.01)
  parser.add_argument("--out", default=os.path.join("prompt_tuning_jax", "assets", "demo_model"))
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as work:
    cfg = loop.TrainConfig(
        model_dir=work, initial_checkpoint_path="random:0", t5=SIZES["demo"],
        data=data.DataConfig("demo_pretrain", "prompt_tuning_jax.tasks.demo", {"inputs": 16, "targets": 4}, batch_size=args.batch_size),
        prompt=None,
        optim=dataclasses.replace(optim.MODEL_TUNING, learning_rate=args.learning_rate, weight_decay_rate=None),
        loss=step.LossConfig(), train_steps=args.steps, checkpoint_period=args.steps, log_period=100)
    result = loop.train(cfg)
  shutil.rmtree(args.out, ignore_errors=True)
  params = t5x.cast_params(result.trainable, "bfloat16")
  path = t5x.write_t5x_checkpoint(args.out, params, step=args.steps)
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
