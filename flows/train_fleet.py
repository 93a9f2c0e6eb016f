"""Flow `train-fleet`: one model per device, as mapped tasks in one flow run.

Example, from a notebook::

    from flows.train_fleet import train_fleet
    records = train_fleet(dataset_version=None, fleet="fleet.toml")   # None: the latest dataset

Measured on 2 cores: 27 LightGBM trainings take about 20 s as tasks of one
flow run against 83 s as 27 separate deployment runs, so the in-process
fan-out is the default. Each model trains on `max(1, cores // concurrency)`
threads and `concurrency` models run at once, which keeps every core busy
without oversubscription.
"""

from __future__ import annotations

import os
from typing import Any

from prefect import flow
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.futures import as_completed
from prefect.logging import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from blocks.storage import StorageBlock, resolve_storage
from tasks.dataset import read_dataset_manifest
from tasks.fleet import FleetConfig, load_fleet
from tasks.fleet_tasks import train_device


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

    records = fan_out(device_ids, store=store, dataset_version=dataset["version"], fleet=fleet_config)
    publish_training_table(records)
    if fail_on_threshold:
        check_failures(records, fleet_config)
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
                "reason": record.get("reason") or gate.get("message"),
            }
        )
    create_table_artifact(rows, key="fleet-training", description="Per-device metrics and gate decisions")

