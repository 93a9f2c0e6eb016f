"""The nightly job on a real Prefect server with one process worker per work pool, backed by PostgreSQL.

The module starts PostgreSQL 15, a `prefect server` and the two workers
through `deployments.local.up`. It deploys the daqflow flows for a
three-device fleet derived from the real CWRU sample, where dev-2 is a
`cnn1d` and the others are LightGBM, and triggers
`nightly-retrain/nightly-retrain` as a deployment run. `down` stops
everything at the end of the module.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId
from prefect.client.schemas.objects import FlowRun, TaskRun
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from blocks import EDGE_BLOCK_NAME, STORAGE_BLOCK_NAME
from deployments.deploy import deployment_specs
from deployments.local import DATABASE_URL_VARIABLE, down, up
from deployments.pools import pool_for_model_type
from edge.bundle import verify_bundle
from edge.layout import trusted_keys_dir
from ops_helpers import WebhookReceiver, free_port, log_tails, postgres_server, wait_until
from tasks.fixtures import derive_fleet

pytestmark = pytest.mark.slow

NIGHTLY_DEPLOYMENT = "nightly-retrain/nightly-retrain"
DAQ = "daq-01"
MODEL_TYPES = {"dev-1": "lightgbm", "dev-2": "cnn1d", "dev-3": "lightgbm"}
FAILING_DEVICE = "dev-3"

# Four epochs keep the cnn1d training short and gave dev-2 (seed 7) a macro-F1 of 1.0, well above the gate's floor.
FLEET_TOML = f"""\
daq_id = "{DAQ}"

[devices.dev-2]
model_type = "cnn1d"
params = {{ epochs = 4 }}
"""
# A negative num_leaves makes LightGBM raise, so dev-3 fails while dev-1 and dev-2 train.
FAILING_FLEET_TOML = f"""\
daq_id = "{DAQ}"
max_failed_share = 0.5

[devices.dev-2]
model_type = "cnn1d"
params = {{ epochs = 4 }}

