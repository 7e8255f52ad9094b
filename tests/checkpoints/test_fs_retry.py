"""Transient object-store errors are retried, on a real emulator behind a faulty proxy.

tests/storage_faults.py puts a proxy process in front of gcp-storage-emulator that answers
HTTP 503 to the first N requests for a path. gcsfs retries each request 6 times on its own
(1 s, 2 s, ... 32 s apart; shortened here to 10 ms so the tests take seconds), so faults
beyond 6 reach the filesystem layer, whose retry (google-api-core's exponential backoff,
PTJ_STORAGE_RETRY_* shortened here too) must carry the operation through, or fail with one
line naming the gs:// path once its deadline has passed.
"""
import asyncio
import os
import time
import types

import jax
import numpy as np
import pytest

import storage_faults  # tests/storage_faults.py
from prompt_tuning_jax.checkpoints import fs, train_state

GCSFS_TRIES = 6  # gcsfs.core.GCSFileSystem.retries: its own tries per HTTP request


@pytest.fixture
def faulty_gcs(gcs_emulator, monkeypatch):
  """gcsfs and tensorstore talk to the emulator through a fault-injecting proxy."""
  import gcsfs.retry
  real_sleep = asyncio.sleep
  monkeypatch.setattr(gcsfs.retry, "asyncio", types.SimpleNamespace(sleep=lambda s: real_sleep(0.01)))
  monkeypatch.setenv("PTJ_STORAGE_RETRY_DEADLINE_S", "20")
  monkeypatch.setenv("PTJ_STORAGE_RETRY_INITIAL_S", "0.05")
  monkeypatch.setenv("PTJ_STORAGE_RETRY_MAXIMUM_S", "0.5")
  emulator = os.environ["STORAGE_EMULATOR_HOST"]
  with storage_faults.running(emulator) as proxy:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    monkeypatch.setenv("TENSORSTORE_GCS_HTTP_URL", proxy.url)
    fs.configure_emulator()
    yield proxy
  monkeypatch.undo()
  fs.configure_emulator()


def test_write_and_read_survive_more_faults_than_gcsfs_retries(faulty_gcs):
  path = "gs://bucket/retry/write.txt"
  faulty_gcs.fail("retry/write.txt", times=GCSFS_TRIES + 2, method="POST")
  fs.atomic_write(path, "survived")
  uploads = faulty_gcs.statuses("retry/write.txt", "POST")
  # gcsfs gave up after its own tries; the layer tried again and got through.
  assert uploads[:GCSFS_TRIES + 2] == [503] * (GCSFS_TRIES + 2) and uploads[-1] == 200, uploads

  faulty_gcs.fail("retry/write.txt", times=GCSFS_TRIES + 1, method="GET")
  assert fs.read_bytes(path) == b"survived"
  assert fs.read_head(path, 3) == b"sur"
  assert faulty_gcs.statuses("retry/write.txt", "GET").count(503) == GCSFS_TRIES + 1


def test_faults_beyond_the_deadline_fail_with_one_line_naming_the_path(faulty_gcs, monkeypatch):
  monkeypatch.setenv("PTJ_STORAGE_RETRY_DEADLINE_S", "1")
  faulty_gcs.fail("retry/down.txt", times=10_000)
  start = time.time()
  with pytest.raises(fs.StorageError) as raised:
    fs.atomic_write("gs://bucket/retry/down.txt", b"x")
  message = str(raised.value)
  assert "\n" not in message and "gs://bucket/retry/down.txt" in message, message
  assert message.startswith("writing gs://bucket/retry/down.txt failed") and "503" in message, message
  assert "PTJ_STORAGE_RETRY_DEADLINE_S" in message
  assert len(faulty_gcs.statuses("retry/down.txt")) > GCSFS_TRIES  # retried past gcsfs's own tries
  assert time.time() - start < 60  # bounded: a 1 s deadline, plus the last try's own retries


def test_errors_that_are_not_transient_are_not_retried(faulty_gcs):
  faulty_gcs.fail("retry/forbidden.txt", times=1, status=403)
  with pytest.raises(OSError, match="Forbidden"):
    fs.atomic_write("gs://bucket/retry/forbidden.txt", b"x")
  assert faulty_gcs.statuses("retry/forbidden.txt") == [403]
  with pytest.raises(FileNotFoundError):
    fs.read_bytes("gs://bucket/retry/never_written.txt")
  assert faulty_gcs.statuses("retry/never_written.txt") == [404]


@pytest.mark.slow
def test_checkpoint_save_is_retried_and_restores_exactly(faulty_gcs):
  ckpt = train_state.TrainCheckpointer("gs://bucket/retry_run", keep=3, fingerprint={"k": "v"})
  state = {"w": jax.numpy.arange(6.0).reshape(2, 3)}
  ckpt.save(1, state, {"note": 1})  # a clean save first: the storage clients' threads exist from here on
  faulty_gcs.fail("retry_run/train_state/2/commit_success.txt", times=GCSFS_TRIES + 2, method="POST")
  state2 = {"w": state["w"] * 2}
  ckpt.save(2, state2, {"note": 2})
  commits = faulty_gcs.statuses("retry_run/train_state/2/commit_success.txt", "POST")
  assert commits.count(503) == GCSFS_TRIES + 2 and commits[-1] == 200, commits
  restored, meta = ckpt.restore(state)
  assert ckpt.latest_step() == 2 and meta["note"] == 2
  np.testing.assert_array_equal(np.asarray(restored["w"]), np.arange(6.0).reshape(2, 3) * 2)


def test_transient_errors_are_told_apart():
  import gcsfs.retry
  from google.api_core import exceptions as api_exceptions
  transient = [gcsfs.retry.HttpError({"code": 503, "message": "x"}), gcsfs.retry.HttpError({"code": 429}),
               ConnectionResetError(104, "Connection reset by peer"), TimeoutError(),
               ValueError("UNAVAILABLE: HTTP response code: 503 with body: x [source locations='...']"),
               ValueError("Error writing gs://b/x/manifest.ocdbt: INVALID_ARGUMENT: Malformed StorageGeneration"),
               api_exceptions.ServiceUnavailable("x")]
  permanent = [FileNotFoundError("gs://b/x"), PermissionError("denied"), gcsfs.retry.HttpError({"code": 400}),
               ValueError("Bad Request: gs://b/x"), OSError(28, "No space left on device")]
  wrapped = OSError(None, "saving training checkpoint step 2 failed (HttpError: injected fault, 503)")
  wrapped.__cause__ = transient[0]
  assert [fs.is_transient(e) for e in transient + [wrapped]] == [True] * (len(transient) + 1)
  assert [fs.is_transient(e) for e in permanent] == [False] * len(permanent)


def test_retry_policy_from_the_environment(monkeypatch):
  assert fs.retry_policy() == fs.RetryPolicy()
  monkeypatch.setenv("PTJ_STORAGE_RETRY_DEADLINE_S", "7.5")
  assert fs.retry_policy().deadline_s == 7.5
  monkeypatch.setenv("PTJ_STORAGE_RETRY_INITIAL_S", "soon")
  with pytest.raises(ValueError, match="PTJ_STORAGE_RETRY_INITIAL_S='soon'"):
    fs.retry_policy()


def test_local_paths_are_called_once(tmp_path):
  calls = []

  def failing():
    calls.append(1)
    raise ConnectionResetError("local")
  with pytest.raises(ConnectionResetError):
    fs.retrying("reading", str(tmp_path / "x"), failing)
  assert calls == [1]
