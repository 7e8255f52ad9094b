"""What an evaluation needs, as frozen data: gin binds it (gin/runs/eval.gin), the
evaluators and the eval/infer commands read it."""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

from prompt_tuning_jax.parallel import sharding

from prompt_tuning_jax.text import data
from prompt_tuning_jax.model.config import T5Config
from prompt_tuning_jax.evaluators.predictor import check_mode
from prompt_tuning_jax.prompt import wrapper


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The frozen model and the prompts to run on it (eval, infer, score).

  checkpoint_path: a T5X checkpoint, Hugging Face T5 folder or 'random:<seed>'.
  prompts: --prompt values: PATH or NAME=PATH (.npy, PEFT folder, T5X checkpoint);
    several form a prompt bank [N, P, d]; none runs the plain model.
  """
  t5: T5Config = T5Config()
  checkpoint_path: str | None = None
  prompts: tuple[str, ...] = ()
  delta: str | None = None  # a trained delta method (delta.safetensors or its run folder), composed on top
  prompt: wrapper.PromptConfig = wrapper.PromptConfig()  # combination etc.; length comes from the files
  partition: sharding.PartitionConfig = sharding.PartitionConfig()  # the mesh, as training's (NUM_PARTITIONS)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """How to evaluate; `model` and `data` say what (the eval command), while the training
  hook passes its own model and data and reads only the rest.

  batch_size / split / max_decode_length default to the DataConfig's batch size, eval
  split and target length; labels: explicit rank candidates per task name.
  """
  mode: str = "greedy"
  batch_size: int | None = None
  split: str | None = None
  max_decode_length: int | None = None
  num_beams: int = 4
  alpha: float = 0.6
  labels: Mapping[str, Sequence[str]] | None = None
  output_dir: str | None = None
  model: ModelConfig = ModelConfig()
  data: data.DataConfig = data.DataConfig()

  def __post_init__(self):
    check_mode(self.mode)
    if self.num_beams < 1:
      raise ValueError(f"EvalConfig.num_beams must be >= 1, got {self.num_beams}")
    if self.batch_size is not None and self.batch_size < 1:
      raise ValueError(f"EvalConfig.batch_size must be >= 1, got {self.batch_size}")

  def task_labels(self, task_name: str) -> Sequence[str] | None:
    return (self.labels or {}).get(task_name)
