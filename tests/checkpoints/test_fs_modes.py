"""Files the filesystem layer writes get the mode a plain open() would give: 0666 less the umask.

Every output (prompt.npy, numpy checkpoints, config.gin, the PEFT adapter, model cards, eval
outputs, metrics.jsonl) is written by `fs.atomic_write`, whose temporary file mkstemp creates
0600; the reference here is the mode `open(path, "w")` gives under the same umask.
"""
import os
import stat

import numpy as np
import pytest

from prompt_tuning_jax.checkpoints import fs
from prompt_tuning_jax.prompt import files as prompt_files


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
  old = os.umask(request.param)
  try:
    yield request.param
  finally:
    os.umask(old)


def _mode(path) -> int:
  return stat.S_IMODE(os.stat(path).st_mode)


def test_outputs_get_the_mode_open_gives(tmp_path, umask):
  reference = tmp_path / "reference.txt"
  with open(reference, "w") as f:
    f.write("x")
  expected = {0o022: 0o644, 0o077: 0o600, 0o002: 0o664}[umask]
  assert _mode(reference) == expected

  prompt = np.zeros((3, 4), np.float32)
  written = [fs.atomic_write(str(tmp_path / "config.gin"), "x = 1\n"),
             prompt_files.save_npy(tmp_path / "prompt.npy", prompt),
             prompt_files.save_numpy_checkpoint(tmp_path, 1510, prompt),
             prompt_files.write_model_card(tmp_path / "model_card.json", backbone="b", task="t", prompt_length=3,
                                           init="i", step=1510, steps_trained=10, dev_metrics={})]
  adapter = prompt_files.save_peft_adapter(tmp_path / "peft", prompt, base_model_name_or_path=None)
  written += [adapter / prompt_files.PEFT_CONFIG_FILE, adapter / prompt_files.PEFT_WEIGHTS_FILE]
  modes = {os.path.relpath(p, tmp_path): oct(_mode(p)) for p in written}
  assert modes == {k: oct(expected) for k in modes}
  assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]  # no temporary file left behind


def test_umask_is_read_without_changing_it():
  old = os.umask(0o027)
  try:
    assert fs.umask() == 0o027 and fs.umask() == 0o027
    current = os.umask(0o027)
    assert current == 0o027  # reading it left it as it was
  finally:
    os.umask(old)
