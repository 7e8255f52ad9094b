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