[devices.{FAILING_DEVICE}]
params = {{ num_leaves = -3 }}
"""

NIGHTLY_TIMEOUT_S = 300
TASK_RUNS_TIMEOUT_S = 30
NOTIFICATION_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def fleet_files(tmp_path_factory, sample_manifest) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fleet")
    manifest = derive_fleet(sample_manifest, n_devices=len(MODEL_TYPES), out_dir=folder, seed=7, daq_id=DAQ)
    fleet = folder / "fleet.toml"
    fleet.write_text(FLEET_TOML)
    failing = folder / "failing-fleet.toml"
    failing.write_text(FAILING_FLEET_TOML)
    return {"manifest": manifest, "fleet": fleet, "failing_fleet": failing}


@pytest.fixture(scope="module")
def webhook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def stack(tmp_path_factory, fleet_files, webhook) -> Iterator[dict[str, Any]]:
    """The server on PostgreSQL, both workers and the daqflow deployments of the test fleet."""
    home = tmp_path_factory.mktemp("ops-home")
    specs = deployment_specs(
        storage_block=STORAGE_BLOCK_NAME, edge_block=EDGE_BLOCK_NAME, fleet=str(fleet_files["fleet"]), manifest=str(fleet_files["manifest"])
    )
    with postgres_server() as database_url, pytest.MonkeyPatch.context() as patch:
        patch.setenv(DATABASE_URL_VARIABLE, database_url)
        try:
            info = up(home=home, port=free_port(), webhook_url=webhook.url, workdir=home / "data", specs=specs, fast_polling=True)
            with temporary_settings(updates={PREFECT_API_URL: info["api_url"]}):
                yield {**info, "workdir": home / "data", "database_url": database_url}
        finally:
            down(home=home)


@pytest.fixture(scope="module")
def nightly(stack) -> dict[str, Any]:
    """A completed or failed nightly run of the test fleet, with its summary and `train-device` runs."""
    return run_nightly(stack)


@pytest.fixture(scope="module")
def failing_nightly(stack, fleet_files) -> dict[str, Any]:
    return run_nightly(stack, fleet=str(fleet_files["failing_fleet"]))


def run_nightly(stack: dict[str, Any], **parameters: Any) -> dict[str, Any]:
    """Trigger the nightly deployment, wait for its final state and read back what it left."""
    started = run_deployment(NIGHTLY_DEPLOYMENT, parameters=parameters or None, timeout=0)
    flow_run = wait_for_final(started.id, home=Path(stack["home"]))
    summary_path = Path(stack["workdir"]) / "runs" / str(flow_run.id) / "run-summary.json"
    return {
        "flow_run": flow_run,
        "summary": json.loads(summary_path.read_text()) if summary_path.is_file() else None,
        "train_runs": train_device_runs(flow_run.id),
    }


def wait_for_final(flow_run_id: UUID, *, home: Path) -> FlowRun:
    with get_client(sync_client=True) as client:
        seen: list[FlowRun] = []

        def check() -> FlowRun | None:
            seen[:] = [client.read_flow_run(flow_run_id)]
            state = seen[0].state
            return seen[0] if state is not None and state.is_final() else None

        def describe() -> str:
            last = seen[0].state.name if seen and seen[0].state else "unknown"
            return f"flow run {flow_run_id} of {NIGHTLY_DEPLOYMENT} did not reach a final state; its last state was {last}\n{log_tails(home)}"

        return wait_until(check, timeout_s=NIGHTLY_TIMEOUT_S, describe=describe, interval_s=1.0)


def train_device_runs(nightly_id: UUID) -> list[FlowRun]:
    """Return the `train-device` flow runs that the `train-fleet` subflow of a nightly run dispatched."""
    train_fleet = FlowFilter(name=FlowFilterName(any_=["train-fleet"]))
    with get_client(sync_client=True) as client:
        stages = client.read_flow_runs(flow_filter=train_fleet, flow_run_filter=children_of(nightly_id))
        if not stages:
            return []
        return client.read_flow_runs(flow_run_filter=children_of(stages[0].id))


def children_of(flow_run_id: UUID) -> FlowRunFilter:
    return FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))


def runs_for_device(runs: list[FlowRun], device_id: str) -> list[FlowRun]:
    return [run for run in runs if f"device:{device_id}" in run.tags]


def task_run_names(flow_run: FlowRun, *, home: Path, expected: set[str]) -> set[str]:
    """Wait until the server has recorded the `expected` task runs of `flow_run`; return every task run name."""
    flow_run_filter = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))
    names: set[str] = set()

    def check() -> bool:
        with get_client(sync_client=True) as client:
            task_runs: list[TaskRun] = client.read_task_runs(flow_run_filter=flow_run_filter)
        names.clear()
        names.update(task_run.name for task_run in task_runs)
        return expected <= names

    wait_until(
        check,
        timeout_s=TASK_RUNS_TIMEOUT_S,
        describe=lambda: f"flow run {flow_run.name} has task runs {sorted(names)}, not {sorted(expected)}\n{log_tails(home)}",
    )
    return names


def describe_run(nightly: dict[str, Any], home: str) -> str:
    state = nightly["flow_run"].state
    return f"nightly run {nightly['flow_run'].name} ended {state.name}: {state.message}\n{log_tails(Path(home))}"


def models_by_device(nightly: dict[str, Any], stack: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return the run summary's models by device id; fail the test when the run wrote no summary."""
    summary = nightly["summary"]
    assert summary is not None, f"no run summary in {stack['workdir']}/runs\n{describe_run(nightly, stack['home'])}"
    return {model["device_id"]: model for model in summary["models"]}


# The nightly run of the three-device fleet


def test_nightly_run_completes(nightly, stack):
    assert nightly["flow_run"].state.is_completed(), describe_run(nightly, stack["home"])
    assert nightly["flow_run"].work_pool_name == pool_for_model_type("lightgbm")


def test_summary_lists_every_device(nightly, stack):
    models = models_by_device(nightly, stack)

    assert sorted(models) == sorted(MODEL_TYPES)
    assert {device: model["model_type"] for device, model in models.items()} == MODEL_TYPES
    assert {device: model["status"] for device, model in models.items()} == dict.fromkeys(MODEL_TYPES, "published")


