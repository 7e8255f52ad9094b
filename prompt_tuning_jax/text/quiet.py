"""TensorFlow and SeqIO, imported late and without their CPU start-up noise.

Why one module: TensorFlow takes seconds to import and is needed only where a dataset is
built (and for gs:// files), so no module imports it (or SeqIO, which imports it) at its
top; they call `import_tensorflow()` / `import_seqio()` at the point of use. On a machine
without a GPU the import prints `WARNING: All log messages before absl::InitializeLog()`,
`Could not find cuda drivers` and `failed call to cuInit`. TF_CPP_MIN_LOG_LEVEL does not
hide the first two (C++ writes them before TensorFlow reads it), so the import runs with
file descriptor 2 captured and every captured line that is not one of these known
start-up lines is written back: real warnings and errors still show. TensorFlow is kept
off the GPUs (datasets run on the host; JAX owns the accelerators, as in T5X).
JAX itself prints nothing on a CPU-only machine, so JAX_PLATFORMS is left to the user.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import TYPE_CHECKING, Iterator, Sequence

if TYPE_CHECKING:
  import seqio
  import tensorflow as tf

# Substrings of the start-up lines that say "no GPU here", nothing more.
STARTUP_NOISE = (
    "All log messages before absl::InitializeLog() is called",
    "Could not find cuda drivers",
    "failed call to cuInit",
    "Unable to register cuDNN factory", "Unable to register cuFFT factory", "Unable to register cuBLAS factory",
    "computation placer already registered",
    "TF-TRT Warning: Could not find TensorRT",
    "cpu_feature_guard.cc", "rebuild TensorFlow with the appropriate compiler flags",
    "oneDNN custom operations are on",
)
# What libtpu (installed by the tpu/test extras) prints when jax probes for a TPU on a host
# that has none; on a TPU VM its environment is set and it prints none of this.
LIBTPU_PROBE_NOISE = (
    "Failed to find host bounds for accelerator type",
    "WARNING: Logging before InitGoogle() is written to STDERR",
    "could not determine TPU worker hostnames",
    "=== Source Location Trace: ===",
    "libtpu_init_utils.cc",
)


@contextlib.contextmanager
def filtered_stderr(noise: Sequence[str] = STARTUP_NOISE) -> Iterator[None]:
  """Capture file descriptor 2 (C++ and Python writes alike) and write back the lines
  that contain none of `noise`."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      kept = [line for line in captured.read().decode("utf-8", "replace").splitlines(keepends=True)
              if not any(n in line for n in noise)]
      if kept:
        sys.stderr.write("".join(kept))
        sys.stderr.flush()


def import_tensorflow() -> tf:
  """`import tensorflow` with its start-up noise filtered; TensorFlow sees no GPU."""
  if "tensorflow" in sys.modules:
    return sys.modules["tensorflow"]
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TF's INFO lines; the user's setting wins
  with filtered_stderr():
    import tensorflow  # pylint: disable=g-import-not-at-top
    try:
      tensorflow.config.set_visible_devices([], "GPU")
    except RuntimeError:  # devices already initialized by an earlier user of TensorFlow
      pass
  return tensorflow


def import_seqio() -> seqio:
  """`import seqio` (and TensorFlow under it) with the start-up noise filtered."""
  if "seqio" in sys.modules:
    return sys.modules["seqio"]
  import_tensorflow()
  with filtered_stderr():
    import seqio  # pylint: disable=g-import-not-at-top,redefined-outer-name
  return seqio


def start_jax_backends() -> None:
  """Start jax's backends (`jax.devices()`) with libtpu's no-TPU-here probe lines filtered,
  so a one-process run on a CPU or GPU host with libtpu installed starts quietly."""
  import jax  # pylint: disable=g-import-not-at-top
  with filtered_stderr(STARTUP_NOISE + LIBTPU_PROBE_NOISE):
    jax.devices()


def import_module(name: str):
  """`importlib.import_module` (e.g. a task-registering module) with the noise filtered."""
  import importlib  # pylint: disable=g-import-not-at-top
  import_seqio()
  with filtered_stderr():
    return importlib.import_module(name)
