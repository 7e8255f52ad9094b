"""Shared test setup: 8 simulated CPU devices, tiny configs, package-local fixtures."""
import os

# Must precede any jax import: the sharding tests need a mesh of 8 CPU devices.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pathlib

import pytest

TESTDATA = pathlib.Path(__file__).parent / "testdata"


@pytest.fixture
def testdata() -> pathlib.Path:
  return TESTDATA


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory):
  """A local Cloud Storage emulator for the session, selected by STORAGE_EMULATOR_HOST
  (also for subprocesses); yields the bucket URL prefix 'gs://bucket'."""
  import gcs_emulator as emulator  # tests/gcs_emulator.py

  from prompt_tuning_jax.checkpoints import fs
  names = ("STORAGE_EMULATOR_HOST", "TENSORSTORE_GCS_HTTP_URL", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT")
  saved = {k: os.environ.get(k) for k in names}
  with emulator.running(str(tmp_path_factory.mktemp("gcs") / "emulator.log")) as url:
    for k in names:
      os.environ.pop(k, None)
    os.environ["STORAGE_EMULATOR_HOST"] = url
    fs.configure_emulator()
    try:
      yield f"gs://{emulator.BUCKET}"
    finally:
      for k, v in saved.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
