"""run_tpu.sh and scripts/tpu_worker_setup.sh: the gcloud commands, argument quoting,
--dry-run, shellcheck, and a pod set up end to end on fake workers.

A fake `gcloud` on PATH records its argv as JSON lines; the remote command strings are
then run by a local bash against a fake `python`, to prove that arguments with spaces
and quotes reach the training program unchanged. With FAKE_TPU_ROOT set, the same fake
plays a TPU: worker N is the folder FAKE_TPU_ROOT/wN (its $HOME), ssh runs the command
there with bash (all workers at once, each one's output in <--output-directory>/N.log as
gcloud writes it), scp copies files in and out. The workers' python3 is a real Python
3.10, as on Google's TPU images; uv is real, with no network (UV_OFFLINE, no Python
downloads), so the venv's Python must come from an interpreter already on the machine.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import time

import pytest
import uv

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "run_tpu.sh"
TARGET = ["--name", "pt-1", "--zone", "europe-west4-a"]
TRICKY = ["--gin_file=gin/runs/xxl.gin", "--gin.MODEL_DIR='gs://bucket/run 1'",
          """--gin.CLASS_LABELS=["it's", 'a b']""", "--gin.X=$HOME `id` \\n;|&", "plain words here"]
SSH = ["compute", "tpus", "tpu-vm", "ssh", "pt-1", "--zone", "europe-west4-a"]
SCP = ["compute", "tpus", "tpu-vm", "scp"]
WORKER_SETUP = REPO / "scripts" / "tpu_worker_setup.sh"

FAKE_GCLOUD = """\
import json, os, pathlib, shutil, subprocess, sys, threading
argv = sys.argv[1:]
with open(os.environ["FAKE_GCLOUD_LOG"], "a") as f:
  f.write(json.dumps(argv) + "\\n")

def flag(name):
  for i, arg in enumerate(argv):
    if arg.startswith(name + "="):
      return arg.split("=", 1)[1]
    if arg == name:
      return argv[i + 1]

verb, out_dir, root = argv[3], flag("--output-directory"), os.environ.get("FAKE_TPU_ROOT")
if not root:  # record only; gcloud writes <dir>/<worker>.log per worker
  if out_dir:
    pathlib.Path(out_dir, "0.log").write_text("tpu_worker_setup: ok: recorded only\\n")
  sys.exit(0)
count = int(os.environ["FAKE_TPU_WORKERS"])
worker = flag("--worker") or "0"
workers = list(range(count)) if worker == "all" else [int(w) for w in worker.split(",")]
home = lambda w: pathlib.Path(root, f"w{w}")
if verb == "describe":
  assert flag("--format") == "value(networkEndpoints.len())", argv
  print(count)
elif verb == "ssh":
  rcs = {}
  def play(w):
    env = dict(os.environ, HOME=str(home(w)), PATH=f"{home(w)}/bin:{os.environ['FAKE_WORKER_PATH']}")
    out = open(f"{out_dir}/{w}.log", "w") if out_dir else None
    rcs[w] = subprocess.run(["bash", "-c", flag("--command")], cwd=home(w), env=env, stdout=out,
                            stderr=subprocess.STDOUT if out else None).returncode
  threads = [threading.Thread(target=play, args=(w,)) for w in workers]
  [t.start() for t in threads]
  [t.join() for t in threads]
  if len(workers) == 1:  # as gcloud: one worker's exit code is its own; several only report
    sys.exit(rcs[workers[0]])
  for w, rc in sorted(rcs.items()):
    if rc:
      print(f"##### Command execution on worker {w} failed with return code {rc}. Continuing.", file=sys.stderr)
elif verb == "scp":
  source, dest = argv[4], argv[5]
  for w in workers:
    if ":" in dest:  # upload
      shutil.copy(source, home(w) / dest.split(":", 1)[1])
    else:
      remote = home(w) / source.split(":", 1)[1]
      if not remote.exists():
        sys.exit(f"scp: {remote}: No such file or directory")
      shutil.copy(remote, dest)
