"""plan --compile: the exact sharded steps compiled for a real TPU topology (v3-8) through
libtpu on this CPU machine, against the analytic planner and against JAX itself.

libtpu comes with the `test` extra (jax[tpu]); without it these tests fail, never skip.
"""
import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from prompt_tuning_jax import plan

from prompt_tuning_jax.parallel import sharding

from prompt_tuning_jax.planning import compile_plan, memory_plan
from prompt_tuning_jax.model.config import SIZES

TINY = SIZES["tiny_inline"]
RUN = memory_plan.RunShape(batch_size=8, input_length=16, target_length=4, prompt_length=3)
PART = sharding.PartitionConfig(num_partitions=2)


def test_v3_8_has_eight_tpu_v3_cores():
  devices = compile_plan.topology_devices("v3-8")
  assert len(devices) == 8 and {d.device_kind for d in devices} == {"TPU v3"}
  assert len(compile_plan.topology_devices("v4-8")) == 4  # megacore: one device per chip
  with pytest.raises(ValueError, match="no TPU topology 'v9-8'"):
    compile_plan.topology_devices("v9-8")


@pytest.mark.slow
def test_tiny_train_score_decode_compile_for_v3_8():
  report = compile_plan.compile_plan(TINY, "v3-8", RUN, PART)
  assert report.mesh == (4, 2) and [s.name for s in report.steps] == ["train", "score", "decode"]
  train = report.steps[0]
  # XLA's argument bytes are the shards of what the step takes: params, Adafactor state,
  # step, rng and the batch; the analytic plan counts the first two on its own.
  analytic = memory_plan.plan_memory(TINY, memory_plan.parse_topology("v3-8"), RUN, PART)
  batch = 4 * (RUN.batch_size // 4) * (RUN.input_length + 3 * RUN.target_length)
  small = 4 + 8  # step int32, rng uint32[2]
  expected = analytic.frozen_params + analytic.trainable_params + analytic.optimizer_state + batch + small
  # XLA:TPU pads each array to its (8, 128) tiles, which adds ~16% on arrays this tiny
  # (XXL agrees within 1%: docs/PLANS.md); padding only ever adds.
  assert expected <= train.arguments <= 1.25 * expected, (train.arguments, expected)
  assert train.temp > 0 and train.collectives["all-reduce"][0] > 0  # data-parallel gradient sum
  text = compile_plan.format_report(report, analytic)
  assert "compiled for v3-8 (TPU v3), mesh data=4 x model=2" in text and "collectives in train: all-reduce" in text


def test_collective_parser_counts_ops_and_result_bytes():
  hlo = """
  %all-reduce.1 = f32[8,16]{1,0} all-reduce(f32[8,16]{1,0} %p), replica_groups={{0,1}}, to_apply=%add
  %ags = (bf16[4,8]{1,0}, bf16[8,8]{1,0}) all-gather-start(bf16[4,8]{1,0} %x), dimensions={0}
  %agd = bf16[8,8]{1,0} all-gather-done((bf16[4,8]{1,0}, bf16[8,8]{1,0}) %ags)
  %cp = s32[2]{0} collective-permute(s32[2]{0} %y), source_target_pairs={{0,1}}
  %fusion = f32[8,16]{1,0} fusion(f32[8,16]{1,0} %all-reduce.1), kind=kLoop
  """
  stats = compile_plan.collective_stats(hlo)
  assert stats["all-reduce"] == (1, 8 * 16 * 4)
  assert stats["all-gather"] == (1, 8 * 8 * 2)
  assert stats["collective-permute"] == (1, 8)
  assert stats["reduce-scatter"] == (0, 0) and stats["all-to-all"] == (0, 0)


def test_planner_refuses_heads_the_model_axis_does_not_divide():
  # JAX itself refuses: a [6, buckets] relative-position table over a model axis of 4.
  mesh = sharding.make_mesh(sharding.PartitionConfig(num_partitions=4))
  with pytest.raises(ValueError):
    jax.device_put(np.zeros((6, 32), np.float32), NamedSharding(mesh, PartitionSpec("model")))
  with pytest.raises(ValueError, match="model-parallel size 4 does not divide num_heads=6"):
    memory_plan.plan_memory(SIZES["small"], memory_plan.parse_topology("v3-8"), memory_plan.RunShape(),
                            sharding.PartitionConfig(num_partitions=4))
  with pytest.raises(ValueError, match="num_heads=12"):
    compile_plan.compile_plan(SIZES["base"], "v3-32", memory_plan.RunShape(),
                              sharding.PartitionConfig(num_partitions=8))


def test_planner_microbatches_divide_activations():
  topo, part = memory_plan.parse_topology("v3-32"), sharding.PartitionConfig(num_partitions=16)
  whole = memory_plan.plan_memory(SIZES["xxl"], topo, memory_plan.RunShape(batch_size=8), part)
  pieces = memory_plan.plan_memory(SIZES["xxl"], topo, memory_plan.RunShape(num_microbatches=4), part)
  # 4 pieces of a 32 batch keep what one batch of 8 keeps; the gradient accumulator is added
  assert pieces.activations == whole.activations and pieces.transient == whole.transient
  assert pieces.gradients == 2 * whole.gradients
  with pytest.raises(ValueError, match="--num_microbatches 3"):
    memory_plan.RunShape(num_microbatches=3)
  dots = memory_plan.plan_memory(SIZES["xxl"], topo, memory_plan.RunShape(remat="dots"), part)
  full = memory_plan.plan_memory(SIZES["xxl"], topo, memory_plan.RunShape(remat="full"), part)
  none = memory_plan.plan_memory(SIZES["xxl"], topo, memory_plan.RunShape(), part)
  assert full.activations < dots.activations < none.activations


@pytest.mark.slow
def test_cli_compile_prints_both(capsys):
  argv = ["--model_size", "tiny_inline", "--topology", "v3-8", "--num_partitions", "2", "--batch_size", "8",
          "--input_length", "16", "--target_length", "4", "--prompt_length", "3", "--remat", "--num_microbatches",
          "2", "--param_dtype", "bfloat16", "--compile"]
  assert plan.main(argv) == 0
  out = capsys.readouterr().out
  assert "activations (fused, remat full, 2 microbatches)" in out and "frozen params (bfloat16)" in out
  assert "analytic train step" in out and "collectives in decode" in out
  assert plan.main(["--model_size", "base", "--topology", "v3-8", "--num_partitions", "8"]) == 2
  assert "num_heads=12" in capsys.readouterr().err
