"""Packed vs padded prompt tuning on the short SuperGLUE tasks (CB, COPA, RTE, WiC).

A padded row holds one example: inputs (512) + prompt (100). A packed row of the same
612 tokens holds several examples, each behind its own copy of the prompt. Useful tokens = real input + target tokens (prompts and padding
excluded). Prints useful tokens per second of the jitted prompt-tuning step for both.

  python benchmarks/packing.py [--size small] [--batch 8] [--inputs 512] [--steps 3]
"""
from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import seqio

import prompt_tuning_jax.tasks as tasks  # noqa: F401  (registers the sample tasks)
from prompt_tuning_jax.text import data as data_lib
from prompt_tuning_jax.checkpoints import backbone
from prompt_tuning_jax.model.config import SIZES
from prompt_tuning_jax.prompt import PROMPT_PATTERN, wrapper
from prompt_tuning_jax.trainer import optim
from prompt_tuning_jax.trainer import step as step_lib

SHORT_TASKS = ("cb", "copa", "rte", "wic")


def batches(pack: bool, lengths: dict, batch: int, n: int, prompt_length: int) -> list[dict]:
  """n batches from the taskless sample mix of the short tasks (train + dev rows)."""
  ds = None
  for t in SHORT_TASKS:
    for split in ("train", "validation"):
      part = seqio.get_mixture_or_task(f"superglue_{t}_sample_taskless").get_dataset(
          lengths, split=split, shuffle=False, num_epochs=1, use_cached=False)
      ds = part if ds is None else ds.concatenate(part)
  ds = ds.shuffle(1000, seed=0)
  if pack:  # each example's prompt copy is budgeted inside the packed row
    ds = data_lib.reserve_prompt_slots(ds, prompt_length, lengths["inputs"])
  ds = seqio.EncDecFeatureConverter(pack=pack)(ds, lengths).repeat()
  it = ds.batch(batch, drop_remainder=True).as_numpy_iterator()
  return [next(it) for _ in range(n)]


def num_examples(b: dict) -> int:
  if "decoder_segment_ids" in b:
    return int(b["decoder_segment_ids"].max(axis=1).sum())
  return int((b["decoder_target_tokens"][:, 0] > 0).sum())


def useful_tokens(b: dict, prompt_slots: int) -> int:
  """Real input + target tokens; the placeholder slots of packed prompts do not count."""
  real = int((b["encoder_input_tokens"] > 0).sum() + (b["decoder_target_tokens"] > 0).sum())
  return real - (prompt_slots * num_examples(b) if "encoder_segment_ids" in b else 0)


def time_mode(pack: bool, args) -> dict:
  cfg = SIZES[args.size]
  # Packed rows need room for every segment's target, or the targets limit the packing.
  # Padded: inputs + P on top (the paper's 512 + 100). Packed: rows of inputs + P tokens,
  # prompts included, with room for every segment's target.
  lengths = ({"inputs": args.inputs + args.prompt_length, "targets": args.packed_targets} if pack
             else {"inputs": args.inputs, "targets": 8})
  data = batches(pack, lengths, args.batch, args.steps + 1, args.prompt_length)
  if not pack:
    data = [{k: v for k, v in b.items() if "segment" not in k and "position" not in k} for b in data]
  prompt_cfg = wrapper.PromptConfig(length=args.prompt_length)
  model = wrapper.make_model(cfg, prompt_cfg)
  frozen, _ = backbone.load_frozen("random:0", cfg)
  prompt = jax.random.uniform(jax.random.PRNGKey(1), (args.prompt_length, cfg.emb_dim), minval=-0.5, maxval=0.5)
  trainable, frozen = optim.split_params(wrapper.set_prompt(frozen, prompt), (PROMPT_PATTERN,))
  opt = optim.make_optimizer(optim.PROMPT_TUNING)
  state = step_lib.init_state(trainable, opt, jax.random.PRNGKey(0))
  fn = step_lib.jit_train_step(model, opt, step_lib.LossConfig())
  state, m = fn(state, frozen, data[0])  # compile
  jax.block_until_ready(m)
  start = time.perf_counter()
  for b in data[1:]:
    state, m = fn(state, frozen, b)
  jax.block_until_ready(m)
  seconds = (time.perf_counter() - start) / args.steps
  tokens = np.mean([useful_tokens(b, args.prompt_length) for b in data[1:]])
  examples = np.mean([num_examples(b) for b in data[1:]])
  enc_len = data[1]["encoder_input_tokens"].shape[1] + (0 if pack else args.prompt_length)
  return {"mode": "packed" if pack else "padded", "step_s": seconds, "examples": examples, "useful": tokens,
          "encoder_len": enc_len, "tok_s": tokens / seconds, "ex_s": examples / seconds}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--size", default="small")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--inputs", type=int, default=512)
  parser.add_argument("--prompt_length", type=int, default=100)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--packed_targets", type=int, default=32, help="target length of a packed row")
  args = parser.parse_args()
  rows = [time_mode(False, args), time_mode(True, args)]
  print(f"\nT5 1.1 {args.size} shape, batch {args.batch} rows, inputs {args.inputs} + prompt {args.prompt_length}, "
        f"targets 8 (packed rows: {args.inputs + args.prompt_length} tokens with prompts, targets "
        f"{args.packed_targets}), {jax.device_count()} x {jax.devices()[0].platform}")
  print("| mode | encoder length | examples/row-batch | useful tokens/batch | step (s) | useful tokens/s | examples/s |")
  print("|---|---:|---:|---:|---:|---:|---:|")
  for r in rows:
    print(f"| {r['mode']} | {r['encoder_len']} | {r['examples']:.1f} | {r['useful']:.0f} | {r['step_s']:.2f} | "
          f"{r['tok_s']:.0f} | {r['ex_s']:.1f} |")
  print(f"packed / padded useful-token throughput: {rows[1]['tok_s'] / rows[0]['tok_s']:.2f}x")


if __name__ == "__main__":
  main()