@pytest.mark.parametrize("device_id", sorted(MODEL_TYPES))
def test_device_trains_on_its_pool(nightly, stack, device_id):
    model_type = MODEL_TYPES[device_id]
    pool = pool_for_model_type(model_type)
    runs = runs_for_device(nightly["train_runs"], device_id)
    assert len(runs) == 1, f"{device_id} is in {len(runs)} train-device runs: {[(run.name, run.tags) for run in nightly['train_runs']]}"
    [run] = runs
    task_runs = task_run_names(run, home=Path(stack["home"]), expected={f"train-{device_id}"})

    assert run.state.is_completed(), f"train-device run {run.name} ended {run.state.name}: {run.state.message}"
    assert run.work_pool_name == pool
    assert {f"daq:{DAQ}", f"pool:{pool}", f"model:{model_type}"} <= set(run.tags), run.tags
    assert device_id in run.parameters["devices"]
    assert f"train-{device_id}" in task_runs


def test_each_pool_gets_one_run(nightly):
    pools = sorted(run.work_pool_name for run in nightly["train_runs"])

    assert pools == sorted({pool_for_model_type(model_type) for model_type in MODEL_TYPES.values()})


def test_published_bundles_verify(nightly, stack):
    trusted_keys = trusted_keys_dir(Path(stack["workdir"]) / "edge")

    for device_id, model in models_by_device(nightly, stack).items():
        manifest = verify_bundle(Path(model["bundle"]), trusted_keys=trusted_keys)
        assert manifest["device_id"] == device_id
        assert manifest["version"] == model["version"]
        assert manifest["model_type"] == MODEL_TYPES[device_id]


def test_cnn1d_bundle_takes_waveforms(nightly, stack):
    trusted_keys = trusted_keys_dir(Path(stack["workdir"]) / "edge")
    models = models_by_device(nightly, stack)

    cnn1d = verify_bundle(Path(models["dev-2"]["bundle"]), trusted_keys=trusted_keys)
    lightgbm = verify_bundle(Path(models["dev-1"]["bundle"]), trusted_keys=trusted_keys)

    assert cnn1d["input_spec"]["kind"] == "waveform"
    assert lightgbm["input_spec"]["kind"] == "features"


# One device that cannot train


def test_failed_device_notifies_webhook(failing_nightly, stack, webhook):
    runs = runs_for_device(failing_nightly["train_runs"], FAILING_DEVICE)
    assert len(runs) == 1, f"{FAILING_DEVICE} is in {len(runs)} train-device runs\n{describe_run(failing_nightly, stack['home'])}"
    [train_run] = runs

    message = wait_until(
        lambda: webhook.find(f"device {FAILING_DEVICE}", str(train_run.id)),
        timeout_s=NOTIFICATION_TIMEOUT_S,
        describe=lambda: f"no webhook message names {FAILING_DEVICE} and flow run {train_run.id}; "
        f"received {webhook.messages}\n{log_tails(Path(stack['home']))}",
    )

    assert f"of DAQ {DAQ}" in message["body"]
    assert "num_leaves" in message["body"]
    assert train_run.name in message["body"]


def test_failed_device_within_share_completes_run(failing_nightly, stack):
    models = models_by_device(failing_nightly, stack)
    status = {device: model["status"] for device, model in models.items()}

    assert failing_nightly["flow_run"].state.is_completed(), describe_run(failing_nightly, stack["home"])
    assert status[FAILING_DEVICE] == "failed"
    assert "num_leaves" in models[FAILING_DEVICE]["reason"]
    assert all(status[device] != "failed" for device in MODEL_TYPES if device != FAILING_DEVICE), status


# PostgreSQL


def test_runs_stored_in_postgresql(nightly, stack):
    flow_run_ids = [nightly["flow_run"].id, *(run.id for run in nightly["train_runs"])]

    stored = asyncio.run(count_flow_runs(stack["database_url"], flow_run_ids))

    assert stack["database"] == "postgresql"
    assert stored == len(flow_run_ids)


async def count_flow_runs(database_url: str, flow_run_ids: list[UUID]) -> int:
    connection = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        return await connection.fetchval("SELECT count(*) FROM flow_run WHERE id = ANY($1::uuid[])", flow_run_ids)
    finally:
        await connection.close()
