"""docs/RESULTS.md, written from the grid and the published numbers, never by hand.

  python -m prompt_tuning_jax.paper.results_doc                      # rewrite docs/RESULTS.md
  python -m prompt_tuning_jax.paper.results_doc --root=/data/paper   # with our finished runs filled in
  python -m prompt_tuning_jax.paper.results_doc --check              # exit 1 if the file is stale

Without --root the tables hold the paper's printed numbers and empty cells for ours (an empty
root); the run counts come from the grid itself. tests/paper/test_results_doc.py fails when
the committed file differs from what this writes.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
from typing import Sequence

from prompt_tuning_jax.paper import domain_shift, report, results
from prompt_tuning_jax.paper import experiments as grid

DEFAULT_OUT = grid.REPO_ROOT / "docs" / "RESULTS.md"

HEADER = """# Results: reproducing Lester et al. (2021)

<!-- Written by `python -m prompt_tuning_jax.paper.results_doc`; do not edit by hand
     (tests/paper/test_results_doc.py fails when this file is stale). -->

Our numbers go in the empty cells as runs finish (`python -m prompt_tuning_jax.paper.results_doc
--root=ROOT` fills them from a run root); the paper's numbers sit beside them where the paper
prints them, exactly as printed. Figure 1 (all three curves, Model Tuning (Multi-task)
included) and Figure 3 are plots without printed values, so their tables have no paper column;
the only printed single-prompt scores per task are Table 3's (T5-XXL, mean of five prompts),
shown in the main table's `xxl (paper)` row. A value we derive from printed ones (the mean of a
multi-metric row, e.g. ReCoRD's (92.7 + 93.4) / 2 = 93.05) is never labelled as the paper's.
All scores are SuperGLUE (or GLUE, SQuAD/MRQA) **dev** scores in percent. The published
numbers, with their sources, are data in `prompt_tuning_jax/paper/published.py`.

## How to fill these tables

```bash
python -m prompt_tuning_jax.reproduce list                                   # experiments, run counts
python -m prompt_tuning_jax.reproduce --experiment=main --root=/data/paper --dry-run   # every command
python -m prompt_tuning_jax.reproduce --experiment=main --root=/data/paper --sizes=small,base
python -m prompt_tuning_jax.reproduce --experiment=main --root=gs://bucket/paper --launcher=tpu \\
    --tpu_args="--name my-v3-32 --zone europe-west4-a" --gin.NUM_PARTITIONS=16
python -m prompt_tuning_jax.reproduce aggregate --root=/data/paper           # -> /data/paper/results/
python -m prompt_tuning_jax.paper.results_doc --root=/data/paper             # -> docs/RESULTS.md
```

