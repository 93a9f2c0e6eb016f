"""Shared fixtures: one Prefect test server and one Dask cluster per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO_ROOT / "data" / "sample" / "cwru"
SAMPLE_MANIFEST = SAMPLE_DIR / "recordings.csv"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def sample_manifest() -> Path:
    return SAMPLE_MANIFEST


@pytest.fixture(scope="session")
def prefect_server():
    """A real Prefect API server (SQLite in a temporary folder) for the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def dask_compute():
    """A local Dask cluster on 127.0.0.1, shared by the tests that build datasets."""
    from distributed import LocalCluster

    from blocks.compute import DaskCompute

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None)
    try:
        yield DaskCompute(scheduler_address=cluster.scheduler_address)
    finally:
        cluster.close()
