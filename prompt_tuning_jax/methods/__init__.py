"""Delta-tuning methods attached to the untouched T5 by composition.

A method is a frozen dataclass (`base.DeltaMethod`) that gin binds (`gin/methods/*.gin`)
and the trainer receives as `TrainConfig.method`. It may give the model a flax method
interceptor (`t5.Transformer.interceptor`) that adds its parameters to, and transforms
the calls of, the layers it targets (found by type and name), and it names its
trainable parameters by regex, so the one label function in `trainer/optim.py` trains
them and freezes the rest. `METHODS` maps the names used in files and flags to classes.
"""
from prompt_tuning_jax.methods.adapters import Adapters
from prompt_tuning_jax.methods.base import DeltaMethod, add_delta_params, backbone_only, make_model, trainable_patterns
from prompt_tuning_jax.methods.bitfit import BitFit
from prompt_tuning_jax.methods.lora import LoRA
from prompt_tuning_jax.methods.prefix import PrefixTuning
from prompt_tuning_jax.methods.said import IntrinsicSAID
from prompt_tuning_jax.methods.specification import LastLayers, LayerNormScales

METHODS = {cls.name: cls for cls in (LoRA, Adapters, BitFit, PrefixTuning, IntrinsicSAID, LastLayers,
                                     LayerNormScales)}

__all__ = ["METHODS", "Adapters", "BitFit", "DeltaMethod", "IntrinsicSAID", "LastLayers", "LayerNormScales",
           "LoRA", "PrefixTuning", "add_delta_params", "backbone_only", "make_model", "trainable_patterns"]
