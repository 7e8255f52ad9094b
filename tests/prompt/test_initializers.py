"""Tests for the prompt initializers in initializers.py."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prompt_tuning_jax.prompt import files as prompt_files
from prompt_tuning_jax.prompt import initializers

RELEASED = Path(__file__).parents[1] / "testdata" / "released_prompts" / "t5_1_1_lm100k_base"
RNG = jax.random.PRNGKey(0)


def index_embedding(vocab_rows: int, d: int) -> np.ndarray:
  """Row i is (i, i + 0.25, i + 0.5, ...): each row says which row it is."""
  return (np.arange(vocab_rows, dtype=np.float32)[:, None] +
          0.25 * np.arange(d, dtype=np.float32)[None, :])


def random_embedding(vocab_rows: int, d: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=(vocab_rows, d)).astype(np.float32)


# ----- random uniform -----

def test_uniform_symmetric_range_and_stats():
  out = np.asarray(initializers.uniform_symmetric(0.5)(RNG, (100, 64)))
  assert out.shape == (100, 64) and out.dtype == np.float32
  assert out.min() >= -0.5 and out.max() <= 0.5
  assert (out < 0).mean() > 0.45 and (out > 0).mean() > 0.45
  assert out.min() < -0.49 and out.max() > 0.49
  assert abs(out.mean()) < 0.02
  assert abs(out.var() - 1.0 / 12) < 0.005  # var of U(-0.5, 0.5) = 1/12


def test_uniform_zero_to_scale_range_and_stats():
  out = np.asarray(initializers.uniform_zero_to_scale(0.5)(RNG, (100, 64)))
  assert out.dtype == np.float32
  assert out.min() >= 0.0 and out.max() < 0.5
  assert (out < 0).sum() == 0
  assert abs(out.mean() - 0.25) < 0.01


def test_uniform_matches_original_flax_uniform():
  # The original code's `uniform(0.5)` is flax's initializer; ours must equal it.
  flax_init = jax.nn.initializers.uniform(0.5)
  np.testing.assert_array_equal(initializers.uniform_zero_to_scale(0.5)(RNG, (7, 5)),
                                flax_init(RNG, (7, 5), jnp.float32))


def test_uniform_is_deterministic_per_rng():
  init = initializers.uniform_symmetric(0.5)
  np.testing.assert_array_equal(init(RNG, (4, 8)), init(RNG, (4, 8)))
  assert not np.array_equal(init(RNG, (4, 8)), init(jax.random.PRNGKey(1), (4, 8)))


@pytest.mark.parametrize("make", [initializers.uniform_symmetric, initializers.uniform_zero_to_scale])
def test_uniform_bad_args(make):
  with pytest.raises(ValueError, match="scale"):
    make(0.0)
  with pytest.raises(ValueError, match=r"\(P, d\)"):
    make(0.5)(RNG, (4,))


# ----- sampled vocabulary -----

def test_sampled_vocab_rows_from_first_population_rows():
  table = index_embedding(8000, 6)
  out = np.asarray(initializers.sampled_vocab(5000)(RNG, (100, 6), table))
  idx = out[:, 0].astype(np.int64)
  assert out.dtype == np.float32
  assert (idx < 5000).all() and (idx >= 0).all()
  np.testing.assert_array_equal(out, table[idx])  # whole rows of the table
  assert len(set(idx.tolist())) == 100  # without replacement


def test_sampled_vocab_with_replacement_when_prompt_longer_than_population():
  table = index_embedding(50, 4)
  out = np.asarray(initializers.sampled_vocab(3)(RNG, (20, 4), table))
  idx = out[:, 0].astype(np.int64)
  assert set(idx.tolist()) <= {0, 1, 2}
  np.testing.assert_array_equal(out, table[idx])


def test_sampled_vocab_population_clipped_to_table():
  table = index_embedding(30, 4)
  out = np.asarray(initializers.sampled_vocab(10**6)(RNG, (30, 4), table))
  assert sorted(out[:, 0].astype(int).tolist()) == list(range(30))


def test_sampled_vocab_needs_matching_embedding():
  init = initializers.sampled_vocab(5000)
  with pytest.raises(ValueError, match="needs the frozen token embedding"):
    init(RNG, (4, 6))
  with pytest.raises(ValueError, match=r"\(10, 5\).*\[V, 6\]"):
    init(RNG, (4, 6), np.zeros((10, 5), np.float32))
  with pytest.raises(ValueError, match="population_size"):
    initializers.sampled_vocab(0)


# ----- class labels and strings -----

def test_class_labels_rows_are_label_means_then_fallback():
  table = random_embedding(40, 8)
  labels = [[1, 2, 3], [7], [10, 11]]
  fallback = initializers.uniform_symmetric(0.5)
  out = np.asarray(initializers.class_labels(labels, fallback)(RNG, (6, 8), table))
  np.testing.assert_allclose(out[0], (table[1] + table[2] + table[3]) / 3, rtol=1e-6)
  np.testing.assert_array_equal(out[1], table[7])
  np.testing.assert_allclose(out[2], (table[10] + table[11]) / 2, rtol=1e-6)
  np.testing.assert_array_equal(out[3:], np.asarray(fallback(RNG, (6, 8)))[3:])


def test_class_labels_default_fallback_is_sampled_vocab():
  table = index_embedding(8000, 4)
  out = np.asarray(initializers.class_labels([[7000, 7002]])(RNG, (50, 4), table))
  np.testing.assert_allclose(out[0], table[7001])
  rest = out[1:, 0].astype(np.int64)
  assert (rest < 5000).all()
  np.testing.assert_array_equal(out[1:], table[rest])


def test_class_labels_errors():
  table = random_embedding(20, 4)
  with pytest.raises(ValueError, match="3 labels do not fit in a prompt of length 2"):
    initializers.class_labels([[1], [2], [3]])(RNG, (2, 4), table)
  with pytest.raises(ValueError, match=r"\[25\] are outside .*\[0, 20\)"):
    initializers.class_labels([[1], [25]])(RNG, (4, 4), table)
  with pytest.raises(ValueError, match="empty"):
    initializers.class_labels([[1], []])(RNG, (4, 4), table)
  with pytest.raises(ValueError, match="empty"):
    initializers.class_labels([])


def test_from_string_rows_then_fallback():
  table = random_embedding(30, 4)
  fallback = initializers.uniform_zero_to_scale(0.5)
  out = np.asarray(initializers.from_string([5, 9, 5], fallback)(RNG, (5, 4), table))
  np.testing.assert_array_equal(out[:3], table[[5, 9, 5]])
  np.testing.assert_array_equal(out[3:], np.asarray(fallback(RNG, (5, 4)))[3:])
  with pytest.raises(ValueError, match="3 pieces do not fit in a prompt of length 2"):
    initializers.from_string([5, 9, 5], fallback)(RNG, (2, 4), table)


# ----- from saved prompts -----

def test_from_array_shape_checked_with_source():
  arr = np.arange(12, dtype=np.float64).reshape(3, 4)
  out = initializers.from_array(arr)(RNG, (3, 4))
  assert out.dtype == jnp.float32
  np.testing.assert_array_equal(out, arr)
  with pytest.raises(ValueError, match=r"my_prompt.*\(3, 4\).*\(5, 4\)"):
    initializers.from_array(arr, source="my_prompt")(RNG, (5, 4))


def test_from_npy_and_from_file_load_released_prompt():
  path = RELEASED / "rte.npy"
  expected = np.load(path)
  for init in (initializers.from_npy(path), initializers.from_file(path)):
    out = init(RNG, (100, 768))
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("make", [initializers.from_npy, initializers.from_file])
def test_loader_wrong_shape_names_file(make):
  with pytest.raises(ValueError, match=r"rte\.npy.*\(100, 768\).*\(50, 768\)"):
    make(RELEASED / "rte.npy")(RNG, (50, 768))


def test_from_peft_adapter(tmp_path):
  prompt = np.load(RELEASED / "sst2.npy")
  prompt_files.save_peft_adapter(tmp_path, prompt, base_model_name_or_path="x")
  np.testing.assert_array_equal(initializers.from_peft_adapter(tmp_path)(RNG, (100, 768)),
                                prompt)
  with pytest.raises(ValueError, match=str(tmp_path)):
    initializers.from_peft_adapter(tmp_path)(RNG, (100, 512))


def test_from_t5x_checkpoint_reads_prompt_variable(tmp_path, monkeypatch):
  """The T5X reader is another module; check we ask it for the right variable."""
  import prompt_tuning_jax.checkpoints as ckpt_pkg
  calls = []
  fake = types.ModuleType("prompt_tuning_jax.checkpoints.t5x")

  def read_t5x_variable(path, name, **kwargs):
    calls.append((path, name))
    return np.full((3, 4), 2.0, np.float32)

  fake.read_t5x_variable = read_t5x_variable
  monkeypatch.setitem(sys.modules, "prompt_tuning_jax.checkpoints.t5x", fake)
  monkeypatch.setattr(ckpt_pkg, "t5x", fake, raising=False)
  (tmp_path / "checkpoint").write_bytes(b"")
  out = initializers.from_t5x_checkpoint(tmp_path)(RNG, (3, 4))
  np.testing.assert_array_equal(out, np.full((3, 4), 2.0))
  assert calls == [(str(tmp_path), "encoder/prompt/prompt/prompt")]
  with pytest.raises(ValueError, match=r"encoder/prompt/prompt/prompt.*\(3, 4\).*\(2, 4\)"):
    initializers.from_t5x_checkpoint(tmp_path)(RNG, (2, 4))


def test_initializers_work_under_jit():
  """The trainer may create the prompt inside `jax.jit(..., out_shardings=...)`."""
  table = random_embedding(6000, 4)
  for init in (initializers.uniform_symmetric(), initializers.sampled_vocab(),
               initializers.class_labels([[1, 2], [3]]), initializers.from_string([4, 5])):
    eager = init(RNG, (8, 4), table)
    jitted = jax.jit(init, static_argnums=1)(RNG, (8, 4), table)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6)
