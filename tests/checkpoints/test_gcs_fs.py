"""The filesystem layer against a real local Cloud Storage emulator (gs:// paths).

Every writer under MODEL_DIR and every reader of checkpoints and prompts is run on
gs://bucket/... and compared with the same call on local disk (the reference).
"""
import json
import os

import jax
import numpy as np
import pytest

from prompt_tuning_jax.checkpoints import backbone, fs, train_state
from prompt_tuning_jax.model.config import SIZES
from prompt_tuning_jax.prompt import files as prompt_files
from prompt_tuning_jax.trainer import metric_writer


def test_files_round_trip_and_nothing_lands_on_local_disk(gcs_emulator, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  root = fs.join(gcs_emulator, "fs_test")
  assert root == "gs://bucket/fs_test" and fs.join(root, "a/", "b") == "gs://bucket/fs_test/a/b"
  assert fs.abspath(root) == root
  fs.atomic_write(fs.join(root, "x", "one.txt"), "hello")
  fs.atomic_write(fs.join(root, "x", "two.bin"), b"\x00\x01")
  assert fs.read_text(fs.join(root, "x", "one.txt")) == "hello"
  assert fs.exists(fs.join(root, "x", "two.bin")) and not fs.exists(fs.join(root, "x", "three"))
  assert fs.isdir(fs.join(root, "x")) and not fs.isfile(fs.join(root, "x"))
  assert fs.listdir(fs.join(root, "x")) == ["one.txt", "two.bin"]
  fs.rename(fs.join(root, "x"), fs.join(root, "y"))
  assert fs.listdir(fs.join(root, "y")) == ["one.txt", "two.bin"] and not fs.exists(fs.join(root, "x"))
  fs.rmtree(fs.join(root, "y"))
  assert not fs.exists(fs.join(root, "y", "one.txt"))
  assert os.listdir(tmp_path) == [], "a gs:// path was written to local disk"


def test_prompt_files_on_gcs_equal_local(gcs_emulator, tmp_path):
  prompt = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
  root = fs.join(gcs_emulator, "prompts")
  npy = prompt_files.save_npy(fs.join(root, "prompt.npy"), prompt)
  ckpt = prompt_files.save_numpy_checkpoint(root, 7, prompt)
  peft = prompt_files.save_peft_adapter(fs.join(root, "peft"), prompt, base_model_name_or_path="m")
  card = prompt_files.write_model_card(fs.join(root, "card.json"), backbone="b", task="t", prompt_length=5,
                                       init="i", step=7, steps_trained=4, dev_metrics={"accuracy": 1.0})
  assert ckpt == f"{root}/numpy_checkpoints/checkpoint_7/encoder.prompt.prompt.prompt"
  local_npy = prompt_files.save_npy(tmp_path / "p.npy", prompt)
  assert fs.read_bytes(npy) == local_npy.read_bytes()  # the same .npy bytes
  for path in (npy, ckpt, fs.dirname(ckpt), peft):
    np.testing.assert_array_equal(prompt_files.load_prompt(path, (5, 8)), prompt)
  assert [prompt_files.detect_format(p) for p in (npy, fs.dirname(ckpt), peft)] == ["npy", "npy", "peft"]
  assert json.loads(fs.read_text(card))["step"] == 7
  with pytest.raises(FileNotFoundError, match="gs://bucket/prompts/missing.npy"):
    prompt_files.load_prompt(fs.join(root, "missing.npy"))


def test_t5x_checkpoint_loads_from_gcs_bit_identical(gcs_emulator, testdata):
  local = str(testdata / "t5x_checkpoints" / "test_t5_1_1_tiny" / "checkpoint_3")  # msgpack + zarr arrays
  remote = fs.join(gcs_emulator, "t5x", "checkpoint_3")
  fs.upload_tree(local, remote)
  want, want_step = backbone.load_frozen(local, SIZES["tiny_zarr"])
  got, got_step = backbone.load_frozen(remote, SIZES["tiny_zarr"])
  assert got_step == want_step == 3
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_metrics_and_tensorboard_reach_gcs(gcs_emulator):
  run = fs.join(gcs_emulator, "metrics_run")
  writer = metric_writer.MetricsWriter(run)
  writer.write(1, {"loss": 2.5}, prefix="train")
  writer.flush()
  writer.write(2, {"loss": 1.5}, prefix="train")
  writer.close()
  rows = [json.loads(line) for line in fs.read_text(fs.join(run, "metrics.jsonl")).splitlines()]
  assert rows == [{"step": 1, "train/loss": 2.5}, {"step": 2, "train/loss": 1.5}]
  events = fs.listdir(fs.join(run, "tensorboard"))
  assert events and all(name.startswith("events.out.tfevents") for name in events)
  resumed = metric_writer.MetricsWriter(run, tensorboard=False)  # a resumed run keeps the history
  resumed.write(3, {"loss": 0.5}, prefix="train")
  resumed.close()
  assert len(fs.read_text(fs.join(run, "metrics.jsonl")).splitlines()) == 3


def test_train_state_checkpointer_keeps_the_gs_path(gcs_emulator, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  ckpt = train_state.TrainCheckpointer(fs.join(gcs_emulator, "ts_run"), keep=2, fingerprint={"k": "v"})
  assert ckpt.directory == "gs://bucket/ts_run/train_state"
  state = {"w": jax.numpy.arange(6.0).reshape(2, 3)}
  ckpt.save(1, state, {"note": 1})
  restored, meta = ckpt.restore(state)
  np.testing.assert_array_equal(np.asarray(restored["w"]), np.arange(6.0).reshape(2, 3))
  assert meta["note"] == 1 and ckpt.latest_step() == 1
  assert fs.exists("gs://bucket/ts_run/train_state/1") and os.listdir(tmp_path) == []
