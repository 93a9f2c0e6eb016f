"""The `daqflow` command line as a user runs it: a fresh process in ephemeral mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

COUNT_TASK_RUNS = """
import sys
from uuid import UUID
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
with get_client(sync_client=True) as client:
    runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(sys.argv[1])])))
print(sorted(r.state.type.value for r in runs))
"""


def daqflow(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture
def isolated_env(tmp_path) -> dict[str, str]:
    """Environment with its own PREFECT_HOME, so the ephemeral server's database is the test's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


@pytest.mark.slow
def test_build_leaves_every_task_run_recorded(tmp_path, sample_manifest, isolated_env):
    summary_path = tmp_path / "summary.json"

    built = daqflow("build", "--manifest", str(sample_manifest), "--workdir", str(tmp_path / "wd"), "--summary-json", str(summary_path), env=isolated_env)
    assert built.returncode == 0, built.stderr[-3000:]
    flow_run_id = json.loads(summary_path.read_text())["flow_run_id"]
    counted = subprocess.run(
        [sys.executable, "-c", COUNT_TASK_RUNS, flow_run_id], env=isolated_env, capture_output=True, text=True, timeout=300
    )

    assert counted.returncode == 0, counted.stderr[-3000:]
    # read-recordings-manifest, prepare-recordings and 4 extract-features batches
    assert counted.stdout.strip().splitlines()[-1] == str(["COMPLETED"] * 6)


def test_build_prints_counts_and_quarantine(tmp_path, sample_manifest, isolated_env):
    built = daqflow("build", "--manifest", str(sample_manifest), "--workdir", str(tmp_path / "wd"), env=isolated_env)

    assert built.returncode == 0, built.stderr[-3000:]
    assert "rig1-drive-end" in built.stdout
    assert "0HP/48k_Drive_End_IR014_0_174.mat [duplicate]" in built.stdout


def test_missing_manifest_is_clear_error(tmp_path, isolated_env):
    built = daqflow("build", "--manifest", str(tmp_path / "nope.csv"), "--workdir", str(tmp_path / "wd"), env=isolated_env)

    assert built.returncode == 2
    assert "nope.csv" in built.stderr
    assert "Traceback" not in built.stderr