- Each run is one `python -m prompt_tuning_jax.train` command over the gin files in
  `gin/paper/` (each file's header names the figure or table it serves and quotes its source)
  plus a few `--gin.NAME=VALUE` bindings for what the grid varies; its MODEL_DIR is
  `ROOT/<method>/<frozen model>/<init>/p<P>/seed<k>/<size>/<task>`. A setting shared by two
  experiments is one run (the ablations' default points are the main runs).
- Runs go one after another. A finished run (done marker, or final step in `metrics.jsonl`
  plus `prompt.npy`) is skipped, an interrupted one resumes where it stopped; a run that needs
  another (Figure 3(d)'s prompts need their LM-adapted checkpoint) waits for it. Add
  `--keep_going` to continue past a failed run, and any `--gin.NAME=VALUE` to pass it to every run.
- `--launcher=tpu` queues the experiment on the TPU VM through `run_tpu.sh launch`
  (`run_tpu.sh ... logs --log logs/reproduce_<experiment>.log` follows it). Use a `gs://` root there.
- `aggregate` writes, per experiment, `<name>.md` (the tables below, filled), `<name>.csv`,
  `<name>_runs.csv` (one row per run: status, selected step and score) and the plots.
- Data: SuperGLUE from TFDS `super_glue/*:1.0.2` (or `PTJ_SUPERGLUE_DIR`), GLUE from TFDS
  `glue/{qqp,mrpc}:2.0.0`, SQuAD from TFDS `squad/v1.1:3.0.0` (or `PTJ_SQUAD_DIR` with the
  official `{train,dev}-v1.1.json`), the MRQA out-of-domain dev files from TFDS `mrqa` (or
  `PTJ_MRQA_DIR`), DPR from TFDS `definite_pronoun_resolution:1.1.0`, C4 from TFDS
  `c4/en:2.2.0`; prepared beforehand when the machine is offline. Frozen models: the public
  T5X checkpoints named in `gin/models/` (LM-adapted, 100K) and
  `gin/paper/t5_1_1_span_corruption_*.gin` (the public T5.1.1, `checkpoint_1000000`).
"""

SETTINGS = """## How a number is read

- Settings: the original release's **effective** settings (its prompt fine-tuning gin includes
  T5X's `finetune.gin` last, so finetune.gin's values win) and the paper's text; each gin
  file's header names its source. Frozen LM-adapted T5 1.1, taskless inputs, P = 100,
  class-label init, Adafactor lr 0.3, batch 32, 30k steps, training inputs 512 and targets 8
  (ReCoRD 16, below).
- A run's score is its dev eval with the best early-stopping value, which is the mean of the
  task's metrics (the paper's rule for multi-metric tasks: CB macro-F1 and accuracy, MultiRC
  F1a and EM, ReCoRD F1 and EM; QQP/MRPC accuracy and F1); SQuAD selects on F1 (footnote 11);
  other tasks accuracy. A task's score is the mean of its SuperGLUE metrics at that eval; the
  SuperGLUE score the mean over the eight tasks. The multi-task baseline reads each task at
  its own best eval of the one run (per-task selection). Each point has 3 seeds (`--seeds`):
  cells are mean ± std over the finished seeds, plots draw a ±1 std band. Cells averaging
  fewer tasks say `(k/8)`.

### The original's effective settings, and where they come from

| setting | value (default) | source | switch |
|---|---|---|---|
| dropout in the frozen model while prompt tuning | 0.1, on in train steps | T5X `finetune.gin` `DROPOUT_RATE = 0.1`; T5X enables dropout in training | `DROPOUT_RATE`, `LossConfig.enable_dropout` |
| attention dropout | one mask per [q, k], shared over batch and heads | Flaxformer `broadcast_dropout=True` | `T5Config.broadcast_attention_dropout` |
| eval inputs | untruncated | T5X `infer_eval` with `task_feature_lengths=None` | `EVAL_INPUT_LENGTH` (`DataConfig.eval_inputs_length`) |
| eval decode length | the split's longest target | same | `EVAL_TARGET_LENGTH` (`DataConfig.eval_targets_length`) |
| eval batches | sorted by input length, cut to power-of-two buckets (memory per batch, not per split) | ours (bounded memory) | none |
| selection | mean of the task's metrics; SQuAD F1 | paper, section 3 and footnote 11 | `EARLY_STOPPING_METRIC` |
| checkpoints | every 1000 steps, numpy prompt at every save, at the global step | original release | `CHECKPOINT_PERIOD` |
| Adafactor step | continues from the checkpoint's step (1.1M for lm100k, 1M span corruption), T5X and HF copies alike | T5X restores the step | `OptimConfig.step_offset` (model gin files) |
| seeds | 3 per point | paper (mean ± std of 3 runs) | `reproduce --seeds` |
| init words, ReCoRD / WSC | "commonsense", "reasoning", "reading", "comprehension" / "commonsense", "pronoun", "resolution", one row per word | paper footnote 7 | `CLASS_LABELS` |
| model-tuning baselines | the public T5.1.1 checkpoints (span corruption, `checkpoint_1000000`), lr 1e-3, parameter scaling, Adafactor states restored, 128 x 512 = 2^16 tokens per batch packed (targets 128), dropout 0.1 | section 3.1 ("we tune the public T5.1.1 checkpoints"), footnote 3 | `paper/model_tuning.gin` |
| multi-task baseline | T5's SuperGLUE mixture with task names + DPR, examples-proportional, 2048 x 512 = 2^20 tokens per batch, per-task selection | section 3.1, footnote 4 | `paper/multitask_model_tuning.gin` |
| SQuAD / MRQA text | T5's `squad`: punctuation padded, whitespace collapsed, in inputs and answers | appendix A.3 (T5's SQuAD preprocessing) | none |
| WSC scoring | T5's `wsc_simple`: an empty or determiner-only referent is -1, always wrong, counted in `invalid_rate` | T5 | none |
| label matching | exact string match, no stripping | T5 `string_label_to_class_id` | none |

