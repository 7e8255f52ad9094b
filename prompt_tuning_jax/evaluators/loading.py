"""The frozen model plus prompts, loaded from a `ModelConfig`: shared by eval, infer and score."""
from __future__ import annotations

import dataclasses

from prompt_tuning_jax.model.config import T5Config
from prompt_tuning_jax.evaluators import ensemble, sharded
from prompt_tuning_jax.evaluators.config import ModelConfig
from prompt_tuning_jax.model import t5
from prompt_tuning_jax.prompt import wrapper


@dataclasses.dataclass
class LoadedModel:
  """A model ready to run: `params` hold the frozen weights and the prompt bank [N, P, d]."""
  t5_config: T5Config
  model: t5.Transformer
  params: dict
  names: list[str]      # one per prompt (NAME of NAME=PATH, else the path); [] without prompts
  num_prompts: int


def load_model(cfg: ModelConfig, placement: sharded.Placement | None = None) -> LoadedModel:
  """Frozen weights from `cfg.checkpoint_path` (read straight into their shards on
  `placement`'s mesh) + the prompts -> a model that runs them."""
  if not cfg.checkpoint_path:
    raise SystemExit("set --gin.CHECKPOINT_PATH=... (a T5X checkpoint, HF T5 folder or 'random:<seed>')")
  frozen, _ = sharded.load_backbone(cfg.checkpoint_path, cfg.t5, placement)
  names, bank = ensemble.load_bank(list(cfg.prompts), cfg.t5.emb_dim)
  if bank is None:
    model, params, num = wrapper.make_model(cfg.t5, None), frozen, 0
  else:
    model, params, num = ensemble.bank_model(cfg.t5, bank, cfg.prompt), ensemble.bank_params(frozen, bank), bank.shape[0]
  if cfg.delta:
    from prompt_tuning_jax.methods import files as delta_files  # pylint: disable=g-import-not-at-top
    model, params = delta_files.apply_delta(model, params, cfg.delta)
  return LoadedModel(cfg.t5, model, params, names, num)
