"""Cheap, quiet start-up: every command imports without jax, TensorFlow or SeqIO and answers
`--help`; TensorFlow's CPU start-up lines are filtered and real ones kept; the demo (the
README's first command) runs a few steps quietly and its table and exports load."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from prompt_tuning_jax.text import quiet
from prompt_tuning_jax.prompt import files as prompt_files

COMMANDS = ("train", "eval", "infer", "score", "export", "convert", "plan", "reproduce", "demo", "inspect_prompt")
# What a CPU-only machine printed before quiet.py (the list), checked verbatim.
NOISE = ("failed call to cuInit", "Could not find cuda drivers", "All log messages before absl::InitializeLog()",
         "cpu_feature_guard", "Unable to register cu", "uncached FunctionDataset")
ENV = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))


def _run_all(commands: dict[str, list[str]], timeout: int = 300) -> dict[str, subprocess.CompletedProcess]:
  """Run the commands concurrently, each in a fresh interpreter, from outside the checkout."""
  procs = {k: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd="/")
           for k, cmd in commands.items()}
  out = {}
  for k, p in procs.items():
    stdout, stderr = p.communicate(timeout=timeout)
    out[k] = subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)
  return out


# `python -m prompt_tuning_jax.<cmd> --help`, then report what it left in sys.modules.
_HELP = """import runpy, sys
sys.argv = ["{0}", "--help"]
try:
  runpy.run_module("prompt_tuning_jax.{0}", run_name="__main__", alter_sys=True)
except SystemExit as e:
  code = e.code
print("EXIT", code, sorted(n for n in ("jax", "flax", "tensorflow", "seqio") if n in sys.modules))
"""


def test_every_command_help_exits_zero_without_jax_tensorflow_or_seqio():
  """Each command in a fresh interpreter: `--help` (which imports the command and parses
  its flags) exits 0, prints usage, writes nothing to stderr and loads none of jax, flax,
  TensorFlow or SeqIO (the command imports its library after parsing)."""
  results = _run_all({c: [sys.executable, "-c", _HELP.format(c)] for c in COMMANDS})
  for c, r in results.items():
    assert r.returncode == 0, f"{c}: {r.stderr[-2000:]}"
    assert r.stdout.startswith("usage:"), f"{c} --help printed {r.stdout[:200]!r}"
    assert r.stderr == "", f"{c} --help wrote to stderr: {r.stderr[:500]!r}"
  assert {c: r.stdout.splitlines()[-1] for c, r in results.items()} == {c: "EXIT 0 []" for c in COMMANDS}


def test_filtered_stderr_drops_only_the_startup_lines():
  code = ("import os, sys\nfrom prompt_tuning_jax.text import quiet\nwith quiet.filtered_stderr():\n"
          "  os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n')\n"
          "  os.write(2, b'I0000 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.\\n')\n"
          "  os.write(2, b'E0000 some_op.cc:1] a real error\\n')\n"
          "  print('a real Python warning', file=sys.stderr)\n")
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
  assert r.returncode == 0, r.stderr
  assert r.stderr == "E0000 some_op.cc:1] a real error\na real Python warning\n"


@pytest.mark.slow
def test_tensorflow_and_seqio_import_quietly_and_keep_off_the_gpu():
  code = ("import sys\nfrom prompt_tuning_jax.text import quiet\nseqio = quiet.import_seqio()\ntf = sys.modules['tensorflow']\n"
          "print(tf.config.get_visible_devices('GPU'), 'seqio' in sys.modules)\n")
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=300)
  assert r.returncode == 0, r.stderr
  assert r.stdout.split() == ["[]", "True"]
  assert [n for n in NOISE if n in r.stderr] == [], r.stderr[:2000]
  assert quiet.STARTUP_NOISE  # the list the filter uses is not empty


# ------------------------------------------------------------------------------ the demo

@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
  model_dir = tmp_path_factory.mktemp("demo") / "run"
  r = subprocess.run([sys.executable, "-m", "prompt_tuning_jax.demo", "--steps", "2", "--model_dir", str(model_dir)],
                     capture_output=True, text=True, env=ENV, cwd=str(model_dir.parent), timeout=900)
  assert r.returncode == 0, r.stderr[-3000:]
  return model_dir, r


@pytest.mark.slow
def test_demo_prints_no_startup_noise(demo_run):
  _, r = demo_run
  assert [n for n in NOISE if n in r.stderr + r.stdout] == [], r.stderr[:3000]


@pytest.mark.slow
def test_demo_table_and_exports_load(demo_run):
  model_dir, r = demo_run
  rows = dict(re.findall(r"^\| (frozen model[^|]*?) \| ([0-9.]+) \|$", r.stdout, re.M))
  told, taskless = rows["frozen model, told the task (`last word:` prefix)"], rows["frozen model, prefix removed, no prompt"]
  learned = rows["frozen model, prefix removed, learned prompt (640 params)"]
  # The bundled model knows the task when told it and cannot tell which word without the prefix.
  assert float(told) >= 90.0 and float(taskless) < 50.0 and 0.0 <= float(learned) <= 100.0
  summary = json.loads((model_dir / "demo_summary.json").read_text())
  assert summary["steps"] == 2 and summary["frozen_told_the_task"] == pytest.approx(float(told), abs=0.05)
  assert (model_dir / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

  export = model_dir / "export"
  best = np.load(model_dir / "best" / "prompt.npy")
  assert best.shape == (10, 64) and np.isfinite(best).all()
  np.testing.assert_array_equal(np.load(export / "prompt.npy"), best)
  card = json.loads((export / "model_card.json").read_text())
  step = card["step"]  # global: the bundled checkpoint_1500 plus the best prompt's steps trained
  assert step == 1500 + card["steps_trained"] and 0 <= card["steps_trained"] <= 2
  release = export / "numpy_checkpoints" / f"checkpoint_{step}" / "encoder.prompt.prompt.prompt"
  np.testing.assert_array_equal(np.load(release), best)  # the original release's file is a plain .npy
  peft_dir = export / "peft"
  np.testing.assert_array_equal(load_file(str(peft_dir / "adapter_model.safetensors"))["prompt_embeddings"], best)
  config = json.loads((peft_dir / "adapter_config.json").read_text())
  assert (config["peft_type"], config["num_virtual_tokens"], config["token_dim"]) == ("PROMPT_TUNING", 10, 64)
  for path in (export / "prompt.npy", release, peft_dir):
    np.testing.assert_array_equal(prompt_files.load_prompt(str(path)), best)
  card = json.loads((export / "model_card.json").read_text())
  assert (card["task"], card["prompt_length"], card["token_dim"]) == ("demo_last_word_taskless", 10, 64)