Choices where the sources are silent: the model-tuning packed target length (128); ReCoRD's
training targets of 16 slots (the paper gives no length; in the bundled samples 4 of the 153
gold answers need more than 8 slots with EOS, the longest 10 pieces + EOS; the full training
split was not measured here); SQuAD's training targets of 32; the multi-task baseline's steps (30k, as the others);
the LM adaptation's batch (2^16 tokens, T5's pre-training batch), learning rate (1e-3, T5's
rsqrt schedule at step 1M) and dropout (none, as T5.1.1's pre-training). Hugging Face
backbones carry no optimizer state, so their model tuning starts Adafactor fresh (logged);
square weights' factored Adafactor statistics are matched by T5X's own names; a prompt
shorter than the label list (P = 1 on CB) starts from the first P labels, as the original
code. Figure 3(c)'s "+ Sentinel" puts `<extra_id_0>` before every target (the paper: "a
sentinel is added to downstream task targets") and strips it from outputs before scoring.
Metrics logs keep the run's own step; `best/best.json` and the numpy checkpoints carry the
global step too.

### Published checkpoints, and the ones the kit makes

Public (t5x `docs/models.md`): the T5.1.1 span-corruption checkpoints
(`gs://t5-data/pretrained_models/t5x/t5_1_1_<size>/checkpoint_1000000`, Figure 3(d)'s 0K) and
the LM-adapted ones at 100K steps only (`t5_1_1_lm100k_<size>/checkpoint_1100000`). The paper's
10K and 50K adaptation lengths were not released: the `lm_adaptation` experiment makes them
(`python -m prompt_tuning_jax.paper.lm_adaptation`, `gin/paper/lm_adaptation.gin`: the
span-corruption checkpoint continued with T5's prefix-LM objective on C4 for N steps, every
weight trainable, written as `ROOT/lm_adaptation/<N>k/<size>/t5x/checkpoint_<1M + N>`), and
its prompt runs wait for them.

### SuperGLUE test submissions

`python -m prompt_tuning_jax.eval ... --gin.MIXTURE_OR_TASK_NAME=superglue_submission_taskless
--split=test --output_dir=OUT --prompt=...` writes `OUT/submission/<Task>.jsonl` for BoolQ, CB,
COPA, MultiRC, ReCoRD, RTE, WiC, WSC, AX-b and AX-g in the leaderboard's layout (ReCoRD's `idx`
a string, as jiant's writer) and `OUT/submission/superglue.zip` holding them under those names,
the one upload the leaderboard takes; every predictions row carries its source `idx`, and
AX-g's summary has the gender-parity score when the rows carry `pair_id` (the official AX-g
file does; TFDS drops it).
"""

FOOTER = """## Section 7: what the prompt tokens are near

`python -m prompt_tuning_jax.inspect_prompt --prompt=P --checkpoint=C --k=5 --labels=a,b` prints
each prompt token's nearest vocabulary pieces by cosine similarity, the share of class-label
pieces among them, and writes `neighbours.json` and `neighbours.png`.
"""

# (experiment, section title) in the order the document shows them
SECTIONS = (
    ("main", "Figure 1: prompt tuning (`main`)"),
    ("model_tuning", "Figure 1: model tuning (`model_tuning`)"),
    ("multitask_model_tuning", "Figure 1: model tuning, multi-task (`multitask_model_tuning`)"),
    ("prompt_length", "Figure 3(a): prompt length (`prompt_length`), SuperGLUE score"),
    ("init", "Figure 3(b): prompt initialization (`init`), SuperGLUE score"),
    ("frozen_model", "Figure 3(c): pre-training objective of the frozen model (`frozen_model`), SuperGLUE score"),
    ("lm_adaptation", "Figure 3(d): LM-adaptation steps (`lm_adaptation`), SuperGLUE score"),
    ("ensemble", "Table 3: five-prompt ensemble on T5-XXL (`ensemble`)"),
    ("transfer", "Table 2: zero-shot transfer between paraphrase tasks (`transfer`)"),
    ("domain_shift", "Table 1: domain shift, train on SQuAD (`domain_shift`), F1"),
)


def _counts(root: str) -> str:
  lines = ["| experiment | reproduces | runs (`reproduce --dry-run`) |", "|---|---|---:|"]
  for name, exp in grid.EXPERIMENTS.items():
    if exp.hidden:
      continue
    runs = grid.expand(exp, root)
    train = [r for r in runs if r.kind == "train"]
    extra = [f"{len(runs) - len(train)} evals"] if len(train) < len(runs) else []
    made = sum(r.setting.method == "lm_adaptation" for r in train)
    extra += [f"{made} of them LM adaptations"] if made else []
    lines.append(f"| `{name}` | {exp.reproduces} | {len(runs)}{' (' + ', '.join(extra) + ')' if extra else ''} |")
  return "\n".join(lines) + "\n"


def _table(name: str, root: str) -> results.Table:
  exp = grid.EXPERIMENTS[name]
  runs = grid.expand(exp, root)
  sizes, tasks = exp.sizes, exp.tasks
  if name in ("main", "model_tuning", "multitask_model_tuning"):
    return report.per_task_table(name, runs, sizes, tasks)
  if name == "ensemble":
    return report.ensemble_table(runs, sizes, tasks)
  if name == "transfer":
    return report.transfer_table(runs, sizes, tasks)
  if name == "domain_shift":
    return domain_shift.table(runs, sizes)
  return report.ablation_table(name, runs, sizes, tasks)


def render(root: str | None = None) -> str:
  """The whole document; `root`: a run root whose finished runs fill our cells (None: empty)."""
  with tempfile.TemporaryDirectory() as empty:
    root = root or empty
    parts = [HEADER, "\n" + _counts(root), "\n" + SETTINGS]
    for name, title in SECTIONS:
      table = _table(name, root)
      body = table.markdown().split("\n", 2)[2]  # drop the table's own '### title' line
      parts.append(f"\n## {title}\n\n{body}\n")
    parts.append("\n" + FOOTER)
  return "".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m prompt_tuning_jax.paper.results_doc", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default=str(DEFAULT_OUT), help="the file to write (default docs/RESULTS.md)")
  parser.add_argument("--root", default=None, help="a run root whose finished runs fill our cells")
  parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if --out differs")
  args = parser.parse_args(argv)
  text = render(args.root)
  out = pathlib.Path(args.out)
  if args.check:
    stale = not out.exists() or out.read_text(encoding="utf-8") != text
    print(f"{out}: {'stale, rerun python -m prompt_tuning_jax.paper.results_doc' if stale else 'up to date'}")
    return 1 if stale else 0
  out.write_text(text, encoding="utf-8")
  print(f"wrote {out} ({len(text.splitlines())} lines)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
