"""Examples/s of rank classification vs greedy vs beam decoding on a T5 1.1 Small shape.

  python benchmarks/eval_throughput.py [--size=small] [--batch_size=32] [--repeats=2]

Random weights ('random:0'), a 100-token prompt, inputs 128 tokens (+100 prompt),
targets 8, two candidate labels for rank classification ('entailment',
'not_entailment'). Random weights rarely emit EOS, so greedy and beam run all 8 steps:
the worst case for decoding. Each mode is compiled once before timing; the table reports
the mean over `--repeats` timed batches. Nothing is asserted: numbers depend on the host.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import numpy as np

from prompt_tuning_jax import vocab as vocab_lib
from prompt_tuning_jax.checkpoints import backbone
from prompt_tuning_jax.config import SIZES
from prompt_tuning_jax.evaluators import ensemble, predictor


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--size", default="small", choices=sorted(SIZES))
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--input_length", type=int, default=128)
  parser.add_argument("--prompt_length", type=int, default=100)
  parser.add_argument("--target_length", type=int, default=8)
  parser.add_argument("--num_beams", type=int, default=4)
  parser.add_argument("--repeats", type=int, default=2)
  args = parser.parse_args()

  cfg = dataclasses.replace(SIZES[args.size], dtype="float32")
  frozen, _ = backbone.load_frozen("random:0", cfg)
  shape = (1, args.prompt_length, cfg.emb_dim)
  prompt = np.random.RandomState(0).uniform(-0.5, 0.5, shape).astype(np.float32)
  model = ensemble.bank_model(cfg, prompt)
  params = ensemble.bank_params(frozen, prompt)
  rng = np.random.RandomState(1)
  tokens = rng.randint(2, 32000, size=(args.batch_size, args.input_length)).astype(np.int32)
  tokens[:, -1] = 1
  labels = vocab_lib.encode_batch(vocab_lib.load_vocabulary(), ["entailment", "not_entailment"],
                                  args.target_length, trim=True)
  runner = predictor.Predictor(model, max_decode_length=args.target_length, num_beams=args.num_beams)
  modes = {
      "rank (2 labels)": lambda: runner.score(params, tokens, labels),
      "greedy": lambda: runner.generate(params, tokens, mode="greedy"),
      f"beam ({args.num_beams})": lambda: runner.generate(params, tokens, mode="beam"),
  }
  print(f"{args.size}: d={cfg.emb_dim}, layers={cfg.num_encoder_layers}+{cfg.num_decoder_layers}, batch "
        f"{args.batch_size}, inputs {args.input_length}+{args.prompt_length} prompt, targets "
        f"{args.target_length}, {jax.device_count()} {jax.devices()[0].platform} device(s)")
  print(f"{'mode':<18}{'compile+1st (s)':>16}{'s/batch':>10}{'examples/s':>12}")
  for name, fn in modes.items():
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.repeats):
      jax.block_until_ready(fn())
    per_batch = (time.perf_counter() - t0) / args.repeats
    print(f"{name:<18}{first:>16.1f}{per_batch:>10.2f}{args.batch_size / per_batch:>12.1f}")


if __name__ == "__main__":
  main()
