"""Evaluation throughput: host time vs device time per batch, and examples/s end to end.

  python benchmarks/eval_throughput.py                      # BoolQ-shaped rank eval, demo model
  python benchmarks/eval_throughput.py --workload=modes --size=small   # rank vs greedy vs beam

`boolq` (default): rank classification of `--num_examples` (3,270 = BoolQ dev) examples
built by repeating the bundled BoolQ samples (`assets/superglue_samples/BoolQ`), as
`boolq passage: ... question: ...` text, 512-token inputs, the two labels False/True,
with the bundled demo model (`assets/demo_model`, `SIZES['demo']`). Per batch the host
tokenises the texts, truncates/pads them and expands the candidates; the device scores.
Three pipelines over the same work:
  sequential  host work, then the device call, waiting for its result (the old loop:
              every batch padded to the full input length);
  overlapped  host work in a `predictor.prefetch` thread and `predictor.run_stream`
              dispatching batch i + 1 before reading batch i (`Predictor.score_async`);
  bucketed    what `task_evaluator.predict_tasks` does: the split tokenised once, rows
              sorted by length and each batch cut to its bucketed longest row
              (`predictor.run_by_length`), dispatched asynchronously.
Reported: host s/batch (tokenise + pad + candidates), device s/batch (the scoring call
on ready inputs, blocked on), wall s/batch and examples/s. Limited by the model when
wall ~ device. The first two must give identical scores, bucketed equal ones to 1e-5 (checked).

`modes`: the older table, rank vs greedy vs beam examples/s on random weights.
Nothing is asserted about speed: numbers depend on the host.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import time

import common  # noqa: F401  (puts the repo root on sys.path)
import jax
import numpy as np

from prompt_tuning_jax.text import vocab as vocab_lib
from prompt_tuning_jax.checkpoints import backbone
from prompt_tuning_jax.model.config import SIZES
from prompt_tuning_jax.evaluators import ensemble, predictor, task_evaluator
from prompt_tuning_jax.prompt import wrapper

ASSETS = os.path.join(common.REPO_ROOT, "prompt_tuning_jax", "assets")
DEMO_MODEL = os.path.join(ASSETS, "demo_model", "checkpoint_1500")


def boolq_texts(n: int) -> list[str]:
  """n BoolQ-formatted inputs, the bundled dev and train samples repeated in order."""
  rows = []
  for split in ("dev32", "train"):
    with open(os.path.join(ASSETS, "superglue_samples", "BoolQ", f"{split}.jsonl")) as f:
      rows += [json.loads(line) for line in f if line.strip()]
  return [f"boolq passage: {r['passage']} question: {r['question']}" for r in itertools.islice(itertools.cycle(rows), n)]


def host_batches(vocab, texts, labels, batch_size, length, target_length, timings):
  """Yield ([tokens [B, L], candidates [B, C, T]], valid rows); host seconds into `timings`."""
  for start in range(0, len(texts), batch_size):
    t0 = time.perf_counter()
    chunk = texts[start:start + batch_size]
    tokens = vocab_lib.pad_ids(vocab_lib.encode_batch(vocab, chunk, length), length)
    tokens = np.concatenate([tokens, np.zeros((batch_size - len(chunk), length), np.int32)])
    cands = vocab_lib.encode_batch(vocab, labels, target_length, trim=True)
    cands = np.broadcast_to(cands, (batch_size,) + cands.shape).copy()  # per-example expansion, as mixtures do
    timings.append(time.perf_counter() - t0)
    yield [tokens, cands], len(chunk)


def boolq(args: argparse.Namespace) -> None:
  cfg = dataclasses.replace(SIZES["demo"], dtype=args.dtype)
  params, _ = backbone.load_frozen(DEMO_MODEL, cfg)
  model = wrapper.make_model(cfg, None)
  vocab = vocab_lib.load_vocabulary()
  texts = boolq_texts(args.num_examples)
  labels = ("False", "True")
  pred = predictor.Predictor(model, max_decode_length=args.target_length)
  make = lambda timings: host_batches(vocab, texts, labels, args.batch_size, args.input_length,
                                      args.target_length, timings)
  (warm, _), = itertools.islice(make([]), 1)
  t0 = time.perf_counter()
  jax.block_until_ready(pred.score_async(params, *warm))
  compile_s = time.perf_counter() - t0
  device = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(pred.score_async(params, *warm))
    device.append(time.perf_counter() - t0)
  results, rows = {}, []
  for name in args.pipelines.split(","):
    host: list[float] = []
    t0 = time.perf_counter()
    if name == "sequential":
      out = predictor.run_stream(lambda x, c: pred.score(params, x, c), make(host))
    elif name == "overlapped":
      out = predictor.run_stream(lambda x, c: pred.score_async(params, x, c), predictor.prefetch(make(host)))
    elif name == "bucketed":
      t_host = time.perf_counter()
      tokens = vocab_lib.pad_ids(vocab_lib.encode_batch(vocab, texts, args.input_length), args.input_length)
      cands = vocab_lib.encode_batch(vocab, labels, args.target_length, trim=True)
      batches = -(-len(texts) // args.batch_size)  # the whole split is prepared once: spread it per batch
      host.extend([(time.perf_counter() - t_host) / batches] * batches)
      out = predictor.run_by_length(lambda x: pred.score_async(params, x, cands), [tokens], args.batch_size)
    else:
      raise SystemExit(f"--pipelines: unknown pipeline {name!r}; use sequential,overlapped,bucketed")
    wall = time.perf_counter() - t0
    results[name] = out
    batches = len(host)
    full_width = name != "bucketed"  # the device-only timing is of a full-width batch
    rows.append([name, common.fmt(np.median(host), 3), common.fmt(np.median(device), 3) if full_width else "-",
                 common.fmt(wall / batches, 3), common.fmt(args.num_examples / wall, 1),
                 common.fmt(np.median(device) * batches / wall * 100, 0) if full_width else "-"])
  first = next(iter(results.values()))
  same = all(np.array_equal(first, r) if name != "bucketed" else np.allclose(first, r, rtol=1e-5, atol=1e-5)
             for name, r in results.items())
  print(f"BoolQ-shaped rank eval: {args.num_examples} examples, batch {args.batch_size}, inputs "
        f"{args.input_length}, 2 labels, demo model ({cfg.dtype}), {jax.device_count()} "
        f"{jax.devices()[0].platform} device(s), compile {compile_s:.1f} s, load {common.loadavg()}")
  print(common.format_table(["pipeline", "host s/batch", "device s/batch", "wall s/batch", "examples/s",
                             "device busy %"], rows))
  print(f"pipelines agree on every score: {same}")
  if not same:
    raise SystemExit("pipelines disagree")


def modes(args: argparse.Namespace) -> None:
  """Rank vs greedy vs beam on random weights, a 100-token prompt, 2 labels."""
  cfg = dataclasses.replace(SIZES[args.size], dtype=args.dtype)
  frozen, _ = backbone.load_frozen("random:0", cfg)
  prompt = np.random.RandomState(0).uniform(-0.5, 0.5, (1, args.prompt_length, cfg.emb_dim)).astype(np.float32)
  model, params = ensemble.bank_model(cfg, prompt), ensemble.bank_params(frozen, prompt)
  tokens = np.random.RandomState(1).randint(2, 32000, size=(args.batch_size, args.input_length)).astype(np.int32)
  tokens[:, -1] = 1
  labels = task_evaluator.encode_candidates(vocab_lib.load_vocabulary(), ["entailment", "not_entailment"],
                                            args.target_length)
  runner = predictor.Predictor(model, max_decode_length=args.target_length, num_beams=args.num_beams)
  fns = {"rank (2 labels)": lambda: runner.score_async(params, tokens, labels),
         "greedy": lambda: runner.generate_async(params, tokens, mode="greedy"),
         f"beam ({args.num_beams})": lambda: runner.generate_async(params, tokens, mode="beam")}
  print(f"{args.size}: batch {args.batch_size}, inputs {args.input_length}+{args.prompt_length} prompt, "
        f"targets {args.target_length}, {jax.device_count()} {jax.devices()[0].platform} device(s)")
  rows = []
  for name, fn in fns.items():
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    timing = common.time_steps(fn, warmup=0, steps=args.repeats)
    rows.append([name, common.fmt(first, 1), common.fmt(timing.median_s, 2),
                 common.fmt(args.batch_size / timing.median_s, 1)])
  print(common.format_table(["mode", "compile+1st (s)", "s/batch", "examples/s"], rows))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workload", default="boolq", choices=("boolq", "modes"))
  parser.add_argument("--size", default="small", choices=sorted(SIZES), help="modes: model size")
  parser.add_argument("--dtype", default="float32", help="activation dtype")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--input_length", type=int, default=None, help="default: boolq 512, modes 128")
  parser.add_argument("--prompt_length", type=int, default=100, help="modes only")
  parser.add_argument("--target_length", type=int, default=8)
  parser.add_argument("--num_beams", type=int, default=4)
  parser.add_argument("--repeats", type=int, default=2, help="timed device-only calls")
  parser.add_argument("--num_examples", type=int, default=3270, help="boolq: BoolQ dev has 3,270")
  parser.add_argument("--pipelines", default="sequential,overlapped,bucketed")
  args = parser.parse_args()
  if args.input_length is None:
    args.input_length = 512 if args.workload == "boolq" else 128
  boolq(args) if args.workload == "boolq" else modes(args)


if __name__ == "__main__":
  main()