"""

# The jax that the fake workers' venvs install: devices() answers as a TPU host does, or
# fails as one whose TPU another process holds (when ~/tpu_busy exists).
JAX_STANDIN = """\
import os
__version__ = "0.0.0+standin"

class TpuDevice:
  platform = "tpu"
  def __init__(self, id):
    self.id = id
  def __repr__(self):
    return f"TpuDevice(id={self.id})"

def devices():
  if os.path.exists(os.path.expanduser("~/tpu_busy")):
    raise RuntimeError("Unable to initialize backend 'tpu': TPU is already in use by another process")
  return [TpuDevice(i) for i in range(4)]
"""


@pytest.fixture
def fake(tmp_path):
  """Environment with a recording fake gcloud first on PATH; returns (env, read_calls)."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  log = tmp_path / "gcloud_calls.jsonl"
  gcloud = bin_dir / "gcloud"
  gcloud.write_text(f"#!{sys.executable}\n{FAKE_GCLOUD}")
  gcloud.chmod(0o755)
  env = {k: v for k, v in os.environ.items() if not k.startswith("TPU_") and k != "REPO_URL"}
  env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", FAKE_GCLOUD_LOG=str(log), TMPDIR=str(tmp_path))

  def calls():
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
  return env, calls


def run_script(env, *args, check=True, cwd=None, timeout=60):
  proc = subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout,
                        cwd=cwd)
  if check:
    assert proc.returncode == 0, proc.stderr
  return proc


def test_shellcheck_clean():
  if shutil.which("shellcheck") is None:
    pytest.fail("shellcheck is not installed: apt-get install -y shellcheck")
  proc = subprocess.run(["shellcheck", str(SCRIPT), str(WORKER_SETUP)], capture_output=True, text=True)
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


def test_create_setup_logs_stop_delete(fake, tmp_path):
  env, calls = fake
  run_script(env, *TARGET, "create", "--accelerator-type", "v3-32", "--spot")
  run_script(env, *TARGET, "setup", "--repo", "https://example.com/pt.git", "--branch", "dev", cwd=tmp_path)
  run_script(env, *TARGET, "logs", "--worker", "all", "--lines", "20", "--no-follow")
  run_script(env, *TARGET, "stop")
  run_script(env, *TARGET, "delete")
  create, ship, setup, check, logs, stop, delete = calls()
  assert create == ["compute", "tpus", "tpu-vm", "create", "pt-1", "--zone", "europe-west4-a",
                    "--accelerator-type", "v3-32", "--version", "tpu-ubuntu2204-base", "--spot"]
  # This checkout's worker script goes to every worker; install, then the device check, on all.
  assert ship == SCP + [str(WORKER_SETUP), "pt-1:tpu_worker_setup.sh", "--zone", "europe-west4-a", "--worker=all"]
  out_dir = str(pathlib.Path("runs", "tpu", "pt-1", "setup"))
  assert setup[:-1] == SSH + ["--worker=all", "--output-directory", f"{out_dir}/install", "--command"]
  assert "git clone -q --branch dev https://example.com/pt.git prompt_tuning_jax" in setup[-1]
  assert setup[-1].endswith("&& bash tpu_worker_setup.sh install --dir prompt_tuning_jax --python 3.11 --extras tpu")
  assert check == SSH + ["--worker=all", "--output-directory", f"{out_dir}/check", "--command",
                         "bash tpu_worker_setup.sh check --dir prompt_tuning_jax --timeout 600"]
  assert logs == SSH + ["--worker=all", "--command", "tail -n 20 prompt_tuning_jax/logs/train.log"]
  assert stop[:-1] == SSH + ["--worker=all", "--command"]
  assert 'kill "$(cat logs/train.pid)"' in stop[-1]
  assert "waiting up to 300 s" in stop[-1] and "kill -9 \"$pid\"" in stop[-1]
  assert "lsof -t /dev/accel* /dev/vfio/*" in stop[-1] and "fuser /dev/accel*" in stop[-1]
  assert "sudo kill -9 $pids" in stop[-1]
  assert delete == ["compute", "tpus", "tpu-vm", "delete", "pt-1", "--zone", "europe-west4-a", "--quiet"]
  for command in (setup[-1], stop[-1]):
    subprocess.run(["bash", "-n", "-c", command], check=True)  # valid shell syntax


