"""Shared test setup: a private kernel cache, quiet torch sparse warnings, hypothesis profiles.

- ``SGNN_CACHE_DIR`` points at a fresh session directory unless the caller set it (CI may keep
  a warm cache between runs); child processes started by the tests inherit it.
- Hypothesis runs without deadlines (the first call of a new kernel signature compiles C++),
  derandomised when ``CI`` is set so CI failures reproduce.
"""
from __future__ import annotations

import os
import warnings

# Idle OpenMP threads sleep instead of spinning: tests run many tiny kernels, often beside other
# processes on 2 cores, where spinning workers steal the core the test needs. (Read when the
# OpenMP runtime starts, so before torch is imported.)
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")

_SPARSE_WARNINGS = ("Sparse CSR tensor support is in beta state",
                    "Sparse invariant checks are implicitly disabled")


def pytest_configure(config):
    for msg in _SPARSE_WARNINGS:
        config.addinivalue_line("filterwarnings", f"ignore:{msg}:UserWarning")
        warnings.filterwarnings("ignore", message=msg, category=UserWarning)


@pytest.fixture(scope="session", autouse=True)
def sgnn_cache_dir(tmp_path_factory):
    """The kernel cache directory of this session (the caller's ``SGNN_CACHE_DIR`` if set)."""
    if os.environ.get("SGNN_CACHE_DIR"):
        yield os.environ["SGNN_CACHE_DIR"]
        return
    path = str(tmp_path_factory.mktemp("sgnn-cache"))
    os.environ["SGNN_CACHE_DIR"] = path
    try:
        yield path
    finally:
        os.environ.pop("SGNN_CACHE_DIR", None)


@pytest.fixture
def threads():
    """Run a block at a given thread count: ``with threads(1): ...`` (restored afterwards)."""
    from thread_helpers import num_threads
    return num_threads
