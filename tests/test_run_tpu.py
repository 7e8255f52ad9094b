"""run_tpu.sh: the gcloud commands it issues, argument quoting, --dry-run, shellcheck.

A fake `gcloud` on PATH records its argv as JSON lines; the remote command strings are
then run by a local bash against a fake `python`, to prove that arguments with spaces
and quotes reach the training program unchanged.
"""
from __future__ import annotations

import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "run_tpu.sh"
TARGET = ["--name", "pt-1", "--zone", "europe-west4-a"]
TRICKY = ["--gin_file=gin/runs/xxl.gin", "--gin.MODEL_DIR='gs://bucket/run 1'",
          """--gin.CLASS_LABELS=["it's", 'a b']""", "--gin.X=$HOME `id` \\n;|&", "plain words here"]
SSH = ["compute", "tpus", "tpu-vm", "ssh", "pt-1", "--zone", "europe-west4-a"]


@pytest.fixture
def fake(tmp_path):
  """Environment with a recording fake gcloud first on PATH; returns (env, read_calls)."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  log = tmp_path / "gcloud_calls.jsonl"
  gcloud = bin_dir / "gcloud"
  gcloud.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    "with open(os.environ['FAKE_GCLOUD_LOG'], 'a') as f:\n"
                    "  f.write(json.dumps(sys.argv[1:]) + '\\n')\n")
  gcloud.chmod(0o755)
  env = {k: v for k, v in os.environ.items() if not k.startswith("TPU_") and k != "REPO_URL"}
  env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", FAKE_GCLOUD_LOG=str(log), TMPDIR=str(tmp_path))

  def calls():
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
  return env, calls


def run_script(env, *args, check=True):
  proc = subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60)
  if check:
    assert proc.returncode == 0, proc.stderr
  return proc


def test_shellcheck_clean():
  if shutil.which("shellcheck") is None:
    pytest.fail("shellcheck is not installed: apt-get install -y shellcheck")
  proc = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout


def test_launch_passes_arguments_verbatim(fake, tmp_path):
  env, calls = fake
  passed = TRICKY + ["two\nlines"]
  run_script(env, *TARGET, "launch", "--", *passed)
  (call,) = calls()
  assert call[:-2] == SSH + ["--worker=all"] and call[-2] == "--command"
  # Play the worker: a checkout with a venv whose `python` records its argv.
  home = tmp_path / "home"
  venv_bin = home / "prompt_tuning_jax" / ".venv" / "bin"
  venv_bin.mkdir(parents=True)
  record = tmp_path / "python_argv.json"
  (venv_bin / "python").write_text(f"#!{sys.executable}\nimport json, sys\n"
                                   f"open({str(record)!r}, 'w').write(json.dumps(sys.argv[1:]))\n")
  (venv_bin / "python").chmod(0o755)
  (venv_bin / "activate").write_text(f'PATH="{venv_bin}:$PATH"\n')
  subprocess.run(["bash", "-c", call[-1]], cwd=home, env=dict(env, HOME=str(home)), check=True, timeout=30)
  deadline = time.time() + 20
  while not record.exists() and time.time() < deadline:
    time.sleep(0.1)
  assert json.loads(record.read_text()) == ["-m", "prompt_tuning_jax.train", *passed]
  assert (home / "prompt_tuning_jax" / "logs" / "train.pid").read_text().strip().isdigit()
  assert (home / "prompt_tuning_jax" / "logs" / "train.log").exists()


def test_launch_options(fake):
  env, calls = fake
  run_script(env, *TARGET, "--project", "my-proj", "launch", "--module", "prompt_tuning_jax.eval",
             "--log", "logs/eval.log", "--gin_file=a.gin")
  (call,) = calls()
  assert call[:9] == SSH + ["--project", "my-proj"]
  assert "python -m prompt_tuning_jax.eval --gin_file=a.gin > logs/eval.log" in call[-1]


def test_create_setup_logs_stop_delete(fake):
  env, calls = fake
  run_script(env, *TARGET, "create", "--accelerator-type", "v3-32", "--spot")
  run_script(env, *TARGET, "setup", "--repo", "https://example.com/pt.git", "--branch", "dev")
  run_script(env, *TARGET, "logs", "--worker", "all", "--lines", "20", "--no-follow")
  run_script(env, *TARGET, "stop")
  run_script(env, *TARGET, "delete")
  create, setup, logs, stop, delete = calls()
  assert create == ["compute", "tpus", "tpu-vm", "create", "pt-1", "--zone", "europe-west4-a",
                    "--accelerator-type", "v3-32", "--version", "tpu-ubuntu2204-base", "--spot"]
  assert setup[:-1] == SSH + ["--worker=all", "--command"]
  assert "git clone -q --branch dev https://example.com/pt.git prompt_tuning_jax" in setup[-1]
  assert "pip install -q -e '.[tpu]'" in setup[-1]
  assert logs == SSH + ["--worker=all", "--command", "tail -n 20 prompt_tuning_jax/logs/train.log"]
  assert stop[:-1] == SSH + ["--worker=all", "--command"]
  assert 'kill "$(cat logs/train.pid)"' in stop[-1]
  assert "lsof -t /dev/accel* /dev/vfio/*" in stop[-1] and "fuser /dev/accel*" in stop[-1]
  assert "sudo kill -9 $pids" in stop[-1]
  assert delete == ["compute", "tpus", "tpu-vm", "delete", "pt-1", "--zone", "europe-west4-a", "--quiet"]
  for command in (setup[-1], stop[-1]):
    subprocess.run(["bash", "-n", "-c", command], check=True)  # valid shell syntax


def test_setup_copy_uploads_this_checkout(fake, tmp_path):
  env, calls = fake
  run_script(env, *TARGET, "setup", "--copy")
  scp, ssh = calls()
  assert scp[:4] == ["compute", "tpus", "tpu-vm", "scp"] and scp[4].endswith(".tar.gz")
  assert scp[5:] == ["pt-1:prompt_tuning_jax.tar.gz", "--zone", "europe-west4-a", "--worker=all"]
  assert not pathlib.Path(scp[4]).exists()  # local tarball removed after upload
  assert ssh[:-1] == SSH + ["--worker=all", "--command"]
  assert ssh[-1].startswith("mkdir -p prompt_tuning_jax && tar -xzf prompt_tuning_jax.tar.gz")


def test_dry_run_prints_and_runs_nothing(fake):
  env, calls = fake
  out = run_script(env, "--dry-run", *TARGET, "launch", "--", *TRICKY).stdout
  out += run_script(env, "--dry-run", *TARGET, "setup", "--copy").stdout
  out += run_script(env, "--dry-run", *TARGET, "stop").stdout
  assert calls() == []
  lines = out.strip().splitlines()
  assert len(lines) == 6  # launch; tar, scp, rm, ssh; stop
  launch = shlex.split(lines[0])
  assert launch[:10] == ["gcloud"] + SSH + ["--worker=all", "--command"]
  assert lines[1].startswith("tar -czf ") and not list(pathlib.Path(env["TMPDIR"]).glob("*.tar.gz"))
  assert shlex.split(lines[-1])[-1].endswith("; true")


def test_errors(fake):
  env, calls = fake
  proc = run_script(env, "launch", check=False)
  assert proc.returncode == 2 and "--name NAME or set TPU_NAME" in proc.stderr
  proc = run_script(env, *TARGET, "frobnicate", check=False)
  assert proc.returncode == 2 and "unknown command frobnicate" in proc.stderr
  proc = run_script(env, *TARGET, "setup", check=False)
  assert proc.returncode == 2 and "--repo URL" in proc.stderr
  proc = run_script(dict(env, TPU_NAME="from-env", TPU_ZONE="us-central1-a"), "delete")
  assert calls()[-1][4:7] == ["from-env", "--zone", "us-central1-a"]
  assert "Usage:" in run_script(env, "--help").stdout