@pytest.mark.parametrize("accelerator, image", [("v6e-16", "v2-alpha-tpuv6e"), ("v5p-32", "v2-alpha-tpuv5"),
                                                ("v5litepod-16", "v2-alpha-tpuv5-lite"),
                                                ("v4-32", "tpu-ubuntu2204-base")])
def test_create_picks_googles_image_for_the_generation(fake, accelerator, image):
  env, calls = fake
  run_script(env, *TARGET, "create", "--accelerator-type", accelerator)
  run_script(env, *TARGET, "create", "--accelerator-type", accelerator, "--version", "my-image")
  default, chosen = calls()
  assert default[-4:] == ["--accelerator-type", accelerator, "--version", image]
  assert chosen[-1] == "my-image"


def test_ssh_options_reach_every_ssh_and_scp(fake, tmp_path):
  env, calls = fake
  opts = ["--internal-ip", "--tunnel-through-iap", "--ssh-flag", "-o ProxyJump=bastion", "--scp-flag", "-l 8000"]
  run_script(env, *TARGET, *opts, "setup", "--copy", cwd=tmp_path)
  run_script(env, *TARGET, *opts, "launch", "--", "--gin_file=a.gin")
  run_script(env, *TARGET, *opts, "logs", "--no-follow")
  run_script(env, *TARGET, *opts, "stop")
  run_script(env, *TARGET, *opts, "logs", "--fetch", "--worker", "1", "--to", str(tmp_path / "got"))
  recorded = calls()
  verbs = [call[3] for call in recorded]
  assert verbs == ["scp", "scp", "ssh", "ssh", "ssh", "ssh", "ssh", "scp"]
  for call in recorded:
    assert "--internal-ip" in call and "--tunnel-through-iap" in call
    if call[3] == "ssh":
      assert "--ssh-flag=-o ProxyJump=bastion" in call and not any(a.startswith("--scp-flag") for a in call)
      assert call.index("--ssh-flag=-o ProxyJump=bastion") < call.index("--command")
    else:
      assert "--scp-flag=-l 8000" in call and not any(a.startswith("--ssh-flag") for a in call)
  assert recorded[-1][4:6] == ["pt-1:prompt_tuning_jax/logs/train.log", str(tmp_path / "got" / "worker1" / "train.log")]


def test_setup_copy_uploads_this_checkout(fake, tmp_path):
  env, calls = fake
  run_script(env, *TARGET, "setup", "--copy", cwd=tmp_path)
  scp, ship, ssh, check = calls()
  assert scp[:4] == ["compute", "tpus", "tpu-vm", "scp"] and scp[4].endswith(".tar.gz")
  assert scp[5:] == ["pt-1:prompt_tuning_jax.tar.gz", "--zone", "europe-west4-a", "--worker=all"]
  assert not pathlib.Path(scp[4]).exists()  # local tarball removed after upload
  assert ship[4:6] == [str(WORKER_SETUP), "pt-1:tpu_worker_setup.sh"]
  assert ssh[:4] == SSH[:4] and ssh[-2] == "--command"
  assert ssh[-1].startswith("mkdir -p prompt_tuning_jax && tar -xzf prompt_tuning_jax.tar.gz")
  assert ssh[-1].endswith("&& bash tpu_worker_setup.sh install --dir prompt_tuning_jax --python 3.11 --extras tpu")
  assert check[-1].startswith("bash tpu_worker_setup.sh check")


