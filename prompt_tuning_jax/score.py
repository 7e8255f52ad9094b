"""Score target strings under the model (optionally with a prompt).

  python -m prompt_tuning_jax.score --gin_file=models/t5_1_1_base.gin \
    --gin.CHECKPOINT_PATH=/path/to/checkpoint_1100000 --input_file=pairs.jsonl \
    --output_file=scores.jsonl [--prompt=prompt.npy]

Each input line has `inputs` and `targets`; each output line adds `score` (summed target
log-likelihood, EOS included), `token_log_probs` and `target_ids` (SentencePiece ids).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Sequence

from prompt_tuning_jax import cli
from prompt_tuning_jax.text import jsonl


def read_pairs(path: str) -> list[dict]:
  """Rows with string 'inputs' and 'targets'; errors name file:line."""
  rows = []
  for n, row in jsonl.read_jsonl(path, error=cli.UsageError):
    for key in ("inputs", "targets"):
      jsonl.require_str(row, key, f"{path}:{n}", error=cli.UsageError)
    rows.append(row)
  return rows


@cli.command
def main(argv: Sequence[str]) -> None:
  parser = cli.ArgumentParser(description=__doc__)
  parser.add_argument("--input_file", required=True)
  parser.add_argument("--output_file", required=True)
  parser.add_argument("--prompt", default=None, help=".npy, numpy_checkpoints file, PEFT dir or T5X checkpoint")
  parser.add_argument("--delta", default=None, help="a trained delta (delta.safetensors or its run folder)")
  parser.add_argument("--vocabulary", default=None, help="SentencePiece model (default: bundled T5 vocabulary)")
  parser.add_argument("--batch_size", type=int, default=None, help="default: ScoreConfig.batch_size (16)")
  from prompt_tuning_jax.parallel import distributed  # pylint: disable=g-import-not-at-top
  distributed.add_flags(parser)
  args = cli.parse(parser, argv, defaults=["runs/score.gin"])
  from prompt_tuning_jax.evaluators import loading, scorer, sharded  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.text import vocab  # pylint: disable=g-import-not-at-top
  cfg = cli.build_config(scorer.ScoreConfig)
  cfg = cli.override(cfg, vocabulary=args.vocabulary, batch_size=args.batch_size,
                     model=dataclasses.replace(cfg.model, prompts=(args.prompt,) if args.prompt else cfg.model.prompts,
                                               delta=args.delta or cfg.model.delta))
  cli.check_model(cfg.model)
  cli.check_paths("--input_file", [args.input_file])
  cli.check_paths("--vocabulary", [cfg.vocabulary] if cfg.vocabulary else [])
  rows = read_pairs(args.input_file)  # bad input is refused before the model loads
  where = sharded.start(cfg.model.partition, args)
  loaded = loading.load_model(cfg.model, where)
  pair_scorer = scorer.Scorer(loaded.model, loaded.params, vocab.load_vocabulary(cfg.vocabulary),
                              batch_size=cfg.batch_size, placement=where)
  results = pair_scorer.score([(r["inputs"], r["targets"]) for r in rows])
  if not distributed.is_primary():
    return
  with open(args.output_file, "w") as f:
    for row, res in zip(rows, results):
      f.write(json.dumps({**row, **res}) + "\n")
  print(f"scored {len(rows)} pairs -> {args.output_file}")


if __name__ == "__main__":
  raise SystemExit(main())
