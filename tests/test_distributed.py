"""Two real processes on this machine join one jax job over a local coordinator."""
from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from prompt_tuning_jax.parallel import distributed

REPO = pathlib.Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent("""
    import json, sys
    import numpy as np
    from prompt_tuning_jax.parallel import distributed, sharding
    pid, port = int(sys.argv[1]), sys.argv[2]
    assert distributed.initialize(f"127.0.0.1:{port}", 2, pid)
    assert distributed.initialize(f"127.0.0.1:{port}", 2, pid)  # idempotent
    import jax
    from jax.experimental import multihost_utils
    gathered = multihost_utils.process_allgather(np.array([10 * pid + 1]))
    mesh = sharding.make_mesh(sharding.PartitionConfig(num_partitions=1))  # (4, 1) over 2 hosts
    layout = sharding.data_layout(8, mesh)
    rows = np.arange(8, dtype=np.float32)[layout.rows]
    batch = sharding.make_global_batch({"x": rows}, mesh, 8)
    total = jax.jit(lambda x: x.sum(), out_shardings=sharding.replicated(mesh))(batch["x"])
    distributed.sync("test_done")
    print("RESULT " + json.dumps(dict(
        pid=pid, process_count=jax.process_count(), device_count=jax.device_count(),
        local=jax.local_device_count(), primary=distributed.is_primary(),
        gathered=np.asarray(gathered).ravel().tolist(), rows=[layout.rows.start, layout.rows.stop],
        shard=[layout.shard_id, layout.num_shards], total=float(total))), flush=True)
""")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run_pair(script: pathlib.Path) -> list[tuple[int, str, str]]:
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
             PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
  port = str(_free_port())
  procs = [subprocess.Popen([sys.executable, str(script), str(i), port], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  results = []
  try:
    for p in procs:
      out, err = p.communicate(timeout=120)
      results.append((p.returncode, out, err))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  return results


def test_two_processes_join_and_reduce(tmp_path):
  script = tmp_path / "worker.py"
  script.write_text(WORKER)
  results = _run_pair(script)
  if any(rc != 0 and "address already in use" in err.lower() for rc, _, err in results):
    results = _run_pair(script)  # the free port was taken in between: one retry
  parsed = []
  for rc, out, err in results:
    assert rc == 0, f"worker failed (rc={rc}):\n{err[-3000:]}"
    line = [l for l in out.splitlines() if l.startswith("RESULT ")]
    assert line, f"no result line in output:\n{out}\n{err[-2000:]}"
    parsed.append(json.loads(line[0][len("RESULT "):]))
  for pid, r in enumerate(parsed):
    assert r["pid"] == pid
    assert (r["process_count"], r["device_count"], r["local"]) == (2, 4, 2)
    assert r["primary"] == (pid == 0)
    assert r["gathered"] == [1, 11]
    assert r["rows"] == [4 * pid, 4 * pid + 4]
    assert r["shard"] == [pid, 2]
    assert r["total"] == sum(range(8))


def test_initialize_single_process_is_noop(monkeypatch):
  for var in ("SLURM_JOB_ID", "OMPI_MCA_orte_hnp_uri", "TPU_WORKER_HOSTNAMES"):
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  assert distributed.detect_cluster() is None
  assert distributed.initialize() is False
  assert distributed.is_primary()
  distributed.sync("alone")  # must not block


def test_detect_cluster_from_env(monkeypatch):
  slurm = dict(SLURM_JOB_ID="7", SLURM_STEP_NODELIST="n[1-2]", SLURM_NTASKS="2", SLURM_PROCID="0",
               SLURM_LOCALID="0")
  for k, v in slurm.items():
    monkeypatch.setenv(k, v)
  assert distributed.detect_cluster() == "slurm"
  monkeypatch.setenv("SLURM_NTASKS", "1")
  assert distributed.detect_cluster() != "slurm"
  monkeypatch.delenv("SLURM_JOB_ID")
  monkeypatch.setenv("OMPI_MCA_orte_hnp_uri", "1.0;tcp://10.0.0.1:1234")
  monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
  assert distributed.detect_cluster() == "openmpi"


def test_initialize_flag_errors():
  with pytest.raises(ValueError, match="must be given together"):
    distributed.initialize(coordinator_address="10.0.0.1:1234")
  with pytest.raises(ValueError, match="host:port"):
    distributed.initialize("10.0.0.1", 2, 0)
  with pytest.raises(ValueError, match=r"--process_id must be in \[0, --num_processes=2\), got 2"):
    distributed.initialize("10.0.0.1:1234", 2, 2)


_CLUSTER_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID",
                 "OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE",
                 "KUBERNETES_SERVICE_HOST", "JOB_COMPLETION_INDEX", "TPU_WORKER_HOSTNAMES")


@pytest.fixture
def bare_env(monkeypatch):
  for var in _CLUSTER_VARS:
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  return monkeypatch


@pytest.mark.parametrize("env,name,count", [
    (dict(PMI_SIZE="4"), "mpi4py", 4),
    (dict(KUBERNETES_SERVICE_HOST="10.0.0.1", JOB_COMPLETION_INDEX="3"), "k8s", None),
    (dict(SLURM_JOB_ID="7", SLURM_STEP_NODELIST="n[1-4]", SLURM_NTASKS="4", SLURM_PROCID="1",
          SLURM_LOCALID="0"), "slurm", 4),
    (dict(KUBERNETES_SERVICE_HOST="10.0.0.1"), None, None),  # a pod that is not an indexed Job
    (dict(PMI_SIZE="1"), None, None),
])
def test_find_cluster_kubernetes_mpi_slurm(bare_env, env, name, count):
  for k, v in env.items():
    bare_env.setenv(k, v)
  found = distributed.find_cluster()
  assert (found.name, found.num_processes) == (name, count) if name else found is None


def test_multi_process_env_without_initialize_is_refused(bare_env):
  """This process runs alone (jax.process_count() == 1) where the env says 4 tasks."""
  for k, v in dict(SLURM_JOB_ID="7", SLURM_STEP_NODELIST="n[1-4]", SLURM_NTASKS="4", SLURM_PROCID="1",
                   SLURM_LOCALID="0").items():
    bare_env.setenv(k, v)
  with pytest.raises(RuntimeError, match=r"multi-process slurm job was detected \(SLURM_NTASKS=4\)"):
    distributed.require_initialized()
  with pytest.raises(RuntimeError, match="every process would act as the primary"):
    distributed.initialize(cluster="none")


def test_kubernetes_index_zero_alone_is_allowed_and_missing_package_is_named(bare_env):
  bare_env.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
  bare_env.setenv("JOB_COMPLETION_INDEX", "0")
  distributed.require_initialized()  # index 0 could be a one-pod job
  bare_env.setenv("JOB_COMPLETION_INDEX", "2")
  with pytest.raises(RuntimeError, match="k8s"):
    distributed.require_initialized()
  import importlib.util
  if importlib.util.find_spec("kubernetes") is None:  # this venv: the package is absent
    with pytest.raises(RuntimeError, match=r"kubernetes package is missing: pip install jax\[k8s\]"):
      distributed.initialize()


def test_cluster_and_timeout_flags_are_checked():
  with pytest.raises(ValueError, match="--cluster must be one of"):
    distributed.initialize(cluster="yarn")
  with pytest.raises(ValueError, match="--distributed_timeout_s must be > 0"):
    distributed.initialize(timeout_s=0)


def _lone(argv: list[str], extra_env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, float]:
  env = {k: v for k, v in os.environ.items() if k not in _CLUSTER_VARS}
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO), **(extra_env or {}))
  t = time.time()
  out = subprocess.run([sys.executable, *argv], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
  return out, time.time() - t


def _one_line(out: subprocess.CompletedProcess) -> str:
  lines = [l for l in out.stderr.splitlines() if l.strip()]
  assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
  assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-3000:]
  assert "Check failure" not in out.stderr and "Traceback" not in out.stderr
  return lines[0]