def test_dry_run_prints_and_runs_nothing(fake, tmp_path):
  env, calls = fake
  out = run_script(env, "--dry-run", *TARGET, "launch", "--", *TRICKY).stdout
  setup = run_script(env, "--dry-run", *TARGET, "setup", "--copy", cwd=tmp_path).stdout
  out += setup
  out += run_script(env, "--dry-run", *TARGET, "stop").stdout
  fetch = run_script(env, "--dry-run", *TARGET, "logs", "--fetch", cwd=tmp_path).stdout
  out += fetch
  assert calls() == [] and not (tmp_path / "runs").exists()
  lines = out.strip().splitlines()
  # launch; tar, scp, rm, scp worker script, rm -rf + mkdir of the log folder, ssh install,
  # ssh check; stop; describe, a comment, mkdir, scp
  assert len(lines) == 14
  launch = shlex.split(lines[0])
  assert launch[:10] == ["gcloud"] + SSH + ["--worker=all", "--command"]
  assert lines[1].startswith("tar -czf ") and not list(pathlib.Path(env["TMPDIR"]).glob("*.tar.gz"))
  assert shlex.split(lines[9])[-1].endswith("; true")
  assert [shlex.split(line)[-1] for line in setup.splitlines()[-2:]] == [
      "mkdir -p prompt_tuning_jax && tar -xzf prompt_tuning_jax.tar.gz -C prompt_tuning_jax && rm "
      "prompt_tuning_jax.tar.gz && bash tpu_worker_setup.sh install --dir prompt_tuning_jax --python 3.11 "
      "--extras tpu",
      "bash tpu_worker_setup.sh check --dir prompt_tuning_jax --timeout 600"]
  describe, comment, mkdir, scp = fetch.strip().splitlines()
  assert shlex.split(describe) == ["gcloud", "compute", "tpus", "tpu-vm", "describe", "pt-1", "--zone",
                                   "europe-west4-a", "--format=value(networkEndpoints.len())"]
  assert comment.startswith("# ") and mkdir == "mkdir -p runs/tpu/pt-1/worker0"
  assert shlex.split(scp)[1:7] == SCP + ["pt-1:prompt_tuning_jax/logs/train.log", "runs/tpu/pt-1/worker0/train.log"]


def test_errors(fake):
  env, calls = fake
  proc = run_script(env, "launch", check=False)
  assert proc.returncode == 2 and "--name NAME or set TPU_NAME" in proc.stderr
  proc = run_script(env, *TARGET, "frobnicate", check=False)
  assert proc.returncode == 2 and "unknown command frobnicate" in proc.stderr
  proc = run_script(env, *TARGET, "setup", check=False)
  assert proc.returncode == 2 and "--repo URL" in proc.stderr
  for option, value, says in [("--python", "3.10", "need 3.11 or newer"), ("--python", "three", "need 3.11"),
                              ("--timeout", "soon", "whole seconds")]:
    proc = run_script(env, *TARGET, "setup", "--copy", option, value, check=False)
    assert proc.returncode == 2 and says in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr
  proc = run_script(env, *TARGET, "stop", "--wait", "-1", check=False)
  assert proc.returncode == 2 and "stop --wait -1: need whole seconds" in proc.stderr
  proc = run_script(env, *TARGET, "logs", "--to", "x", check=False)
  assert proc.returncode == 2 and "--to goes with --fetch" in proc.stderr
  assert calls() == []
  proc = run_script(dict(env, TPU_NAME="from-env", TPU_ZONE="us-central1-a"), "delete")
  assert calls()[-1][4:7] == ["from-env", "--zone", "us-central1-a"]
  assert "Usage:" in run_script(env, "--help").stdout


# ------------------------------------------------------------------ a pod on fake workers

def _python310() -> str:
  """A real Python 3.10, the python3 of Google's TPU images (Ubuntu 22.04)."""
  uv_bin = uv.find_uv_bin()
  found = subprocess.run([uv_bin, "python", "find", "3.10"], capture_output=True, text=True,
                         env=dict(os.environ, UV_PYTHON_DOWNLOADS="never")).stdout.split()
  pyenv_root = pathlib.Path(os.environ.get("PYENV_ROOT", pathlib.Path.home() / ".pyenv"))
  candidates = [os.environ.get("PTJ_TEST_PYTHON310", ""), *found, "/usr/bin/python3.10",
                *sorted(map(str, pyenv_root.glob("versions/3.10*/bin/python3.10")))]
  for candidate in filter(os.path.isfile, filter(None, candidates)):
    probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True)
    if probe.returncode == 0 and probe.stdout.strip() == "(3, 10)":
      return candidate
  pytest.fail("no Python 3.10 to stand in for the TPU image's python3: `uv python install 3.10` "
              "(or apt-get install python3.10), or point PTJ_TEST_PYTHON310 at one")


