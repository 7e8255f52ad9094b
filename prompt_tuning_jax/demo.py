"""The embedded demo: prompt tuning doing what the paper claims, on 2 CPU cores, offline.

A tiny T5 1.1 (bundled in T5X format, made by scripts/make_demo_model.py with this
project's model-tuning code) was trained on three tasks that share their inputs (a row of
five words) and differ only in a text prefix: `first word:`, `middle word:`, `last word:`.
Here it is frozen and the prefix is removed ("taskless", as in the paper): the model can no
longer tell which word is asked for. A soft prompt is then trained in its place; only the
prompt's P x 64 numbers change.

  python -m prompt_tuning_jax.demo [--model_dir runs/demo] [--steps 200] [--prompt_length 10] [--ablations]

Prints the before/after table, writes learning_curve.png and exports the best prompt to
MODEL_DIR/export/ (.npy, the original release's numpy_checkpoints layout, a PEFT adapter and a
model card, all at the global step: the bundled checkpoint's 1500 plus the steps trained), with
the frozen model converted to Hugging Face format beside it (export/base_model/, named by the
adapter) so that `AutoPeftModelForSeq2SeqLM.from_pretrained("MODEL_DIR/export/peft")` loads it.
"""
from __future__ import annotations

import json
import os
import pathlib
import time
from typing import TYPE_CHECKING, Sequence

from prompt_tuning_jax import cli

if TYPE_CHECKING:  # the library loads inside the functions, so `--help` needs no jax
  from prompt_tuning_jax.prompt import initializers
  from prompt_tuning_jax.trainer import loop

DEMO_CHECKPOINT = pathlib.Path(__file__).parent / "assets" / "demo_model" / "checkpoint_1500"
TASK = "demo_last_word_taskless"
LENGTHS = {"inputs": 16, "targets": 4}


