"""Multi-host start-up: one call that works on a laptop, a TPU pod, SLURM, MPI, Kubernetes.

Every process of a multi-host job runs the same program; `jax.distributed.initialize`
must run first in each, before any computation, so that `jax.devices()` lists the
devices of all hosts. Single-process runs need nothing, so `initialize()` is a no-op
there and callers can call it unconditionally.

Start-up that cannot complete (no coordinator, a process that never joins) ends within
--distributed_timeout_s with one line naming the cluster, the coordinator address and the
flag (`StartupError`, or exit 2 from a watchdog where jax would abort the process). jax is
imported inside the functions, so a command's `--help` does not load it.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import importlib.util
import logging
import os
import socket
import sys
import threading
import time
from typing import Mapping

CLUSTERS = ("slurm", "openmpi", "mpi4py", "k8s", "tpu")
_JAX_METHOD = {"slurm": "slurm", "openmpi": "ompi", "mpi4py": "mpi4py", "k8s": None, "tpu": None}
DEFAULT_TIMEOUT_S = 300
STARTUP_EXIT_CODE = 2


class StartupError(RuntimeError):
  """The multi-process job cannot start (missing package, no coordinator, a missing peer)."""


@dataclasses.dataclass(frozen=True)
class Cluster:
  """A multi-process environment seen in the environment variables (no network calls)."""
  name: str  # one of CLUSTERS
  num_processes: int | None  # None: only the scheduler knows (Kubernetes, TPU from devices)
  evidence: str  # the variables that say so, for error messages


def _int(env: Mapping[str, str], key: str, default: int = 1) -> int:
  try:
    return int(env.get(key, default))
  except ValueError:
    return default


def find_cluster(env: Mapping[str, str] | None = None) -> Cluster | None:
  """The multi-process environment jax can configure itself from, else None.

  'slurm' (srun with >1 task), 'openmpi' (mpirun with >1 rank), 'mpi4py' (other MPIs:
  PMI_SIZE > 1, needs mpi4py), 'k8s' (an indexed Kubernetes Job or JobSet: needs the
  `kubernetes` package, jax[k8s]), 'tpu' (a Cloud TPU VM: jax reads the worker list from
  the TPU metadata, one process per host).
  """
  env = os.environ if env is None else env
  slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
  if all(k in env for k in slurm) and _int(env, "SLURM_NTASKS") > 1:
    return Cluster("slurm", _int(env, "SLURM_NTASKS"), f"SLURM_NTASKS={env['SLURM_NTASKS']}")
  if "OMPI_MCA_orte_hnp_uri" in env and _int(env, "OMPI_COMM_WORLD_SIZE") > 1:
    return Cluster("openmpi", _int(env, "OMPI_COMM_WORLD_SIZE"), f"OMPI_COMM_WORLD_SIZE={env['OMPI_COMM_WORLD_SIZE']}")
  for key in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE"):
    if _int(env, key) > 1:
      return Cluster("mpi4py", _int(env, key), f"{key}={env[key]}")
  if "KUBERNETES_SERVICE_HOST" in env and "JOB_COMPLETION_INDEX" in env:
    return Cluster("k8s", None, f"KUBERNETES_SERVICE_HOST and JOB_COMPLETION_INDEX={env['JOB_COMPLETION_INDEX']}")
  if env.get("JAX_PLATFORMS", "") not in ("", "tpu"):
    return None  # e.g. JAX_PLATFORMS=cpu on a TPU VM: stay single-process
  hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]
  tpu_devices = hosts or glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")
  if tpu_devices and importlib.util.find_spec("libtpu") is not None:
    return Cluster("tpu", len(hosts) or None, f"TPU_WORKER_HOSTNAMES={env.get('TPU_WORKER_HOSTNAMES', '')}")
  return None


def detect_cluster() -> str | None:
  """Name of the multi-process environment (see `find_cluster`), else None."""
  found = find_cluster()
  return found.name if found else None


def _expects_several(cluster: Cluster | None, env: Mapping[str, str]) -> bool:
  if cluster is None:
    return False
  if cluster.num_processes is not None:
    return cluster.num_processes > 1
  return cluster.name == "k8s" and _int(env, "JOB_COMPLETION_INDEX", 0) > 0  # index > 0: not alone


def require_initialized(env: Mapping[str, str] | None = None) -> None:
  """Refuse to run alone where the environment says several processes were started:
  each would act as the primary and write the same MODEL_DIR."""
  import jax  # pylint: disable=g-import-not-at-top
  env = os.environ if env is None else env
  cluster = find_cluster(env)
  if _expects_several(cluster, env) and jax.process_count() == 1:
    raise StartupError(
        f"a multi-process {cluster.name} job was detected ({cluster.evidence}) but jax.distributed is not "
        "initialised, so every process would act as the primary on the same MODEL_DIR. Call "
        "distributed.initialize() first (the commands do), or pass --coordinator_address, --num_processes "
        "and --process_id; unset those variables to run a single process.")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_device_ids: list[int] | None = None, *,
               cluster: str = "auto", timeout_s: int = DEFAULT_TIMEOUT_S) -> bool:
  """Join the multi-process job; returns True when jax.distributed is running.

  With `coordinator_address` ('host:port' of process 0) all three flags
  --coordinator_address/--num_processes/--process_id are required and win over the
  environment. Else `cluster` 'auto' detects it (`find_cluster`), a name from CLUSTERS
  forces it, and 'none' stays single-process (refused when the environment says
  several processes run). `timeout_s`: how long to wait for every process to join; past
  it the process ends with exit 2 and one line (jax itself would abort with a C++ trace).
  """
  if cluster not in ("auto", "none") + CLUSTERS:
    raise ValueError(f"--cluster must be one of {('auto', 'none') + CLUSTERS}, got {cluster!r}")
  if timeout_s <= 0:
    raise ValueError(f"--distributed_timeout_s must be > 0, got {timeout_s}")
  import jax  # pylint: disable=g-import-not-at-top
  if jax.distributed.is_initialized():
    return True
  explicit = (coordinator_address, num_processes, process_id)
  if any(v is not None for v in explicit):
    _check_flags(coordinator_address, num_processes, process_id)
    kind = "none detected (set by --coordinator_address/--num_processes/--process_id)"
  elif cluster == "none":
    require_initialized()
    return False
  else:
    found = find_cluster()
    name = found.name if cluster == "auto" and found else cluster
    if name == "auto":
      return False
    _check_backend(name, found)
    kind = f"{name} ({found.evidence if found else f'--cluster={name}'})"
    logging.info("distributed: %s environment", kind)
    coordinator_address, num_processes, process_id, local_device_ids = _detect_params(
        name, local_device_ids, timeout_s)
  startup = _Startup(kind, coordinator_address, process_id, num_processes, timeout_s)
  with startup.watchdog():
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id, local_device_ids=local_device_ids,
                               initialization_timeout=timeout_s + _JAX_GRACE_S)
  logging.info("distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


_JAX_GRACE_S = 30  # jax's own deadline (then it aborts the process) lies past the watchdog's


def _detect_params(name: str, local_device_ids: list[int] | None, timeout_s: int
                   ) -> tuple[str, int, int, list[int] | None]:
  """(coordinator address, process count, process id, local devices) as jax's own
  cluster detection finds them, so that a failure can name the address."""
  from jax._src import clusters  # pylint: disable=g-import-not-at-top
  try:
    address, count, pid, devices = clusters.ClusterEnv.auto_detect_unset_distributed_params(
        None, None, None, local_device_ids, _JAX_METHOD[name], timeout_s)
  except Exception as e:  # pylint: disable=broad-except
    raise StartupError(f"{name} job detected but jax could not read its settings ({type(e).__name__}: {e}); "
                       "pass --coordinator_address, --num_processes and --process_id") from e
  if address is None or count is None or pid is None:
    raise StartupError(f"{name} job detected but it names no coordinator/process count/id "
                       f"(got {address!r}, {count!r}, {pid!r}); pass --coordinator_address, "
                       "--num_processes and --process_id")
  return address, count, pid, devices


@dataclasses.dataclass(frozen=True)
class _Startup:
  """One process joining: what a failure message names."""
  kind: str  # the detected cluster and its evidence, or '--coordinator_address'
  coordinator_address: str
  process_id: int
  num_processes: int
  timeout_s: int

  def failure(self) -> str:
    reachable = coordinator_reachable(self.coordinator_address, timeout_s=1.0)
    what = ("the coordinator answered but not every process joined" if reachable else
            "no coordinator answered" if self.process_id else "the other processes did not join")
    return (f"multi-process start-up failed: process {self.process_id} of {self.num_processes}, cluster "
            f"{self.kind}, coordinator {self.coordinator_address}: {what} within --distributed_timeout_s="
            f"{self.timeout_s}; start every process (process 0 hosts the coordinator), check the address "
            "and port, or raise --distributed_timeout_s")

  def watchdog(self):
    return _Watchdog(self)


class _Watchdog:
  """Ends the process with one line and exit 2 if `jax.distributed.initialize` has not
  returned within the timeout: jax blocks in C++ and then aborts (exit 134, stack trace)."""

  def __init__(self, startup: _Startup):
    self._startup = startup
    self._done = threading.Event()
    self._thread = threading.Thread(target=self._watch, name="distributed-startup-watchdog", daemon=True)

  def _watch(self) -> None:
    if self._done.wait(self._startup.timeout_s):
      return
    message = self._startup.failure()
    if not self._done.is_set():
      print(f"error: {message}", file=sys.stderr, flush=True)
      os._exit(STARTUP_EXIT_CODE)  # pylint: disable=protected-access

  def __enter__(self) -> "_Watchdog":
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._done.set()


def coordinator_reachable(address: str, timeout_s: float) -> bool:
  """True if something accepts TCP connections at 'host:port' within `timeout_s`."""
  host, _, port = address.rpartition(":")
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      with socket.create_connection((host.strip("[]"), int(port)), timeout=max(0.1, deadline - time.monotonic())):
        return True
    except (OSError, ValueError):
      if time.monotonic() + 0.2 >= deadline:
        return False
      time.sleep(0.2)


def _check_backend(name: str, found: Cluster | None) -> None:
  """The packages jax's own detection needs, named before it fails obscurely."""
  needs = {"k8s": ("kubernetes", "jax[k8s]"), "mpi4py": ("mpi4py", "mpi4py")}
  if name in needs and importlib.util.find_spec(needs[name][0]) is None:
    where = found.evidence if found else f"--cluster={name}"
    raise StartupError(f"{name} job detected ({where}) but the {needs[name][0]} package is missing: "
                       f"pip install {needs[name][1]}, or pass --coordinator_address, --num_processes "
                       "and --process_id")