def _git(*args, cwd):
  subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main",
                  *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def pod(fake, tmp_path):
  """Two fake workers whose python3 is 3.10, a real uv without network, and a git repo
  of a tiny project (a stand-in `jax` with a `tpu` extra) to set up; returns (env, repo, root)."""
  env, calls = fake
  standin = tmp_path / "standin_bin"
  standin.mkdir()
  (standin / "python3").symlink_to(_python310())
  (standin / "uv").symlink_to(uv.find_uv_bin())
  root = tmp_path / "workers"
  for w in range(2):
    (root / f"w{w}" / "bin").mkdir(parents=True)
    hostname = root / f"w{w}" / "bin" / "hostname"
    hostname.write_text(f"#!/bin/sh\necho fake-tpu-w-{w}\n")
    hostname.chmod(0o755)
  repo = tmp_path / "project"
  (repo / "src" / "jax").mkdir(parents=True)
  (repo / "pyproject.toml").write_text(textwrap.dedent("""\
      [project]
      name = "jax"
      version = "0.0.0+standin"
      requires-python = ">=3.11"
      [project.optional-dependencies]
      tpu = []
      [build-system]
      requires = ["uv_build>=0.8,<1"]
      build-backend = "uv_build"
      """))
  (repo / "src" / "jax" / "__init__.py").write_text(JAX_STANDIN)
  _git("init", "-q", cwd=repo)
  _git("add", ".", cwd=repo)
  _git("commit", "-q", "-m", "stand-in project", cwd=repo)
  worker_path = os.pathsep.join([str(standin), os.path.dirname(sys.executable), "/usr/bin", "/bin"])
  env = {k: v for k, v in env.items() if not k.startswith(("UV_", "VIRTUAL_ENV", "PIP_", "PYTHON"))}
  env.update(FAKE_TPU_ROOT=str(root), FAKE_TPU_WORKERS="2", FAKE_WORKER_PATH=worker_path,
             UV_OFFLINE="1", UV_PYTHON_DOWNLOADS="never", UV_NO_CONFIG="1",
             UV_CACHE_DIR=str(tmp_path / "uv_cache"), UV_PYTHON_INSTALL_DIR=str(tmp_path / "uv_pythons"))
  return env, repo, root


