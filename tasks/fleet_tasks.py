"""Prefect tasks of training and publishing: one task run per device.

A fleet is tens of devices, far below the ~2,000 task runs per flow run where
the Prefect server strains, so each device is its own task run and shows up
by name in the UI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from prefect.logging import get_run_logger

from deployments.notifications import emit_training_failure
from tasks.dataset import read_dataset_manifest
from tasks.device_training import train_and_gate
from tasks.fleet import FleetConfig
from tasks.publish import publish_device
from tasks.registry import ModelRegistry
from tasks.store import Store


@task(name="train-device", task_run_name="train-{device_id}", cache_policy=NO_CACHE)
def train_device(device_id: str, *, store: Store, dataset_version: str, fleet: FleetConfig, num_threads: int) -> dict[str, Any]:
    """Train, register and gate one device. A failure is returned as a record, not raised."""
    logger = get_run_logger()
    device = fleet.device(device_id)
    try:
        dataset = read_dataset_manifest(store, dataset_version)
        record = train_and_gate(store, dataset, device, gate=fleet.gate, num_threads=num_threads)
    except Exception as error:  # noqa: BLE001 (one device's failure must not stop the fleet)
        reason = f"{type(error).__name__}: {error}"
        logger.error("Training of device %s failed: %s", device_id, reason)
        emit_training_failure(
            device_id=device_id, daq_id=fleet.daq_id, reason=reason, flow_run_id=str(get_run_context().task_run.flow_run_id)
        )
        return {"device_id": device_id, "model_type": device.model_type, "status": "failed", "reason": reason}

    logger.info(
        "Device %s: %s, version %s, macro-F1 %.3f",
        device_id,
        record["status"],
        record["version"],
        record["metrics"]["macro_f1"],
    )
    return record


@task(name="publish-bundle", task_run_name="publish-{device_id}", cache_policy=NO_CACHE)
def publish_bundle(device_id: str, *, store: Store, edge_root: Path, signing_key) -> dict[str, Any]:
    """Publish the champion of one device; a device without a champion is skipped.

    A failure is returned as a record with an ``error``, not raised.
    """
    registry = ModelRegistry(store)
    champion = registry.get_alias(device_id)
    if champion is None:
        return {"device_id": device_id, "version": None, "bundle": None, "published": False}
    try:
        dataset = read_dataset_manifest(store, registry.manifest(device_id, champion)["dataset_version"])
        return publish_device(registry, dataset, device_id, champion, edge_root=edge_root, signing_key=signing_key)
    except Exception as error:  # noqa: BLE001 (one device's bundle must not stop the others)
        reason = f"{type(error).__name__}: {error}"
        get_run_logger().error("Publishing %s of device %s failed: %s", champion, device_id, reason)
        return {"device_id": device_id, "version": champion, "bundle": None, "published": False, "error": reason}