@pytest.mark.parametrize("process_id, what", [(1, "no coordinator answered"),
                                              (0, "the coordinator answered but not every process joined")])
def test_lone_process_ends_with_one_line_within_the_timeout(process_id, what):
  """Process 1 with no coordinator, or process 0 whose peer never comes: jax would block
  for its whole timeout and abort (exit 134, a C++ stack trace); --distributed_timeout_s=3
  ends it with exit 2 and one line naming the coordinator and the flag."""
  port = _free_port()
  code = ("from prompt_tuning_jax.parallel import distributed; "
          f"distributed.initialize('127.0.0.1:{port}', 2, {process_id}, timeout_s=3)")
  out, seconds = _lone(["-c", code])
  line = _one_line(out)
  assert f"process {process_id} of 2" in line and f"coordinator 127.0.0.1:{port}" in line, line
  assert what in line and "--distributed_timeout_s=3" in line, line
  assert seconds < 90  # the jax import plus the 3 s


@pytest.mark.slow
def test_detected_slurm_job_without_coordinator_names_the_cluster_and_address():
  """jax's own SLURM detection picks the address (first node, port from the job id)."""
  slurm = dict(SLURM_JOB_ID="7", SLURM_STEP_NODELIST="localhost", SLURM_NTASKS="2", SLURM_PROCID="1",
               SLURM_LOCALID="0")
  code = "from prompt_tuning_jax.parallel import distributed; distributed.initialize(timeout_s=3)"
  out, _ = _lone(["-c", code], slurm)
  line = _one_line(out)
  port = 7 % 2 ** 12 + (65535 - 2 ** 12 + 1)
  assert "cluster slurm (SLURM_NTASKS=2)" in line and f"coordinator localhost:{port}" in line, line
  assert "--distributed_timeout_s=3" in line


@pytest.mark.slow
@pytest.mark.parametrize("command", ["eval", "infer", "score"])
def test_eval_infer_score_take_the_start_up_flags(tmp_path, command):
  """The same multi-host flags as train, --distributed_timeout_s included."""
  port = _free_port()
  inputs = tmp_path / "in.jsonl"
  inputs.write_text('{"inputs": "a", "targets": "b"}\n')
  io = [] if command == "eval" else [f"--input_file={inputs}", f"--output_file={tmp_path / 'out.jsonl'}"]
  out, seconds = _lone(["-m", f"prompt_tuning_jax.{command}", "--gin_file=tests/tiny_inline.gin",
                        "--gin.CHECKPOINT_PATH=tests/testdata/t5x_checkpoints/test_t5_tiny.checkpoint_0", *io,
                        f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", "--process_id=1",
                        "--distributed_timeout_s=2"])
  line = _one_line(out)
  assert f"coordinator 127.0.0.1:{port}" in line and "--distributed_timeout_s=2" in line, line
  assert seconds < 120