def _worker_python(root, w, *code):
  return subprocess.run([str(root / f"w{w}" / "prompt_tuning_jax" / ".venv" / "bin" / "python"), "-c", *code],
                        capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.slow
def test_setup_provisions_python311_on_workers_whose_python3_is_310(pod, tmp_path):
  env, repo, root = pod
  image_python = subprocess.run(["bash", "-c", "python3 --version"], capture_output=True, text=True, check=True,
                                env=dict(env, PATH=env["FAKE_WORKER_PATH"])).stdout
  assert image_python.startswith("Python 3.10.")
  want = f"{sys.version_info.major}.{sys.version_info.minor}"  # this machine's own >= 3.11
  proc = run_script(env, *TARGET, "setup", "--repo", str(repo), "--python", want, cwd=tmp_path, timeout=600)
  for w in range(2):
    assert json.loads(_worker_python(root, w, "import json, sys; print(json.dumps(sys.version_info[:2]))")) == \
        list(sys.version_info[:2])
    assert _worker_python(root, w, "import jax; print(jax.__file__)").startswith(str(root / f"w{w}"))
    install_log = (tmp_path / "runs" / "tpu" / "pt-1" / "setup" / "install" / f"{w}.log").read_text()
    assert f"python3 on PATH: {image_python.split()[1]}" in install_log
    assert re.search(rf"^worker {w} \(fake-tpu-w-{w}\): ok: .*\.venv on Python {want}\.\d+ \(python3 on PATH: 3\.10\.",
                     proc.stdout, re.M), proc.stdout
    assert re.search(rf"^worker {w} \(fake-tpu-w-{w}\): ok: python {want}\.\d+, jax 0\.0\.0\+standin, 4 tpu devices",
                     proc.stdout, re.M), proc.stdout

  # Again (fetch + pull, venv kept), with worker 1's TPU held by another process.
  (root / "w1" / "tpu_busy").touch()
  proc = run_script(env, *TARGET, "setup", "--repo", str(repo), "--python", want, cwd=tmp_path, timeout=600,
                    check=False)
  assert proc.returncode == 1
  assert "keeping" in (tmp_path / "runs" / "tpu" / "pt-1" / "setup" / "install" / "0.log").read_text()
  assert re.search(r"^worker 0 \(fake-tpu-w-0\): ok: python ", proc.stdout, re.M)
  (line,) = [line for line in proc.stderr.splitlines() if line.startswith("run_tpu.sh:")]  # and gcloud's own
  assert line.startswith("run_tpu.sh: setup (check) failed on worker 1 (fake-tpu-w-1): import jax; jax.devices() "
                         "failed: RuntimeError: Unable to initialize backend 'tpu': TPU is already in use"), line
  assert line.endswith("check/1.log]") and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_setup_names_the_worker_that_cannot_get_uv(pod, tmp_path):
  env, repo, root = pod
  # No uv anywhere and pip cannot reach an index: the worker script says so in one line.
  (pathlib.Path(env["FAKE_WORKER_PATH"].split(os.pathsep)[0]) / "uv").unlink()
  env = dict(env, FAKE_WORKER_PATH=env["FAKE_WORKER_PATH"].replace(os.path.dirname(sys.executable), "/nonexistent"),
             PIP_NO_INDEX="1", PIP_CONFIG_FILE=os.devnull)
  if shutil.which("uv", path=env["FAKE_WORKER_PATH"]):
    pytest.fail(f"uv on the fake workers' PATH ({shutil.which('uv', path=env['FAKE_WORKER_PATH'])}); "
                "this test needs a PATH without it")
  proc = run_script(env, *TARGET, "setup", "--repo", str(repo), cwd=tmp_path, timeout=300, check=False)
  assert proc.returncode == 1
  lines = [line for line in proc.stderr.splitlines() if line.startswith("run_tpu.sh:")]
  assert [line.split(":")[1] for line in lines] == [" setup (install) failed on worker 0 (fake-tpu-w-0)",
                                                    " setup (install) failed on worker 1 (fake-tpu-w-1)"]
  assert all("python3 -m pip install --user uv failed" in line for line in lines), lines


def test_worker_setup_refuses_an_old_python(tmp_path):
  proc = subprocess.run(["bash", str(WORKER_SETUP), "install", "--dir", str(tmp_path), "--python", "3.10"],
                        capture_output=True, text=True)
  assert proc.returncode == 2
  assert proc.stdout.splitlines()[-1].startswith("tpu_worker_setup: FAILED: --python 3.10: need 3.11 or newer")
  proc = subprocess.run(["bash", str(WORKER_SETUP), "check", "--dir", str(tmp_path)], capture_output=True, text=True)
  assert proc.returncode == 1 and "run install first" in proc.stdout.splitlines()[-1]


def test_logs_fetch_copies_each_workers_log(pod, tmp_path):
  env, _, root = pod
  for w in range(2):
    (root / f"w{w}" / "prompt_tuning_jax" / "logs").mkdir(parents=True)
    (root / f"w{w}" / "prompt_tuning_jax" / "logs" / "train.log").write_text(f"step 10 on worker {w}\n")
  proc = run_script(env, *TARGET, "logs", "--fetch", cwd=tmp_path)
  for w in range(2):
    assert (tmp_path / "runs" / "tpu" / "pt-1" / f"worker{w}" / "train.log").read_text() == f"step 10 on worker {w}\n"
  assert "2 worker log(s)" in proc.stdout
  (root / "w1" / "prompt_tuning_jax" / "logs" / "train.log").unlink()
  proc = run_script(env, *TARGET, "logs", "--fetch", "--to", str(tmp_path / "again"), check=False)
  assert proc.returncode == 1 and "could not copy prompt_tuning_jax/logs/train.log from worker(s) 1;" in proc.stderr
  assert (tmp_path / "again" / "worker0" / "train.log").exists()


SAVER = """\
import os, signal, sys, time
def save(*_):
  time.sleep(float(os.environ.get("SAVE_S", "2")))  # a checkpoint being written
  open("saved", "w").write("ok")
  sys.exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN if os.environ.get("IGNORE_TERM") else save)
open("started", "w").write(str(os.getpid()))
time.sleep(600)
"""


def _launch_saver(env, root):
  """`launch` a program that saves for 2 s on SIGTERM, on both fake workers."""
  for w in range(2):
    checkout = root / f"w{w}" / "prompt_tuning_jax"
    (checkout / ".venv" / "bin").mkdir(parents=True)
    (checkout / ".venv" / "bin" / "activate").write_text(f'PATH="{checkout / ".venv" / "bin"}:$PATH"\n')
    (checkout / ".venv" / "bin" / "python").symlink_to(sys.executable)
    (checkout / "saver.py").write_text(SAVER)
  run_script(env, *TARGET, "launch", "--module", "saver")
  deadline = time.time() + 30
  while not all((root / f"w{w}" / "prompt_tuning_jax" / "started").exists() for w in range(2)):
    assert time.time() < deadline, "the launched program did not start"
    time.sleep(0.1)
  return [int((root / f"w{w}" / "prompt_tuning_jax" / "started").read_text()) for w in range(2)]


def _gone(pid):
  stat = pathlib.Path(f"/proc/{pid}/stat")
  return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.slow
def test_stop_waits_for_the_runs_own_save(pod):
  env, _, root = pod
  pids = _launch_saver(dict(env, SAVE_S="7"), root)  # longer than the old fixed 5 s before SIGKILL
  proc = run_script(env, *TARGET, "stop", "--wait", "60")
  for w, pid in enumerate(pids):
    assert (root / f"w{w}" / "prompt_tuning_jax" / "saved").read_text() == "ok"  # not killed mid-save
    assert _gone(pid) and not (root / f"w{w}" / "prompt_tuning_jax" / "logs" / "train.pid").exists()
  assert proc.stdout.count("waiting up to 60 s for its checkpoint") == 2
  assert len(re.findall(r"stop: \d+ exited after [1-9]\d* s", proc.stdout)) == 2, proc.stdout


def test_stop_kills_a_run_that_outlives_the_wait(pod):
  env, _, root = pod
  pids = _launch_saver(dict(env, IGNORE_TERM="1"), root)
  start = time.time()
  proc = run_script(env, *TARGET, "stop", "--wait", "1")
  assert time.time() - start < 30  # generous ceiling; the wait is 1 s
  assert proc.stdout.count("still running after 1 s (raise --wait); killing it") == 2, proc.stdout
  for w, pid in enumerate(pids):
    assert _gone(pid) and not (root / f"w{w}" / "prompt_tuning_jax" / "saved").exists()


def test_examples_name_files_that_exist():
  """Every --gin_file in run_tpu.sh's help and in the README's and docs' run_tpu examples exists."""
  texts = [SCRIPT.read_text()]
  readme = (REPO / "README.md").read_text()
  pod_section = readme.split("## Running the paper on a TPU pod", 1)[1].split("\n## ", 1)[0]
  texts.append(pod_section)
  texts += [path.read_text() for path in (REPO / "docs").glob("*.md") if "run_tpu" in path.read_text()]
  named = {m for text in texts for m in re.findall(r"--gin_file=([\w./-]+\.gin)", text)}
  assert named, "no gin files named in the examples"
  for name in named:
    assert (REPO / name).is_file() or (REPO / "gin" / name).is_file(), f"{name} does not exist"
  assert "--gin_file=models/t5_1_1_xxl.gin" in texts[0] and "runs/prompt_tuning.gin" in texts[0]
