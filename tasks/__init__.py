"""SeqIO SuperGLUE tasks; importing this package registers them all.

    import seqio, tasks
    ds = seqio.get_dataset("superglue_rte_taskless", task_feature_lengths=...,
                           dataset_split="validation", ...)

Registered names (see `tasks.superglue.register_superglue`):
  superglue_<task>, superglue_<task>_taskless            <task> in TASKS
  superglue_<task>_sample, superglue_<task>_sample_taskless  (bundled rows)
  mixtures: superglue, superglue_taskless, superglue_sample,
            superglue_sample_taskless
Data: TFDS by default, or a local official-layout folder via
`tasks.set_data_dir(path)` / gin `superglue_data_dir.path` / $PTJ_SUPERGLUE_DIR
(see `tasks.sources`).
"""
from __future__ import annotations

import functools
from pathlib import Path

import seqio

import prompt_tuning_jax
from prompt_tuning_jax.text import vocab as _vocab
from prompt_tuning_jax.tasks import sources, superglue
from prompt_tuning_jax.tasks.sources import (
  SuperGlueDataError,
  get_data_dir,
  set_data_dir,
  set_tfds_data_dir,
  set_tfds_download,
)
from prompt_tuning_jax.tasks.superglue import (
  LABEL_NAMES,
  SAMPLE_TASKS,
  TASKS,
  mixture_name,
  task_name,
  text_to_label,
)

# The bundled 32 + 32 rows per task, located through the installed package.
SAMPLES_DIR = (Path(prompt_tuning_jax.__file__).resolve().parent / "assets" /
               "superglue_samples")


@functools.lru_cache(maxsize=None)
def get_vocabulary() -> seqio.SentencePieceVocabulary:
  """The bundled T5 SentencePiece vocabulary with 100 extra ids (32,100 ids)."""
  return _vocab.load_vocabulary()


superglue.register_superglue(get_vocabulary(), str(SAMPLES_DIR))

# The other task families register on import too, so MIXTURE_OR_TASK_MODULE="prompt_tuning_jax.tasks" finds them.
from prompt_tuning_jax.tasks import demo, glue, lm_adaptation, mrqa  # noqa: E402,F401
