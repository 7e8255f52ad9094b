"""A real local Cloud Storage emulator for tests: `gcp-storage-emulator` (pure Python, from
the `test` extra, works offline) in its own process on a free port, with one bucket.

Clients find it through the standard `STORAGE_EMULATOR_HOST`; `fs.configure_emulator`
points tensorstore (TENSORSTORE_GCS_HTTP_URL) and gcsfs at it as well.
"""
from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from typing import Iterator

BUCKET = "bucket"


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def running(log_path: str, bucket: str = BUCKET, timeout_s: float = 60) -> Iterator[str]:
  """Start the emulator, wait until it answers, yield its URL; stop it on exit."""
  port = free_port()
  with open(log_path, "w") as log:
    proc = subprocess.Popen([sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
                             "--port", str(port), "--in-memory", "--default-bucket", bucket],
                            stdout=log, stderr=subprocess.STDOUT)
  try:
    deadline = time.time() + timeout_s
    while True:
      if proc.poll() is not None:
        raise RuntimeError(f"storage emulator exited with {proc.returncode}: {open(log_path).read()[-2000:]}")
      with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
          break
      if time.time() > deadline:
        raise RuntimeError(f"storage emulator did not listen on port {port} within {timeout_s} s")
      time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
  finally:
    stop(proc)


def stop(proc: subprocess.Popen, grace_s: float = 10) -> None:
  """SIGTERM, then SIGKILL if the process is still there after `grace_s`."""
  proc.terminate()
  try:
    proc.wait(timeout=grace_s)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
