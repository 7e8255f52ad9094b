"""Multi-host start-up: one call that works on a laptop, a TPU pod, SLURM or a GPU cluster.

Every process of a multi-host job runs the same program; `jax.distributed.initialize`
must run first in each, before any computation, so that `jax.devices()` lists the
devices of all hosts. Single-process runs need nothing, so `initialize()` is a no-op
there and callers can call it unconditionally.
"""
from __future__ import annotations

import glob
import importlib.util
import logging
import os

import jax
from jax.experimental import multihost_utils


def detect_cluster() -> str | None:
  """Name of the multi-process environment jax can configure itself from, else None.

  'slurm' (srun with >1 task), 'openmpi' (mpirun with >1 rank) or 'tpu' (a Cloud TPU
  VM: jax reads the worker list from the TPU metadata, one process per host).
  """
  env = os.environ
  slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
  if all(k in env for k in slurm) and int(env["SLURM_NTASKS"]) > 1:
    return "slurm"
  if "OMPI_MCA_orte_hnp_uri" in env and int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
    return "openmpi"
  if env.get("JAX_PLATFORMS", "") not in ("", "tpu"):
    return None  # e.g. JAX_PLATFORMS=cpu on a TPU VM: stay single-process
  tpu_devices = env.get("TPU_WORKER_HOSTNAMES") or glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")
  if tpu_devices and importlib.util.find_spec("libtpu") is not None:
    return "tpu"
  return None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_device_ids: list[int] | None = None) -> bool:
  """Join the multi-process job; returns True when jax.distributed is running.

  With `coordinator_address` ('host:port' of process 0; GPU clusters without SLURM)
  all three flags --coordinator_address/--num_processes/--process_id are required.
  Without flags the environment is auto-detected (`detect_cluster`); none -> no-op.
  """
  if jax.distributed.is_initialized():
    return True
  explicit = (coordinator_address, num_processes, process_id)
  if any(v is not None for v in explicit):
    _check_flags(coordinator_address, num_processes, process_id)
    kwargs = dict(coordinator_address=coordinator_address, num_processes=num_processes,
                  process_id=process_id, local_device_ids=local_device_ids)
  else:
    cluster = detect_cluster()
    if cluster is None:
      return False
    logging.info("distributed: auto-detected %s environment", cluster)
    kwargs = dict(local_device_ids=local_device_ids)
  jax.distributed.initialize(**kwargs)  # raises if jax already started a backend
  logging.info("distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


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
  return jax.process_index() == 0


def sync(name: str) -> None:
  """Barrier: every process waits here until all reach `sync(name)` (no-op alone)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
