"""Export a trained prompt, or a trained delta, for use elsewhere.

  python -m prompt_tuning_jax.export --prompt=MODEL_DIR/prompt.npy --output_dir=OUT \
    [--formats=npy,numpy_checkpoint,peft,card] [--step=N] [--base_model=google/t5-base-lm-adapt]
    [--task=superglue_rte_taskless] [--metrics=MODEL_DIR/best/best.json]
  python -m prompt_tuning_jax.export --delta=MODEL_DIR/delta.safetensors --output_dir=OUT [--base_model=...]

Writes OUT/prompt.npy; OUT/numpy_checkpoints/checkpoint_<step>/encoder.prompt.prompt.prompt
(the original release's layout); OUT/peft/ (a Hugging Face PEFT prompt-tuning adapter:
adapter_config.json + adapter_model.safetensors); OUT/model_card.json. The input may be any
format `prompt_files.load_prompt` reads (.npy, numpy_checkpoints file, PEFT dir, T5X checkpoint).
With --delta, OUT/peft/ is the PEFT adapter of a LoRA or PEFT-form prefix-tuning delta
(`methods.files.save_peft`); other methods keep their delta.safetensors.
"""
from __future__ import annotations

import argparse
import json
from typing import Sequence

from prompt_tuning_jax.checkpoints import fs
from prompt_tuning_jax.model.config import T5Config
from prompt_tuning_jax.methods import files as delta_files
from prompt_tuning_jax.prompt import files as prompt_files

FORMATS = ("npy", "numpy_checkpoint", "peft", "card")


def export_prompt(prompt_path: str, output_dir: str, *, formats: Sequence[str] = FORMATS, step: int = 0,
                  base_model: str | None = None, task: str = "", init: str = "", metrics: dict | None = None,
                  num_heads: int | None = None, num_layers: int | None = None) -> dict[str, str]:
  """Write the prompt in each requested format; returns {format: path}."""
  bad = sorted(set(formats) - set(FORMATS))
  if bad:
    raise ValueError(f"--formats: unknown {bad}; choose from {FORMATS}")
  prompt = prompt_files.load_prompt(prompt_path)
  out = {}
  if "npy" in formats:
    out["npy"] = str(prompt_files.save_npy(fs.join(output_dir, "prompt.npy"), prompt))
  if "numpy_checkpoint" in formats:
    out["numpy_checkpoint"] = str(prompt_files.save_numpy_checkpoint(output_dir, step, prompt))
  if "peft" in formats:
    out["peft"] = str(prompt_files.save_peft_adapter(fs.join(output_dir, "peft"), prompt,
                                                  base_model_name_or_path=base_model,
                                                  num_attention_heads=num_heads, num_layers=num_layers))
  if "card" in formats:
    out["card"] = str(prompt_files.write_model_card(
        fs.join(output_dir, "model_card.json"), backbone=base_model or "", task=task,
        prompt_length=prompt.shape[0], init=init, steps=step, dev_metrics=metrics or {},
        extra={"token_dim": int(prompt.shape[1])}))
  return out


def export_delta(delta_path: str, output_dir: str, *, base_model: str | None = None) -> dict[str, str]:
  """A trained delta (`delta.safetensors` or its folder) as a PEFT adapter in OUT/peft/."""
  shape = delta_files.delta_backbone_shape(delta_path)
  if not shape:
    raise ValueError(f"{delta_path}: records no backbone shape (written by an older version); retrain or re-save it")
  method, leaves = delta_files.load_delta(delta_path)
  path = delta_files.save_peft(fs.join(output_dir, "peft"), method, T5Config(**shape), leaves,
                               base_model_name_or_path=base_model)
  return {"peft": str(path)}


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--prompt", help="a trained prompt (.npy, numpy checkpoint, PEFT dir, T5X checkpoint)")
  source.add_argument("--delta", help="a trained delta: MODEL_DIR/delta.safetensors or MODEL_DIR (LoRA, prefix)")
  parser.add_argument("--output_dir", required=True)
  parser.add_argument("--formats", default=",".join(FORMATS))
  parser.add_argument("--step", type=int, default=0)
  parser.add_argument("--base_model", default=None, help="HF name or path of the frozen T5 (for PEFT)")
  parser.add_argument("--task", default="")
  parser.add_argument("--init", default="")
  parser.add_argument("--metrics", default=None, help="JSON file of dev metrics for the model card")
  args = parser.parse_args(argv)
  if args.delta:
    for fmt, path in export_delta(args.delta, args.output_dir, base_model=args.base_model).items():
      print(f"{fmt}: {path}")
    return
  metrics = None
  if args.metrics:
    metrics = json.loads(fs.read_text(args.metrics))
  paths = export_prompt(args.prompt, args.output_dir, formats=[f for f in args.formats.split(",") if f],
                        step=args.step, base_model=args.base_model, task=args.task, init=args.init,
                        metrics=metrics)
  for fmt, path in paths.items():
    print(f"{fmt}: {path}")


if __name__ == "__main__":
  main()
