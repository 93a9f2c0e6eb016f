"""Flows `train-fleet` and `train-device`: one model per device.

Example, from a notebook::

    from flows.train_fleet import train_fleet
    records = train_fleet(dataset_version=None, fleet="fleet.toml")   # None: the latest dataset

Two paths run the same per-device code (`tasks.device_training`):

- In-process (no Prefect server, or no `train-device` deployments): one
  mapped task per device inside this flow run. Each model trains on
  `max(1, cores // concurrency)` threads and `concurrency` models run at
  once, which keeps every core busy without oversubscription.
- On work pools (a Prefect server with the daqflow deployments, and a saved
  storage block): devices go to the `train-device` deployment of the pool
  their model type needs (`deployments.pools`), as subflow runs, so the UI
  shows the tree. By default one run per pool carries that pool's devices;
  the fleet option `dispatch = "per_device"` gives one run per device.

Measured on 2 cores: 27 LightGBM trainings take about 20 s as tasks of one
flow run against 83 s as 27 separate deployment runs under a pool limit of 2.
"""

from __future__ import annotations

import os
import time
from typing import Any

from prefect import flow
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.futures import as_completed
from prefect.logging import get_run_logger
from prefect.context import get_run_context
from prefect.task_runners import ThreadPoolTaskRunner

from blocks.storage import StorageBlock, resolve_storage
from deployments.pools import CPU_POOL, GPU_POOL, pool_for_model_type
from tasks.dataset import read_dataset_manifest
from tasks.fleet import FleetConfig, load_fleet
from tasks.fleet_tasks import train_device


TRAIN_DEPLOYMENTS = {CPU_POOL: "train-device/train-device-cpu", GPU_POOL: "train-device/train-device-gpu"}


class FleetTrainingFailed(RuntimeError):
    """More devices failed than the fleet's `max_failed_share` allows."""


@flow(name="train-fleet", validate_parameters=False)
def train_fleet(
    dataset_version: str | None = None,
    fleet: FleetConfig | str | dict[str, Any] | None = None,
    storage: StorageBlock | str | None = None,
    devices: list[str] | None = None,
    fail_on_threshold: bool = True,
) -> list[dict[str, Any]]:
    """Train, register and gate every device of a dataset.

    Args:
        dataset_version: dataset to train on; None for the latest one.
        fleet: fleet configuration (object, TOML path or dict); None for defaults.
        storage: storage block or the name of a saved one; default `./.daqflow`.
        devices: devices to train; default every device in the dataset.
        fail_on_threshold: raise `FleetTrainingFailed` when the share of failed
            devices exceeds `fleet.max_failed_share`. `nightly_retrain` passes
            False and applies the rule after it has published and recorded
            the devices that succeeded.

    Returns:
        One record per device: status (promoted, kept_champion,
        skipped_unchanged or failed), version, metrics and gate decision.
    """
    fleet_config = load_fleet(fleet)
    store = resolve_storage(storage).get_store()
    dataset = read_dataset_manifest(store, dataset_version)
    device_ids = devices or sorted(dataset["devices"])

    storage_name = saved_block_name(storage)
    if storage_name and deployments_available():
        records = dispatch_to_pools(device_ids, storage=storage_name, dataset_version=dataset["version"], fleet=fleet_config, store=store)
    else:
        records = fan_out(device_ids, store=store, dataset_version=dataset["version"], fleet=fleet_config)
    publish_training_table(records)
    if fail_on_threshold:
        check_failures(records, fleet_config)
    return records


@flow(name="train-device", validate_parameters=False)
def train_device_group(
    devices: list[str],
    dataset_version: str,
    fleet: FleetConfig | str | dict[str, Any] | None = None,
    storage: StorageBlock | str | None = None,
    records_prefix: str | None = None,
) -> list[dict[str, Any]]:
    """Train a group of devices as mapped tasks; the unit of work of a pool's `train-device` deployment.

    Args:
        devices: devices to train.
        dataset_version: dataset to train on.
        fleet: fleet configuration (object, TOML path or dict).
        storage: storage block or a saved block's name.
        records_prefix: storage prefix where each device's record is written
            as `<prefix>/<device_id>.json`, for the dispatching flow run to read.
    """
    fleet_config = load_fleet(fleet)
    store = resolve_storage(storage).get_store()
    records = fan_out(devices, store=store, dataset_version=dataset_version, fleet=fleet_config)
    if records_prefix:
        for record in records:
            store.write_json(f"{records_prefix}/{record['device_id']}.json", record)
    publish_training_table(records)
    return records