def demo_config(model_dir: str, *, steps: int, prompt_length: int, init: initializers.Initializer,
                seed: int = 0) -> loop.TrainConfig:
  """Prompt tuning as in the paper (Adafactor, lr 0.3), scaled to the tiny model."""
  from prompt_tuning_jax.evaluators import task_evaluator  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.model.config import SIZES  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.prompt import wrapper  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.text import data  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.trainer import loop, optim  # pylint: disable=g-import-not-at-top
  return loop.TrainConfig(
      model_dir=model_dir, initial_checkpoint_path=str(DEMO_CHECKPOINT), t5=SIZES["demo"],
      data=data.DataConfig(TASK, "prompt_tuning_jax.tasks.demo", LENGTHS, batch_size=32, seed=seed),
      prompt=wrapper.PromptConfig(length=prompt_length), prompt_init=init, optim=optim.PROMPT_TUNING,
      train_steps=steps, eval_period=max(steps // 20, 1), checkpoint_period=steps, log_period=10,
      evaluator=task_evaluator.make_train_evaluator, early_stopping=loop.EarlyStopping(metric="accuracy"),
      seed=seed)


def frozen_scores() -> dict[str, float]:
  """Accuracy of the frozen model with no prompt: told the task (prefix) and taskless."""
  from prompt_tuning_jax.checkpoints import backbone  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.evaluators import task_evaluator  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.evaluators.config import EvalConfig  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.model import t5  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.model.config import SIZES  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.text import data  # pylint: disable=g-import-not-at-top
  params, _ = backbone.load_frozen(str(DEMO_CHECKPOINT), SIZES["demo"])
  model = t5.Transformer(SIZES["demo"])
  out = {}
  for name in ("demo_last_word", TASK):
    data_config = data.DataConfig(name, "prompt_tuning_jax.tasks.demo", LENGTHS, batch_size=64)
    evaluator = task_evaluator.Evaluator(data_config, model, EvalConfig())
    out[name] = evaluator(params)["accuracy"]
  return out


def _hf_backbone(directory: str) -> str:
  """The bundled frozen model in Hugging Face format (this project's converter), for the
  PEFT adapter to name; returns its absolute path."""
  import jax  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.checkpoints import backbone, hf  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.model.config import SIZES  # pylint: disable=g-import-not-at-top
  params, _ = backbone.load_frozen(str(DEMO_CHECKPOINT), SIZES["demo"])
  return os.path.abspath(hf.save_hf_checkpoint(directory, jax.device_get(params), SIZES["demo"]))


def plot_learning_curve(history: list[dict], path: str, baseline: float) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(5, 3.2))
  ax.plot([h["step"] for h in history], [h["accuracy"] for h in history], marker="o", label="with learned prompt")
  ax.axhline(baseline, color="gray", linestyle="--", label="frozen model, no prompt")
  ax.set_xlabel("training step")
  ax.set_ylabel(f"{TASK} accuracy (%)")
  ax.set_ylim(0, 102)
  ax.legend(loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


@cli.command
def main(argv: Sequence[str]) -> dict:
  parser = cli.ArgumentParser(description=__doc__)
  parser.add_argument("--model_dir", default=os.path.join("runs", "demo"))
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--prompt_length", type=int, default=10)
  parser.add_argument("--ablations", action="store_true",
                      help="also run init and prompt-length ablations in miniature (ablations.png)")
  args = parser.parse_args(argv)
  from prompt_tuning_jax import export  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.model.config import SIZES  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.prompt import initializers  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.text import quiet  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.trainer import loop  # pylint: disable=g-import-not-at-top
  quiet.start_jax_backends()
  start = time.time()
  before = frozen_scores()
  cfg = demo_config(args.model_dir, steps=args.steps, prompt_length=args.prompt_length,
                    init=initializers.sampled_vocab(population_size=5000))
  result = loop.train(cfg)
  after = max(h["accuracy"] for h in result.history)
  plot_learning_curve(result.history, os.path.join(args.model_dir, "learning_curve.png"), before[TASK])
  export_dir = os.path.join(args.model_dir, "export")
  base_model = _hf_backbone(os.path.join(export_dir, "base_model"))
  _, exported = export.export_run_prompt(
      args.model_dir, export_dir, best=True, base_model=base_model,
      backbone=f"prompt_tuning_jax demo T5 (assets/demo_model/{DEMO_CHECKPOINT.name})", task=TASK,
      init="sampled_vocab(5000)", metrics={"accuracy": after}, num_heads=SIZES["demo"].num_heads,
      num_layers=SIZES["demo"].num_decoder_layers)
  exported["base_model"] = base_model
  summary = {"frozen_told_the_task": before["demo_last_word"], "frozen_taskless_no_prompt": before[TASK],
             "frozen_taskless_with_learned_prompt": after, "trainable_params": args.prompt_length * SIZES["demo"].emb_dim,
             "steps": result.step, "wall_seconds": round(time.time() - start, 1)}
  if args.ablations:
    summary["ablations"] = run_ablations(args.model_dir, steps=60)
  print("\n" + _table(summary, exported, args.model_dir))
  with open(os.path.join(args.model_dir, "demo_summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  return summary


def run_ablations(model_dir: str, steps: int) -> dict:
  """The paper's section-3 ablations in miniature: prompt init and prompt length."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from prompt_tuning_jax.prompt import initializers  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.tasks import demo as demo_tasks
  from prompt_tuning_jax.text import vocab  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.trainer import loop  # pylint: disable=g-import-not-at-top
  vocabulary = vocab.load_vocabulary()
  words = list(demo_tasks.WORDS)
  inits = {"random uniform [-0.5, 0.5]": initializers.uniform_symmetric(0.5),
           "sampled vocab (5,000)": initializers.sampled_vocab(5000),
           "class labels (first 10 words)": initializers.class_labels(vocab.label_token_ids(vocabulary, words[:10]))}
  results: dict = {"init": {}, "length": {}}
  fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
  for name, init in inits.items():
    run = loop.train(demo_config(os.path.join(model_dir, "ablations", "init_" + name.split()[0]),
                                     steps=steps, prompt_length=10, init=init))
    results["init"][name] = [(h["step"], h["accuracy"]) for h in run.history]
    left.plot(*zip(*results["init"][name]), marker=".", label=name)
  for length in (1, 3, 10, 30):
    run = loop.train(demo_config(os.path.join(model_dir, "ablations", f"length_{length}"), steps=steps,
                                     prompt_length=length, init=initializers.sampled_vocab(5000)))
    results["length"][length] = max(h["accuracy"] for h in run.history)
  right.plot(list(results["length"]), list(results["length"].values()), marker="o")
  left.set(xlabel="training step", ylabel="accuracy (%)", title="prompt initialization (P = 10)", ylim=(0, 102))
  right.set(xlabel="prompt length P", ylabel="best accuracy (%)", title="prompt length", xscale="log", ylim=(0, 102))
  left.legend(fontsize=7, loc="lower right")
  fig.tight_layout()
  fig.savefig(os.path.join(model_dir, "ablations.png"), dpi=120)
  plt.close(fig)
  return results


def _table(s: dict, exported: dict, model_dir: str) -> str:
  rows = [("frozen model, told the task (`last word:` prefix)", s["frozen_told_the_task"]),
          ("frozen model, prefix removed, no prompt", s["frozen_taskless_no_prompt"]),
          (f"frozen model, prefix removed, learned prompt ({s['trainable_params']} params)",
           s["frozen_taskless_with_learned_prompt"])]
  lines = ["| setting | last-word accuracy (%) |", "|---|---:|"]
  lines += [f"| {name} | {value:.1f} |" for name, value in rows]
  lines.append(f"\n{s['steps']} prompt-tuning steps, {s['wall_seconds']} s in all. "
               f"Learning curve: {os.path.join(model_dir, 'learning_curve.png')}")
  lines += [f"exported {fmt}: {path}" for fmt, path in exported.items()]
  return "\n".join(lines)


if __name__ == "__main__":
  raise SystemExit(main())
