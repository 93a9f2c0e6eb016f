"""The edge modules must import without the training and orchestration stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAINING_STACK = ("prefect", "dask", "distributed", "lightgbm", "torch")


def _loaded_after_import(modules: list[str], watched: tuple[str, ...]) -> list[str]:
    """Import `modules` in a fresh interpreter and return which of `watched` it then has loaded."""
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(name for name in {list(watched)!r} if name in sys.modules)))\n"
    )
    environment = {**os.environ, "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, env=environment, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def test_edge_runtime_skips_training_stack():
    loaded = _loaded_after_import(["edge.runtime", "edge.cli", "edge.bundle"], TRAINING_STACK)

    assert loaded == []


@pytest.mark.parametrize("module", ["edge", "edge.bundle", "edge.layout"])
def test_edge_verification_skips_numpy(module):
    loaded = _loaded_after_import([module], (*TRAINING_STACK, "numpy", "onnxruntime"))

    assert loaded == []