def fan_out(device_ids: list[str], *, store, dataset_version: str, fleet: FleetConfig) -> list[dict[str, Any]]:
    """Run one `train-device` task per device, `fleet.concurrency` at a time."""
    logger = get_run_logger()
    concurrency = min(fleet.concurrency, max(1, len(device_ids)))
    num_threads = max(1, (os.cpu_count() or 1) // concurrency)
    logger.info("Training %d devices, %d at a time on %d thread(s) each", len(device_ids), concurrency, num_threads)

    progress = create_progress_artifact(progress=0.0, key="fleet-training-progress", description="Devices trained")
    records: list[dict[str, Any]] = []
    with ThreadPoolTaskRunner(max_workers=concurrency) as runner:
        # NOTE: no per-task tags here, because in Prefect 3.9.1 a tagged task run
        # requests concurrency slots from the server, measured at 2 s per task.
        futures = [
            runner.submit(
                train_device,
                parameters={
                    "device_id": device_id,
                    "store": store,
                    "dataset_version": dataset_version,
                    "fleet": fleet,
                    "num_threads": num_threads,
                },
            )
            for device_id in device_ids
        ]
        for future in as_completed(futures):
            records.append(future.result())
            update_progress_artifact(progress, progress=100.0 * len(records) / len(device_ids))
    return sorted(records, key=lambda r: r["device_id"])


def saved_block_name(block: StorageBlock | str | None) -> str | None:
    """Return the name a worker can load the storage block by, or None for an unsaved block."""
    if isinstance(block, str):
        return block
    if block is not None and getattr(block, "_block_document_name", None):
        return f"{block.get_block_type_slug()}/{block._block_document_name}"
    return None


def deployments_available() -> bool:
    """Return whether a Prefect server with the `train-device` deployments is configured."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        return False  # ephemeral mode: no workers can pick up runs
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            for name in TRAIN_DEPLOYMENTS.values():
                client.read_deployment_by_name(name)
        except ObjectNotFound:
            return False
    return True


def dispatch_to_pools(
    device_ids: list[str], *, storage: str, dataset_version: str, fleet: FleetConfig, store
) -> list[dict[str, Any]]:
    """Train devices as `train-device` subflow runs on the pool each model type needs, and wait for them."""
    from prefect.deployments import run_deployment

    logger = get_run_logger()
    parent = get_run_context().flow_run
    prefix = f"runs/{parent.id}/devices"
    groups: dict[tuple[str, ...], list[str]] = {}
    for device_id in device_ids:
        pool = pool_for_model_type(fleet.device(device_id).model_type)
        key = (pool, device_id) if fleet.dispatch == "per_device" else (pool,)
        groups.setdefault(key, []).append(device_id)

    runs = []
    for key, devices in groups.items():
        pool = key[0]
        model_types = sorted({fleet.device(d).model_type for d in devices})
        tags = [f"daq:{fleet.daq_id}", f"pool:{pool}", *(f"model:{m}" for m in model_types), *(f"device:{d}" for d in devices)]
        flow_run = run_deployment(
            TRAIN_DEPLOYMENTS[pool],
            parameters={
                "devices": devices,
                "dataset_version": dataset_version,
                "fleet": fleet.to_dict(),
                "storage": storage,
                "records_prefix": prefix,
            },
            timeout=0,
            tags=tags,
        )
        logger.info("Dispatched %d device(s) to pool %s as flow run %s", len(devices), pool, flow_run.name)
        runs.append((flow_run, devices))

    final = wait_for_flow_runs([run.id for run, _ in runs])
    records = []
    for run, devices in runs:
        state = final[run.id]
        for device_id in devices:
            key = f"{prefix}/{device_id}.json"
            if store.exists(key):
                records.append(store.read_json(key))
                continue
            reason = f"train-device run {run.name} ended {state.name}: {state.message}"
            records.append({"device_id": device_id, "model_type": fleet.device(device_id).model_type, "status": "failed", "reason": reason})
    return sorted(records, key=lambda r: r["device_id"])


def wait_for_flow_runs(flow_run_ids: list, *, poll_s: float = 2.0) -> dict:
    """Poll the API until every flow run is in a final state; return the states by id."""
    from prefect.client.orchestration import get_client

    states = {}
    with get_client(sync_client=True) as client:
        while len(states) < len(flow_run_ids):
            for flow_run_id in flow_run_ids:
                if flow_run_id in states:
                    continue
                state = client.read_flow_run(flow_run_id).state
                if state is not None and state.is_final():
                    states[flow_run_id] = state
            if len(states) < len(flow_run_ids):
                time.sleep(poll_s)
    return states


def check_failures(records: list[dict[str, Any]], fleet: FleetConfig) -> None:
    """Raise when the share of failed devices exceeds `fleet.max_failed_share`."""
    failed = [r for r in records if r["status"] == "failed"]
    if records and len(failed) / len(records) > fleet.max_failed_share:
        details = "; ".join(f"{r['device_id']}: {r['reason']}" for r in failed)
        raise FleetTrainingFailed(
            f"{len(failed)} of {len(records)} devices failed, more than max_failed_share={fleet.max_failed_share}: {details}"
        )


def publish_training_table(records: list[dict[str, Any]]) -> None:
    rows = []
    for record in records:
        gate = record.get("gate") or {}
        metrics = record.get("metrics") or {}
        rows.append(
            {
                "device_id": record["device_id"],
                "model_type": record["model_type"],
                "status": record["status"],
                "version": record.get("version"),
                "accuracy": round(metrics["accuracy"], 4) if "accuracy" in metrics else None,
                "macro_f1": round(metrics["macro_f1"], 4) if "macro_f1" in metrics else None,
                "gate": gate.get("reason"),
                "champion_macro_f1": gate.get("champion_macro_f1"),
                "train_seconds": round(record["seconds"], 1) if "seconds" in record else None,
                "reason": record.get("reason") or gate.get("message"),
            }
        )
    create_table_artifact(rows, key="fleet-training", description="Per-device metrics and gate decisions")

