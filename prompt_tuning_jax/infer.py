"""Run prompts on raw text inputs: one JSON line out per input.

  python -m prompt_tuning_jax.infer --gin_file=models/t5_1_1_base.gin \
    --gin.CHECKPOINT_PATH=... --input_file=in.jsonl --prompt=rte=rte.npy \
    --prompt=mrpc=mrpc.npy --output_file=out.jsonl --mode=beam

Inputs: JSONL (text in field --input_field, default 'inputs') or TSV (first column).
Every input runs under every prompt, in one batch with a prompt bank; a JSONL line
with a --prompt_field value (a prompt's NAME or index) runs under that prompt only, so
one batch can mix tasks. Output line: {"input": ..., "outputs": [{"prompt", "output",
"score"[, "beams"]}, ...]} in input order. Multi-host flags as `train`'s.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

from prompt_tuning_jax import cli
from prompt_tuning_jax.text import jsonl, lines


def read_inputs(path: str, input_field: str = "inputs", prompt_field: str = "prompt",
                ) -> list[tuple[str, Any]]:
  """-> [(text, prompt selector or None)] from a .jsonl or .tsv file; errors name file:line."""
  if not os.path.isfile(path):
    raise cli.UsageError(f"--input_file={path}: no such file")
  if path.endswith(".tsv"):
    return _read_tsv(path)
  rows: list[tuple[str, Any]] = []
  for n, record in jsonl.read_jsonl(path, error=cli.UsageError):
    where = f"{path}:{n}"
    text = jsonl.require_str(record, input_field, f"{where} (see --input_field)", error=cli.UsageError)
    selector = record.get(prompt_field)
    if selector is not None and (isinstance(selector, bool) or not isinstance(selector, (str, int))):
      raise cli.UsageError(f"{where}: field {prompt_field!r} must be a prompt NAME or index, found {selector!r:.40}")
    rows.append((text, selector))
  return rows


def _read_tsv(path: str) -> list[tuple[str, Any]]:
  rows = [(cells[0], None) for _, cells in lines.read_tsv(path, error=cli.UsageError) if cells]  # bounded, BOM dropped
  if not rows:
    raise cli.UsageError(f"{path}: empty TSV file (no input rows)")
  return rows


def requests(rows: list[tuple[str, Any]], names: list[str]) -> list[tuple[int, int]]:
  """(input index, prompt index) pairs: every prompt, or the line's own one."""
  out = []
  for i, (_, selector) in enumerate(rows):
    if selector is None or not names:
      out += [(i, k) for k in range(max(len(names), 1))]
    elif isinstance(selector, int) and 0 <= selector < len(names):
      out.append((i, selector))
    elif str(selector) in names:
      out.append((i, names.index(str(selector))))
    else:
      raise cli.UsageError(f"input {i}: prompt {selector!r} is neither a --prompt NAME {names} nor an index")
  return out


@cli.command
def main(argv: Sequence[str]) -> list[dict]:
  parser = cli.ArgumentParser(description=__doc__)
  cli.add_model_flags(parser)
  parser.add_argument("--input_file", required=True)
  parser.add_argument("--output_file", required=True)
  parser.add_argument("--input_field", default="inputs")
  parser.add_argument("--prompt_field", default="prompt")
  parser.add_argument("--input_length", type=int, default=512)
  parser.add_argument("--vocabulary", default=None, help="SentencePiece model (default: bundled T5)")
  args = cli.parse(parser, argv, defaults=["runs/eval.gin"])
  import numpy as np  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.evaluators import loading, predictor, sharded  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.evaluators.config import EvalConfig  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.parallel import distributed  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.text import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  cfg = cli.build_config(EvalConfig)
  cfg = cli.override(cfg, mode=args.mode, batch_size=args.batch_size, num_beams=args.num_beams, alpha=args.alpha,
                     max_decode_length=args.max_decode_length,
                     model=dataclasses.replace(cfg.model, prompts=tuple(args.prompt) or cfg.model.prompts,
                                               delta=args.delta or cfg.model.delta))
  if cfg.mode == "rank":
    raise cli.UsageError("--mode=rank needs candidate labels; infer decodes (greedy or beam)")
  cli.check_model(cfg.model)
  cli.check_paths("--vocabulary", [args.vocabulary] if args.vocabulary else [])
  rows = read_inputs(args.input_file, args.input_field, args.prompt_field)  # bad input: before the model loads
  where = sharded.start(cfg.model.partition, args)
  loaded = loading.load_model(cfg.model, where)
  model, params, names = loaded.model, loaded.params, loaded.names
  vocab = vocab_lib.load_vocabulary(args.vocabulary)
  pairs = requests(rows, names)
  tokens = vocab_lib.encode_batch(vocab, [rows[i][0] for i, _ in pairs], args.input_length)
  ids = np.asarray([k for _, k in pairs], np.int32)
  runner = predictor.Predictor(model, max_decode_length=cfg.max_decode_length or 8,
                               num_beams=cfg.num_beams, alpha=cfg.alpha, placement=where)
  out_tokens, scores = predictor.run_batched(
      lambda x, p: runner.generate_async(params, x, p, mode=cfg.mode), [tokens, ids], cfg.batch_size or 32)
  outputs = predictor.outputs_from_tokens(vocab, out_tokens, scores)
  results = [{"input": text, "outputs": []} for text, _ in rows]
  for r, (i, k) in enumerate(pairs):
    item = {"prompt": names[k] if names else None, "output": outputs.texts[r],
            "score": float(outputs.scores[r])}
    if outputs.beams is not None:
      item["beams"] = [{"output": t, "score": s} for t, s in outputs.beams[r]]
    results[i]["outputs"].append(item)
  if not distributed.is_primary():
    return results
  os.makedirs(os.path.dirname(os.path.abspath(args.output_file)), exist_ok=True)
  with open(args.output_file, "w", encoding="utf-8") as f:
    for rec in results:
      f.write(json.dumps(rec) + "\n")
  return results


if __name__ == "__main__":
  raise SystemExit(main())