def add_flags(parser: argparse.ArgumentParser) -> None:
  """The multi-process flags every command shares."""
  parser.add_argument("--coordinator_address", default=None, help="host:port of process 0 (overrides detection)")
  parser.add_argument("--num_processes", type=int, default=None)
  parser.add_argument("--process_id", type=int, default=None)
  parser.add_argument("--cluster", default="auto", choices=("auto", "none") + CLUSTERS,
                      help="multi-process environment: auto-detect, force one, or 'none'")
  parser.add_argument("--distributed_timeout_s", type=int, default=DEFAULT_TIMEOUT_S,
                      help="seconds to wait for every process to join")


def initialize_from_flags(args: argparse.Namespace) -> bool:
  """`initialize` with the flags of `add_flags`; one process: the backends start here, quietly."""
  joined = initialize(args.coordinator_address, args.num_processes, args.process_id, cluster=args.cluster,
                      timeout_s=args.distributed_timeout_s)
  if not joined:
    from prompt_tuning_jax.text import quiet  # pylint: disable=g-import-not-at-top
    quiet.start_jax_backends()
  return joined


def _check_flags(coordinator_address: str | None, num_processes: int | None, process_id: int | None) -> None:
  if coordinator_address is None or num_processes is None or process_id is None:
    raise ValueError("--coordinator_address, --num_processes and --process_id must be given together; "
                     f"got {coordinator_address!r}, {num_processes!r}, {process_id!r}")
  if ":" not in coordinator_address:
    raise ValueError(f"--coordinator_address must be host:port, got {coordinator_address!r}")
  if num_processes < 1 or not 0 <= process_id < num_processes:
    raise ValueError(f"--process_id must be in [0, --num_processes={num_processes}), got {process_id}")


def is_primary() -> bool:
  """True on the process that writes logs, metrics and single-copy files."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_index() == 0


def sync(name: str) -> None:
  """Barrier: every process waits here until all reach `sync(name)` (no-op alone)."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
