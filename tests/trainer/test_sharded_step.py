"""A sharded train step on a mesh of 8 simulated CPU devices equals the one-device step."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning_jax.parallel import sharding

from prompt_tuning_jax.text import data
from prompt_tuning_jax.model.config import T5Config
from prompt_tuning_jax.prompt import PROMPT_PATTERN, wrapper
from prompt_tuning_jax.trainer import optim
from prompt_tuning_jax.trainer import step as step_lib

CFG = T5Config(vocab_size=64, emb_dim=16, num_heads=8, head_dim=4, mlp_dim=64, num_encoder_layers=2,
               num_decoder_layers=2)
PROMPT = wrapper.PromptConfig(length=4)


def _setup(patterns):
  model = wrapper.make_model(CFG, PROMPT)
  boxed = model.init(jax.random.PRNGKey(0), *(jnp.ones((1, 2), jnp.int32),) * 3)["params"]
  params = jax.device_get(nn.unbox(boxed))
  params = wrapper.set_prompt(params, np.asarray(jax.random.uniform(jax.random.PRNGKey(1), (4, 16), minval=-.5, maxval=.5)))
  rng = np.random.RandomState(0)
  batch = data.encdec_features(rng.randint(1, 64, (8, 12)), rng.randint(1, 64, (8, 4)))
  opt = optim.make_optimizer(optim.OptimConfig(learning_rate=0.3 if patterns == (PROMPT_PATTERN,) else 1e-3,
                                               trainable_patterns=patterns))
  return model, boxed, params, batch, opt


def _run(patterns, mesh_shape):
  model, boxed, params, batch, opt = _setup(patterns)
  trainable, frozen = optim.split_params(params, patterns)
  state = step_lib.init_state(trainable, opt, jax.random.PRNGKey(2))
  if mesh_shape is None:
    fn = step_lib.jit_train_step(model, opt, step_lib.LossConfig())
    for _ in range(2):
      state, metrics = fn(state, frozen, batch)
    return jax.device_get((state.params, metrics)), None
  partition = sharding.PartitionConfig(num_partitions=mesh_shape[1])
  mesh = sharding.make_mesh(partition)
  assert mesh.devices.shape == mesh_shape
  shardings = sharding.logical_to_sharding(sharding.logical_specs(boxed), mesh, partition.rules)
  train_sh, frozen_sh = optim.split_params(shardings, patterns)
  rep = sharding.replicated(mesh)
  state_sh = step_lib.TrainState(step=rep, params=train_sh, opt_state=jax.tree.map(lambda _: rep, state.opt_state),
                                 rng=rep)
  state = jax.device_put(state, state_sh)
  frozen = jax.device_put(frozen, frozen_sh)
  gbatch = sharding.make_global_batch(batch, mesh, 8)
  fn = step_lib.jit_train_step(model, opt, step_lib.LossConfig(), in_shardings=(state_sh, frozen_sh, sharding.batch_sharding(mesh)),
                               out_shardings=(state_sh, rep))
  with jax.set_mesh(mesh):
    for _ in range(2):
      state, metrics = fn(state, frozen, gbatch)
  return jax.device_get((state.params, metrics)), (frozen, state)


@functools.lru_cache(maxsize=None)
def _single_device(patterns):
  return _run(patterns, None)[0]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["prompt", "model"])
@pytest.mark.parametrize("mesh_shape", [(8, 1), (4, 2), (2, 4), (1, 8)])
def test_sharded_step_equals_single_device(mode, mesh_shape):
  assert len(jax.devices()) == 8
  patterns = (PROMPT_PATTERN,) if mode == "prompt" else (".*",)
  want_params, want_metrics = _single_device(patterns)
  (got_params, got_metrics), (frozen, state) = _run(patterns, mesh_shape)
  np.testing.assert_allclose(got_metrics["loss"], want_metrics["loss"], rtol=1e-5)
  for g, w in zip(jax.tree.leaves(got_params), jax.tree.leaves(want_params)):
    np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-6)
  # The weights really are split over the model axis (and the prompt replicated).
  model_size = mesh_shape[1]
  tree = frozen if mode == "prompt" else state.params
  wi = tree["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]
  emb = tree["token_embedder"]["embedding"]
  assert wi.addressable_shards[0].data.shape == (16, 64 // model_size)
  assert emb.addressable_shards[0].data.shape == (64 // model_size, 16)
  if mode == "prompt":
    prompt = wrapper.get_prompt(state.params)
    assert prompt.addressable_shards[0].data.shape == (4, 16)
