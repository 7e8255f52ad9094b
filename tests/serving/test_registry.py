"""The prompt registry: every format `export` writes, names, the width check, paths kept
inside the folder, and bank rows that in-flight requests pin."""
import os

import numpy as np
import pytest

from prompt_tuning_jax import export
from prompt_tuning_jax.prompt import files as prompt_files
from prompt_tuning_jax.serving import registry as registry_lib

D = 64


def _prompt(seed: int, length: int = 10, width: int = D) -> np.ndarray:
  return np.random.RandomState(seed).randn(length, width).astype(np.float32)


@pytest.fixture
def prompt_dir(tmp_path):
  """One entry per format: .npy, a PEFT adapter folder, an export folder, a run folder
  (numpy_checkpoints only), a numpy checkpoint_<step> folder; plus files to skip."""
  d = tmp_path / "prompts"
  d.mkdir()
  prompt_files.save_npy(d / "rte.npy", _prompt(0))
  prompt_files.save_peft_adapter(d / "boolq", _prompt(1), base_model_name_or_path=None)
  prompt_files.save_npy(tmp_path / "src.npy", _prompt(2))
  export.export_prompt(str(tmp_path / "src.npy"), str(d / "copa_export"), step=7)
  prompt_files.save_numpy_checkpoint(d / "wic_run", 100, _prompt(3))
  prompt_files.save_numpy_checkpoint(d / "wic_run", 300, _prompt(4))   # the latest step is served
  prompt_files.save_numpy_checkpoint(tmp_path / "m", 5, _prompt(5))
  os.rename(tmp_path / "m" / "numpy_checkpoints" / "checkpoint_5", d / "multirc_ckpt")
  (d / "README.md").write_text("not a prompt")
  (d / "junk").mkdir()
  return d


def test_scan_loads_every_export_format_by_name(prompt_dir, tmp_path):
  reg = registry_lib.PromptRegistry(str(prompt_dir), emb_dim=D)
  loaded, skipped = reg.scan()
  assert sorted(loaded) == ["boolq", "copa_export", "multirc_ckpt", "rte", "wic_run"]
  assert len(skipped) == 1 and skipped[0].startswith("junk: ") and "no prompt found" in skipped[0]
  bank = reg.bank()
  expected = {"rte": _prompt(0), "boolq": _prompt(1), "copa_export": _prompt(2), "wic_run": _prompt(4),
              "multirc_ckpt": _prompt(5)}
  for entry in reg.listing():
    np.testing.assert_array_equal(bank[entry["row"]], expected[entry["name"]])
  assert bank.shape == (16, 10, D) and reg.capacity == 16


def test_width_mismatch_is_refused_naming_the_file(tmp_path):
  d = tmp_path / "p"
  d.mkdir()
  prompt_files.save_npy(d / "small.npy", _prompt(0, width=512))
  reg = registry_lib.PromptRegistry(str(d), emb_dim=D)
  with pytest.raises(ValueError, match=r"small\.npy: prompt width 512 does not match the backbone's emb_dim=64"):
    reg.scan()


def test_paths_cannot_leave_the_registry(prompt_dir, tmp_path):
  reg = registry_lib.PromptRegistry(str(prompt_dir), emb_dim=D)
  assert reg.inside("rte.npy") == os.path.join(os.path.realpath(prompt_dir), "rte.npy")
  for bad in ("../src.npy", "/etc/passwd", "a/../../src.npy", "gs://other/x.npy", ""):
    with pytest.raises(registry_lib.RegistryError):
      reg.inside(bad)
  os.symlink(tmp_path / "src.npy", prompt_dir / "link.npy")  # a symlink pointing out is refused too
  with pytest.raises(registry_lib.RegistryError, match="outside the registry"):
    reg.inside("link.npy")
  for bad in ("../x", "a/b", "", ".hidden", "x" * 200):
    with pytest.raises(registry_lib.RegistryError, match="not allowed"):
      registry_lib.check_name(bad)


def test_unknown_name_suggests_close_ones(prompt_dir):
  reg = registry_lib.PromptRegistry(str(prompt_dir), emb_dim=D)
  reg.scan()
  with pytest.raises(registry_lib.RegistryError, match="unknown prompt 'rtee'; closest registered: rte") as e:
    reg.pin("rtee")
  assert e.value.status == 404


def test_pinned_row_is_not_reused_until_released(prompt_dir, tmp_path):
  reg = registry_lib.PromptRegistry(str(prompt_dir), emb_dim=D, capacity=8)
  reg.scan()
  seen = []
  reg.on_bank_change = lambda bank: seen.append(bank.copy())
  row = reg.pin("rte")
  reg.remove("rte")                                    # deleted while a request holds its row
  entry = reg.add("rte", str(tmp_path / "src.npy"))    # re-registered under the same name
  assert entry["row"] != row
  np.testing.assert_array_equal(reg.bank()[row], _prompt(0))   # the pinned row still holds the old prompt
  reg.unpin(row)
  new = reg.add("later", str(tmp_path / "src.npy"))
  assert new["row"] == row                             # free again once released
  assert seen and seen[-1].shape == (8, 10, D)


def test_capacity_doubles_when_full(tmp_path):
  d = tmp_path / "p"
  d.mkdir()
  reg = registry_lib.PromptRegistry(str(d), emb_dim=D, capacity=2)
  for i in range(3):
    prompt_files.save_npy(d / f"p{i}.npy", _prompt(i))
    assert reg.full() == (i == 2)
    reg.add(f"p{i}", str(d / f"p{i}.npy"))
  assert reg.capacity == 4 and reg.bank().shape == (4, 10, D)
  np.testing.assert_array_equal(reg.bank()[2], _prompt(2))


@pytest.mark.slow
def test_registry_on_gcs(gcs_emulator):
  """--prompt_dir=gs://...: scanned and loaded through the one filesystem layer."""
  root = f"{gcs_emulator}/serving_registry"
  prompt_files.save_npy(f"{root}/rte.npy", _prompt(0))
  prompt_files.save_peft_adapter(f"{root}/boolq", _prompt(1), base_model_name_or_path=None)
  reg = registry_lib.PromptRegistry(root, emb_dim=D)
  loaded, skipped = reg.scan()
  assert sorted(loaded) == ["boolq", "rte"] and not skipped
  bank = reg.bank()
  rows = {e["name"]: e["row"] for e in reg.listing()}
  np.testing.assert_array_equal(bank[rows["boolq"]], _prompt(1))
  assert reg.inside("rte.npy") == f"{root}/rte.npy"
  with pytest.raises(registry_lib.RegistryError):
    reg.inside("../other/x.npy")
