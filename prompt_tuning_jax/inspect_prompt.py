"""Interpret a learned prompt as the paper's Section 7 does: each prompt token's nearest
vocabulary embeddings by cosine similarity, and how many of them are class-label words.

  python -m prompt_tuning_jax.inspect_prompt --prompt=runs/demo/export/prompt.npy \
      --checkpoint=prompt_tuning_jax/assets/demo_model/checkpoint_1500 --k=5 \
      --labels=entailment,not_entailment --output_dir=/tmp/inspect

`--prompt`: any prompt file this package reads (.npy, numpy_checkpoints, PEFT adapter, T5X
checkpoint). `--checkpoint`: the frozen model's T5X checkpoint or Hugging Face folder (only
its token embedding table is read). Pieces are the bundled T5 SentencePiece vocabulary's
(or `--vocab`'s); ids past it are the sentinels `<extra_id_k>`. Prints one line per prompt
token and the share of label pieces among all neighbours; writes `neighbours.json` and
`neighbours.png` (per token: its best cosine similarity, marked where a label piece is near).
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np

from prompt_tuning_jax import cli


def embedding_table(checkpoint: str) -> np.ndarray:
  """The frozen model's token embeddings [V, d] from a T5X checkpoint or an HF folder."""
  from prompt_tuning_jax.checkpoints import backbone, hf, t5x  # pylint: disable=g-import-not-at-top
  kind = backbone.detect_format(checkpoint)
  if kind == "t5x":
    return np.asarray(t5x.read_t5x_array(checkpoint, "token_embedder/embedding"), np.float32)
  if kind == "hf":
    params, _ = hf.load_hf_checkpoint(checkpoint)
    return np.asarray(params["token_embedder"]["embedding"], np.float32)
  raise ValueError(f"--checkpoint={checkpoint}: give a T5X checkpoint or a Hugging Face T5 folder, "
                   "not random weights (their neighbours mean nothing)")


def nearest(prompt: np.ndarray, table: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """prompt [P, d], table [V, d] -> (ids [P, k], cosine similarities [P, k]), most similar first."""
  if prompt.shape[1] != table.shape[1]:
    raise ValueError(f"prompt width {prompt.shape[1]} != embedding width {table.shape[1]}: "
                     "the prompt was trained for another model")
  unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
  sims = unit(prompt.astype(np.float64)) @ unit(table.astype(np.float64)).T  # [P, V]
  k = min(k, table.shape[0])
  ids = np.argpartition(-sims, k - 1, axis=1)[:, :k]
  order = np.argsort(-np.take_along_axis(sims, ids, axis=1), axis=1)
  ids = np.take_along_axis(ids, order, axis=1)
  return ids, np.take_along_axis(sims, ids, axis=1)


def piece_text(vocab: Any, token_id: int) -> str:
  """A piece as text ('▁' marks a word start), or the sentinel name past the vocabulary."""
  size = vocab.tokenizer.get_piece_size()
  return vocab.tokenizer.id_to_piece(int(token_id)) if token_id < size else f"<extra_id_{token_id - size}>"


def label_piece_ids(vocab: Any, labels: Sequence[str]) -> set[int]:
  """Every piece id of every label string (a label spread over pieces counts each piece)."""
  return {int(i) for label in labels for i in vocab.encode(label)}


def inspect(prompt: np.ndarray, table: np.ndarray, vocab: Any, *, k: int = 5,
            labels: Sequence[str] = ()) -> dict[str, Any]:
  """-> {'tokens': [{'position', 'neighbours': [{'id', 'piece', 'cosine', 'label'}]}],
  'label_share': share of label pieces among all P x k neighbours, 'tokens_with_label': ...}."""
  ids, sims = nearest(prompt, table, k)
  wanted = label_piece_ids(vocab, labels)
  tokens = [{"position": p, "neighbours": [{"id": int(i), "piece": piece_text(vocab, i), "cosine": float(s),
                                           "label": int(i) in wanted} for i, s in zip(ids[p], sims[p])]}
            for p in range(len(ids))]
  hits = [[n["label"] for n in t["neighbours"]] for t in tokens]
  return {"k": int(ids.shape[1]), "labels": list(labels), "tokens": tokens,
          "label_share": float(np.mean(hits)) if labels else None,
          "tokens_with_label": int(sum(any(h) for h in hits)) if labels else None}


def format_report(result: dict[str, Any]) -> str:
  lines = []
  for t in result["tokens"]:
    cells = [f"{n['piece']}{'*' if n['label'] else ''} ({n['cosine']:.2f})" for n in t["neighbours"]]
    lines.append(f"prompt[{t['position']:3d}]  " + "  ".join(cells))
  if result["labels"]:
    lines.append(f"class-label pieces (*) among the {len(result['tokens'])} x {result['k']} neighbours: "
                 f"{100 * result['label_share']:.1f}%; prompt tokens with a label piece among their "
                 f"neighbours: {result['tokens_with_label']}/{len(result['tokens'])} (labels: {result['labels']})")
  return "\n".join(lines)


def plot(result: dict[str, Any], path: str) -> str:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  best = [t["neighbours"][0]["cosine"] for t in result["tokens"]]
  has_label = [any(n["label"] for n in t["neighbours"]) for t in result["tokens"]]
  fig, ax = plt.subplots(figsize=(max(4.0, 0.25 * len(best)), 3.2))
  ax.bar(range(len(best)), best, color=["tab:orange" if h else "tab:blue" for h in has_label])
  for p, t in enumerate(result["tokens"]):
    ax.text(p, best[p], t["neighbours"][0]["piece"], rotation=90, fontsize=6, ha="center", va="bottom")
  ax.set_xlabel("prompt position (orange: a class-label piece among the nearest)")
  ax.set_ylabel("cosine of nearest piece")
  ax.set_title(f"nearest vocabulary pieces (k={result['k']})", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


@cli.command
def main(argv: Sequence[str]) -> dict[str, Any]:
  parser = cli.ArgumentParser(prog="python -m prompt_tuning_jax.inspect_prompt", description=__doc__)
  parser.add_argument("--prompt", required=True, help="prompt file or folder")
  parser.add_argument("--checkpoint", required=True, help="frozen model: T5X checkpoint or HF folder")
  parser.add_argument("--k", type=int, default=5, help="neighbours per prompt token")
  parser.add_argument("--labels", default="", help="comma-separated class-label strings")
  parser.add_argument("--vocab", default=None, help="SentencePiece model (default: the bundled T5 vocabulary)")
  parser.add_argument("--output_dir", default=None, help="writes neighbours.json and neighbours.png")
  args = parser.parse_args(argv)
  if args.k < 1:
    raise cli.UsageError(f"--k={args.k}: must be >= 1")
  cli.check_paths("--prompt", [args.prompt])
  cli.check_paths("--checkpoint", [args.checkpoint])
  from prompt_tuning_jax.prompt import files as prompt_files  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.text import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  try:
    prompt = prompt_files.load_prompt(args.prompt)
    result = inspect(prompt, embedding_table(args.checkpoint), vocab_lib.load_vocabulary(args.vocab), k=args.k,
                     labels=[x for x in args.labels.split(",") if x])
  except (ValueError, FileNotFoundError) as e:
    raise cli.UsageError(f"inspect_prompt: {e}") from None
  print(format_report(result))
  if args.output_dir:
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "neighbours.json"), "w") as f:
      json.dump(result, f, indent=1)
    print("wrote", plot(result, os.path.join(args.output_dir, "neighbours.png")))
  return result


if __name__ == "__main__":
  raise SystemExit(main())
