"""Score target strings under the model (optionally with a prompt).

  python -m prompt_tuning_jax.score --gin_file=models/t5_1_1_base.gin \
    --gin.CHECKPOINT_PATH=/path/to/checkpoint_1100000 --input_file=pairs.jsonl \
    --output_file=scores.jsonl [--prompt=prompt.npy]

Each input line has `inputs` and `targets`; each output line adds `score` (summed target
log-likelihood, EOS included), `token_log_probs` and `target_ids` (SentencePiece ids).
"""
from __future__ import annotations

import argparse
import json
from typing import Sequence

import gin
from prompt_tuning_jax import cli, vocab
from prompt_tuning_jax.checkpoints import backbone
from prompt_tuning_jax.config import T5Config
from prompt_tuning_jax.evaluators import scorer
from prompt_tuning_jax.methods import files as delta_files
from prompt_tuning_jax.prompt import files as prompt_files
from prompt_tuning_jax.prompt import wrapper


def read_pairs(path: str) -> list[dict]:
  rows = []
  with open(path) as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise SystemExit(f"{path}:{n}: not JSON ({e})")
      if not isinstance(row, dict) or not {"inputs", "targets"} <= set(row):
        raise SystemExit(f"{path}:{n}: each line needs string fields 'inputs' and 'targets'")
      rows.append(row)
  return rows


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--input_file", required=True)
  parser.add_argument("--output_file", required=True)
  parser.add_argument("--prompt", default=None, help=".npy, numpy_checkpoints file, PEFT dir or T5X checkpoint")
  parser.add_argument("--delta", default=None, help="a trained delta (delta.safetensors or its run folder)")
  parser.add_argument("--vocabulary", default=None, help="SentencePiece model (default: bundled T5 vocabulary)")
  parser.add_argument("--batch_size", type=int, default=16)
  args = cli.parse(parser, argv)
  cfg = cli.build_config(T5Config)
  params, _ = backbone.load_frozen(gin.query_parameter("%CHECKPOINT_PATH"), cfg)
  prompt_cfg = None
  if args.prompt:
    prompt = prompt_files.load_prompt(args.prompt)
    prompt_files.check_shape(prompt, (prompt.shape[0], cfg.emb_dim), args.prompt)
    prompt_cfg = wrapper.PromptConfig(length=prompt.shape[0])
    params = wrapper.set_prompt(params, prompt)
  model = wrapper.make_model(cfg, prompt_cfg)
  if args.delta:
    model, params = delta_files.apply_delta(model, params, args.delta)
  rows = read_pairs(args.input_file)
  pair_scorer = scorer.Scorer(model, params, vocab.load_vocabulary(args.vocabulary), batch_size=args.batch_size)
  results = pair_scorer.score([(r["inputs"], r["targets"]) for r in rows])
  with open(args.output_file, "w") as f:
    for row, res in zip(rows, results):
      f.write(json.dumps({**row, **res}) + "\n")
  print(f"scored {len(rows)} pairs -> {args.output_file}")


if __name__ == "__main__":
  main()
