"""Export a trained prompt, or a trained delta, for use elsewhere.

  python -m prompt_tuning_jax.export --prompt=MODEL_DIR --output_dir=OUT [--step=N | --best] \
    [--formats=npy,numpy_checkpoint,peft,card] [--base_model=google/t5-base-lm-adapt]
    [--task=superglue_rte_taskless] [--metrics=METRICS.json]
  python -m prompt_tuning_jax.export --prompt=PROMPT.npy --output_dir=OUT [--step=N] ...
  python -m prompt_tuning_jax.export --delta=MODEL_DIR --output_dir=OUT [--base_model=...]

Writes OUT/prompt.npy; OUT/numpy_checkpoints/checkpoint_<step>/encoder.prompt.prompt.prompt
(the original release's layout); OUT/peft/ (a Hugging Face PEFT prompt-tuning adapter:
adapter_config.json + adapter_model.safetensors); OUT/model_card.json.

From a run folder (MODEL_DIR) it exports the final prompt of the finished run, --best the
best one so far, --step=N the one saved at global step N (the backbone checkpoint's step plus
the steps trained, as in MODEL_DIR/numpy_checkpoints/checkpoint_<N>); an unfinished run is
refused naming the steps it has. The adapter's `base_model_name_or_path` is the Hugging Face
id of the run's backbone where it is a known public checkpoint (the LM-adapted T5 1.1 ->
google/t5-<size>-lm-adapt) or a Hugging Face folder; --base_model overrides it. Other inputs
may be any format `prompt_files.load_prompt` reads (.npy, numpy_checkpoints file, PEFT dir,
T5X checkpoint); there --step only labels the export. With --delta, OUT/peft/ is the PEFT
adapter of a LoRA or PEFT-form prefix-tuning delta (`methods.files.save_peft`); other methods
keep their delta.safetensors.
"""
from __future__ import annotations

import json
from typing import Sequence

from prompt_tuning_jax import cli
from prompt_tuning_jax.checkpoints import fs
from prompt_tuning_jax.prompt import files as prompt_files
from prompt_tuning_jax.prompt import run_folder

FORMATS = ("npy", "numpy_checkpoint", "peft", "card")


def export_prompt(prompt_path: str, output_dir: str, *, formats: Sequence[str] = FORMATS, step: int = 0,
                  steps_trained: int | None = None, base_model: str | None = None, backbone: str = "",
                  task: str = "", init: str = "", metrics: dict | None = None,
                  num_heads: int | None = None, num_layers: int | None = None) -> dict[str, str]:
  """Write the prompt in each requested format; returns {format: path}.

  `step` is the global step (numpy checkpoint folder, model card), `steps_trained` the
  steps that led to it; `base_model` the adapter's `base_model_name_or_path`; `backbone`
  the card's description of the frozen model (default: `base_model`)."""
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
        fs.join(output_dir, "model_card.json"), backbone=backbone or base_model or "", task=task,
        prompt_length=prompt.shape[0], init=init, step=step, steps_trained=steps_trained, dev_metrics=metrics or {},
        extra={"token_dim": int(prompt.shape[1])}))
  return out


def export_run_prompt(model_dir: str, output_dir: str, *, step: int | None = None, best: bool = False,
                      base_model: str | None = None, **kwargs) -> tuple[run_folder.RunPrompt, dict[str, str]]:
  """A run folder's final (or best, or step-N) prompt through `export_prompt`, with its
  global step, steps trained and backbone; returns (the prompt chosen, {format: path})."""
  chosen = run_folder.find_prompt(model_dir, step=step, best=best)
  if base_model is None:
    base_model = run_folder.base_model_name(model_dir)
  kwargs.setdefault("backbone", run_folder.backbone_path(model_dir) or "")
  if not kwargs.get("task"):
    kwargs["task"] = run_folder.task_name(model_dir) or ""
  return chosen, export_prompt(chosen.path, output_dir, step=chosen.step or 0, steps_trained=chosen.steps_trained,
                               base_model=base_model, **kwargs)


def export_delta(delta_path: str, output_dir: str, *, base_model: str | None = None) -> dict[str, str]:
  """A trained delta (`delta.safetensors` or its folder) as a PEFT adapter in OUT/peft/; the
  adapter names the run's backbone (see `export_run_prompt`) unless `base_model` is given."""
  from prompt_tuning_jax.methods import files as delta_files  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.model.config import T5Config  # pylint: disable=g-import-not-at-top
  shape = delta_files.delta_backbone_shape(delta_path)
  if not shape:
    raise ValueError(f"{delta_path}: records no backbone shape (written by an older version); retrain or re-save it")
  method, leaves = delta_files.load_delta(delta_path)
  if base_model is None:
    model_dir = delta_path if fs.isdir(delta_path) else fs.dirname(fs.abspath(delta_path))
    base_model = run_folder.base_model_name(model_dir)
  path = delta_files.save_peft(fs.join(output_dir, "peft"), method, T5Config(**shape), leaves,
                               base_model_name_or_path=base_model)
  return {"peft": str(path)}


@cli.command
def main(argv: Sequence[str]) -> None:
  parser = cli.ArgumentParser(description=__doc__)
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--prompt", help="a run folder (MODEL_DIR) or a trained prompt (.npy, numpy checkpoint, "
                      "PEFT dir, T5X checkpoint)")
  source.add_argument("--delta", help="a trained delta: MODEL_DIR/delta.safetensors or MODEL_DIR (LoRA, prefix)")
  parser.add_argument("--output_dir", required=True)
  parser.add_argument("--formats", default=",".join(FORMATS))
  parser.add_argument("--step", type=int, default=None,
                      help="global step: of MODEL_DIR, the prompt saved at it; of a file, its label (default 0)")
  parser.add_argument("--best", action="store_true", help="of MODEL_DIR, the best prompt so far (best/prompt.npy)")
  parser.add_argument("--base_model", default=None,
                      help="HF name or path of the frozen T5, for the PEFT adapter (default: the run's backbone "
                      "where it is a public checkpoint or a Hugging Face folder)")
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
  common = dict(formats=[f for f in args.formats.split(",") if f], base_model=args.base_model, task=args.task,
                init=args.init, metrics=metrics)
  if run_folder.is_run_folder(args.prompt):
    chosen, paths = export_run_prompt(args.prompt, args.output_dir, step=args.step, best=args.best, **common)
    print(f"prompt: {chosen.describe()}")
  elif args.best:
    raise cli.UsageError(f"--best needs a run folder (MODEL_DIR); {args.prompt} is not one")
  else:
    paths = export_prompt(args.prompt, args.output_dir, step=args.step or 0, **common)
  for fmt, path in paths.items():
    print(f"{fmt}: {path}")


if __name__ == "__main__":
  raise SystemExit(main())
