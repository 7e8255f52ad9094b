"""Memory planner against hand computations, JAX's own residual set and optax's state."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import pytest

# Private, but the only API that lists what jax.vjp keeps; pinned jax (0.10.2).
from jax._src.ad_checkpoint import saved_residuals

from prompt_tuning_jax import plan

from prompt_tuning_jax.parallel import sharding

from prompt_tuning_jax.planning import memory_plan
from prompt_tuning_jax.model.config import SIZES, T5Config
from prompt_tuning_jax.prompt import wrapper

GIB = 1024 ** 3
PAPER = memory_plan.RunShape(batch_size=32, input_length=512, target_length=8, prompt_length=100,
                          activation_dtype="bfloat16")


def test_topologies():
  v3 = memory_plan.parse_topology("v3-32")  # 32 cores = 16 chips, one jax device per core
  assert (v3.num_devices, v3.device_memory_gib, v3.num_hosts) == (32, 16.0, 4)
  v4 = memory_plan.parse_topology("v4-64")  # 64 TensorCores = 32 megacore chips
  assert (v4.num_devices, v4.device_memory_gib, v4.num_hosts) == (32, 32.0, 8)
  assert memory_plan.parse_topology("v2-8").device_memory_gib == 8.0
  assert memory_plan.parse_topology("v5p-8").num_devices == 4
  assert memory_plan.parse_topology("v5e-16").num_devices == 16
  gpu = memory_plan.parse_topology("8xH100")
  assert (gpu.num_devices, gpu.num_hosts, gpu.usable_fraction) == (8, 1, 0.75)
  with pytest.raises(ValueError, match="--topology 'v9-8' not understood"):
    memory_plan.parse_topology("v9-8")
  with pytest.raises(ValueError, match="multiple of 2"):
    memory_plan.parse_topology("v4-3")


def test_adafactor_state_matches_optax():
  shapes = {"prompt": (100, 4096), "wi": (4096, 10240), "scale": (4096,), "rel": (64, 32)}
  state = jax.eval_shape(optax.adafactor(0.3).init, {k: jax.ShapeDtypeStruct(s, jnp.float32)
                                                      for k, s in shapes.items()})[0]
  for name, shape in shapes.items():
    # optax keeps (1,)-shaped placeholders for the unused parts; drop them.
    parts = [state.v_row[name], state.v_col[name], state.v[name]]
    numel = sum(p.size for p in parts if p.shape != (1,))
    assert memory_plan.adafactor_state_numel(shape) == numel, name
  assert memory_plan.adafactor_state_numel((4096, 10240)) == 4096 + 10240
  assert memory_plan.adafactor_state_numel((200, 4096), factored=False) == 200 * 4096
  assert memory_plan.adafactor_state_numel((100, 4096), momentum=True) == 2 * 100 * 4096


def test_xxl_on_v3_32_by_hand():
  p = memory_plan.plan_memory(SIZES["xxl"], memory_plan.parse_topology("v3-32"), PAPER,
                           sharding.PartitionConfig(num_partitions=16))
  assert p.mesh == (2, 16)
  # FACTS.md: 11,135,336,448 params with a 1-token prompt -> 11,135,332,352 frozen.
  # Replicated (norm scales): encoder 24*2*4096 + 4096, decoder 24*3*4096 + 4096.
  replicated = (24 * 2 * 4096 + 4096) + (24 * 3 * 4096 + 4096)
  assert replicated == 499_712
  sharded = 11_135_332_352 - replicated  # every other dim splits evenly 16 ways
  assert p.frozen_params == (sharded // 16 + replicated) * 4 == 2_785_707_008
  # Prompt [100, 4096] float32, replicated; its gradient; unfactored Adafactor v.
  assert p.trainable_params == p.gradients == p.optimizer_state == 100 * 4096 * 4
  # Activations: b = 32/2, L = 612, T = 8, heads 64/16 = 4 (hk = 256), d_ff 10240/16,
  # vocab 32128/16, bfloat16 (2 bytes), softmax in float32 (4 bytes).
  enc = 2 * (2 * 16 * 612 * 4096 + 3 * 16 * 612 * 256 + 2 * 16 * 612 * 640) + 4 * 16 * 4 * 612 * 612
  dec = (2 * (3 * 16 * 8 * 4096 + 4 * 16 * 8 * 256 + 2 * 16 * 612 * 256 + 2 * 16 * 8 * 640)
         + 4 * 16 * 4 * (8 * 8 + 8 * 612))
  once = 2 * (16 * 612 * 4096 + 16 * 8 * 4096) + 4 * 16 * 8 * 2008
  assert p.activations == 24 * enc + 24 * dec + once
  assert p.transient == enc + 4 * 16 * 8 * 2008 + 4 * 16 * 4 * 612 * 612
  assert p.usable == int(16 * GIB * 0.9)
  assert p.fits and 3 * GIB < p.headroom < 6 * GIB
  # What the original XXL demo used: model_parallel_submesh (4, 4, 1, 2), i.e. all 32
  # cores model-parallel, data 1. Also fits, with less headroom.
  q = memory_plan.plan_memory(SIZES["xxl"], memory_plan.parse_topology("v3-32"), PAPER,
                           sharding.PartitionConfig(model_parallel_submesh=(4, 4, 1, 2)))
  assert q.mesh == (1, 32) and q.fits and q.headroom < p.headroom
  # Without XLA fusion the same run would not fit: the planner says so in the notes.
  assert p.total - p.activations + p.activations_unfused > p.usable


def test_xxl_on_one_16gib_device_does_not_fit():
  one = memory_plan.Topology("1x16GiB", 1, 16.0, "device", 1, 0.9)
  p = memory_plan.plan_memory(SIZES["xxl"], one, PAPER)
  assert p.frozen_params == 11_135_332_352 * 4
  assert not p.fits and "DOES NOT FIT" in memory_plan.format_plan(p, "xxl", PAPER)


def test_small_by_hand():
  one = memory_plan.Topology("1x16GiB", 1, 16.0, "device", 1, 0.9)
  p = memory_plan.plan_memory(SIZES["small"], one, PAPER)
  assert p.frozen_params == 76_961_152 * 4  # FACTS.md 76,961,664 minus the 512-d prompt row
  assert p.trainable_params == 100 * 512 * 4
  # Small 2-way model parallel on a v3-8: heads 6/2, d_ff 1024/2, vocab 32128/2.
  replicated = (8 * 2 * 512 + 512) + (8 * 3 * 512 + 512)
  q = memory_plan.plan_memory(SIZES["small"], memory_plan.parse_topology("v3-8"), PAPER,
                           sharding.PartitionConfig(num_partitions=2))
  assert q.frozen_params == ((76_961_152 - replicated) // 2 + replicated) * 4
  # 2-D parameter partitioning also splits 'embed' over data=4: matrices 8 ways, norm
  # scales [d] 4 ways, relpos tables [heads, buckets] (2 x 6 x 32) 2 ways.
  r = memory_plan.plan_memory(SIZES["small"], memory_plan.parse_topology("v3-8"), PAPER,
                           sharding.PartitionConfig(num_partitions=2, parameter_partitioning_dims=2))
  relpos = 2 * 6 * 32
  assert r.frozen_params == ((76_961_152 - replicated - relpos) // 8 + replicated // 4 + relpos // 2) * 4
  model = memory_plan.plan_memory(SIZES["small"], one, memory_plan.RunShape(mode="model", prompt_length=0))
  assert model.frozen_params == 0
  assert model.trainable_params == model.gradients == 76_961_152 * 4
  assert model.optimizer_state < model.trainable_params / 50  # factored second moments


@pytest.mark.parametrize("acts,tied", [(("gelu", "linear"), False), (("relu",), True)])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("mode", ["prompt", "model"])
def test_unfused_estimate_matches_jax_residuals(acts, tied, dtype, mode):
  cfg = T5Config(vocab_size=128, emb_dim=32, num_heads=4, head_dim=8, mlp_dim=64, mlp_activations=acts,
                 logits_via_embedding=tied, num_encoder_layers=2, num_decoder_layers=2, dtype=dtype)
  b, length, targets, plen = 2, 24, 6, 8
  model = wrapper.make_model(cfg, wrapper.PromptConfig(length=plen))
  tok = jnp.ones((1, 2), jnp.int32)
  shapes = nn.unbox(jax.eval_shape(lambda r: model.init(r, tok, tok, tok), jax.random.PRNGKey(0))["params"])

  def loss(prompt, params, enc, dec):
    if mode == "prompt":
      params = jax.lax.stop_gradient(params)
    logits = model.apply({"params": wrapper.set_prompt(params, prompt)}, enc, dec, dec)
    return jnp.mean(jax.nn.log_softmax(logits)[..., 0])

  res = saved_residuals(loss, wrapper.get_prompt(shapes), shapes, jax.ShapeDtypeStruct((b, length), jnp.int32),
                        jax.ShapeDtypeStruct((b, targets), jnp.int32))
  # Arguments, literals and stop_gradient'ed params alias existing buffers.
  kept = sum(a.size * a.dtype.itemsize for a, src in res
             if not any(s in src for s in ("from the argument", "literal", "stop_gradient")))
  run = memory_plan.RunShape(batch_size=b, input_length=length, target_length=targets, prompt_length=plen,
                          mode=mode, activation_dtype=dtype)
  unfused, _ = memory_plan.activation_bytes(cfg, run, 1, 1, fused=False)
  fused, _ = memory_plan.activation_bytes(cfg, run, 1, 1, fused=True)
  assert abs(unfused / kept - 1) < 0.06, (unfused, kept)
  assert fused < 0.7 * kept


def test_remat_and_dropout_knobs():
  topo = memory_plan.parse_topology("v3-32")
  part = sharding.PartitionConfig(num_partitions=16)
  base = memory_plan.plan_memory(SIZES["xxl"], topo, PAPER, part)
  remat = memory_plan.plan_memory(SIZES["xxl"], topo, memory_plan.RunShape(remat=True), part)
  # Remat keeps each layer's input [b, L, d] / [b, T, d] (bfloat16) plus the same `once` terms.
  once = 2 * (16 * 612 * 4096 + 16 * 8 * 4096) + 4 * 16 * 8 * 2008
  assert remat.activations == 24 * 2 * 16 * 612 * 4096 + 24 * 2 * 16 * 8 * 4096 + once
  assert remat.transient > base.transient  # the recomputed layer is live on top
  drop = memory_plan.plan_memory(SIZES["xxl"], topo, memory_plan.RunShape(dropout_rate=0.1), part)
  assert drop.activations == base.activations + 24 * 16 * 4 * 612 * 612 + 24 * 16 * 4 * (64 + 8 * 612)


def test_errors_name_the_flag():
  topo = memory_plan.parse_topology("v3-32")
  with pytest.raises(ValueError, match="--batch_size 30 is not divisible by the data-parallel size 4"):
    memory_plan.plan_memory(SIZES["small"], topo, memory_plan.RunShape(batch_size=30),
                         sharding.PartitionConfig(num_partitions=8))
  with pytest.raises(ValueError, match="--num_partitions: model-parallel size 3"):
    memory_plan.plan_memory(SIZES["small"], topo, PAPER, sharding.PartitionConfig(num_partitions=3))
  with pytest.raises(ValueError, match="--mode"):
    memory_plan.RunShape(mode="lora")


def test_cli(capsys):
  assert plan.main(["--model_size", "xxl", "--topology", "v3-32", "--num_partitions", "16"]) == 0
  out = capsys.readouterr().out
  assert "mesh data=2 x model=16" in out and out.strip().splitlines()[-1].startswith("FITS")
  assert plan.main(["--model_size", "xxl", "--num_devices", "1", "--device_memory_gib", "16"]) == 0
  assert capsys.readouterr().out.strip().splitlines()[-1].startswith("DOES NOT FIT")
  assert plan.main(["--topology", "v3-32", "--num_partitions", "5"]) == 2
  assert "does not divide" in capsys.readouterr().err
  assert plan.main(["--model_size", "small"]) == 2
  assert "--topology" in capsys.readouterr().err


@pytest.fixture
def clean_gin():
  import gin
  gin.clear_config()
  yield
  gin.clear_config()


def test_cli_from_gin(capsys, clean_gin):
  import gin
  argv = ["--gin_file=models/t5_1_1_xxl.gin", "--gin_file=runs/prompt_tuning.gin", "--gin.NUM_PARTITIONS=16",
          "--topology", "v3-32"]
  assert plan.main(argv) == 0
  out = capsys.readouterr().out
  assert "prompt tuning, batch 32, inputs 512 + prompt 100, targets 8, activations bfloat16" in out
  assert "mesh data=2 x model=16" in out and out.strip().splitlines()[-1].startswith("FITS")
  gin.clear_config()
  argv = ["--gin_file=models/t5_1_1_small.gin", "--gin_file=runs/model_tuning.gin", "--topology", "v3-8",
          "--batch_size", "64"]  # an explicit flag overrides the gin value
  assert plan.main(argv) == 0
  assert "model tuning, batch 64, inputs 512 + prompt 0" in capsys.readouterr().out


def _training_settings(gin_files: list[str]) -> tuple:
  """The run settings of TrainConfig as `train` builds it from `gin_files` (the planner's
  PlanConfig reads the same five configs, so its run_settings applies to both)."""
  import gin

  from prompt_tuning_jax import cli
  from prompt_tuning_jax.trainer import loop
  gin.clear_config()
  cli.parse_gin(gin_files, ["MODEL_DIR = '/tmp/unused'", "MIXTURE_OR_TASK_NAME = 'superglue_rte'"], [str(cli.GIN_DIR)])
  train = cli.build_config(loop.TrainConfig)
  gin.clear_config()
  as_plan = memory_plan.PlanConfig(t5=train.t5, data=train.data, prompt=train.prompt, optim=train.optim,
                                   loss=train.loss, partition=train.partition)
  return train.t5, as_plan.run_settings()


@pytest.mark.parametrize("run_files", [[], ["models/t5_1_1_small.gin", "runs/model_tuning.gin"]])
def test_plan_settings_come_from_the_training_gin(run_files, clean_gin):
  """The plan's defaults (no gin files) are the prompt-tuning run users launch, and with a run's
  files the plan sees what training sees: dropout, microbatches, lengths, dtypes, remat, mesh."""
  train_files = run_files or ["models/t5_1_1_xxl.gin", "runs/prompt_tuning.gin"]
  train_t5, train_settings = _training_settings(train_files)
  plan_t5, plan_settings = plan.launch_settings(run_files)
  assert plan_settings == train_settings
  assert plan_t5 == train_t5
  assert plan_settings["dropout_rate"] == train_t5.dropout_rate > 0  # both run gins train with dropout


def test_a_plan_binding_that_drifts_from_training_is_caught(clean_gin):
  """What the test above guards against: a value set for the plan alone (as the old plan.gin
  did by omission, planning dropout 0 while training used 0.1) no longer equals training's."""
  _, train_settings = _training_settings(["models/t5_1_1_xxl.gin", "runs/prompt_tuning.gin"])
  _, drifted = plan.launch_settings((), ["T5Config.dropout_rate = 0.0"])
  assert drifted != train_settings
  assert {k for k in drifted if drifted[k] != train_settings[k]} == {"dropout_rate"}


def test_cli_without_gin_plans_the_launched_run(capsys, clean_gin):
  assert plan.main(["--topology", "v3-8", "--num_partitions", "8", "--num_microbatches", "4"]) == 0
  out = capsys.readouterr().out
  assert "T5 xxl, prompt tuning, batch 32, inputs 512 + prompt 100, targets 8, activations bfloat16, dropout 0.1" in out
  assert plan.main(["--topology", "v3-8", "--num_partitions", "8", "--num_microbatches", "4", "--dropout_rate", "0"]) == 0
  assert "dropout 0," in capsys.readouterr().out.splitlines()[0] + ","
