"""Flow `evaluate-champions`: score the current champions on any labelled manifest.

Use it on new recordings from the plant before trusting the models with them::

    from flows.evaluate import evaluate_champions
    report = evaluate_champions("new/recordings.csv")

The recordings go through the same dataset build as training (same
validation, resampling and features, per the fleet configuration), into a
dataset that does not become the training default. Every window of a device
is scored by its champion's ONNX model, the model the edge box runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from prefect import flow
from prefect.artifacts import create_table_artifact

from blocks.compute import DaskCompute
from blocks.storage import StorageBlock, resolve_storage
from flows.build_dataset import build_dataset
from tasks.dataset import load_device_frame, read_dataset_manifest
from tasks.device_training import model_inputs, onnx_probabilities
from tasks.fleet import FleetConfig, load_fleet
from tasks.metrics import classification_metrics
from tasks.registry import ModelRegistry


@flow(name="evaluate-champions", validate_parameters=False)
def evaluate_champions(
    manifest: str,
    storage: StorageBlock | str | None = None,
    fleet: FleetConfig | str | dict[str, Any] | None = None,
    compute: DaskCompute | str | None = None,
) -> dict[str, Any]:
    """Score each device's champion on every window of the recordings in `manifest`.

    Returns:
        ``{"dataset_version", "quarantined", "models": [{"device_id", "version",
        "metrics": {"accuracy", "macro_f1", "per_class", "confusion_matrix", "labels"},
        "windows"}]}``. A device of the manifest with no champion, or whose
        champion was trained on other features, gets an ``error`` instead.
    """
    fleet_config = load_fleet(fleet)
    storage_block = resolve_storage(storage)
    store = storage_block.get_store()
    summary = build_dataset(
        manifest,
        storage=storage_block,
        compute=compute,
        config=fleet_config.build_config(list(fleet_config.devices)),
        update_latest=False,
    )
    dataset = read_dataset_manifest(store, summary["version"])
    registry = ModelRegistry(store)

    models = [score_device(store, registry, dataset, device_id) for device_id in sorted(dataset["devices"])]
    create_table_artifact(
        [
            {
                "device_id": m["device_id"],
                "version": m.get("version"),
                "windows": m.get("windows"),
                "accuracy": m.get("metrics", {}).get("accuracy"),
                "macro_f1": m.get("metrics", {}).get("macro_f1"),
                "error": m.get("error"),
            }
            for m in models
        ],
        key="champion-evaluation",
        description=f"Champions scored on dataset {dataset['version']}",
    )
    return {"dataset_version": dataset["version"], "quarantined": summary["quarantined"], "models": models}


def score_device(store, registry: ModelRegistry, dataset: dict[str, Any], device_id: str) -> dict[str, Any]:
    champion = registry.get_alias(device_id)
    if champion is None:
        return {"device_id": device_id, "version": None, "error": f"device `{device_id}` has no champion: no model of it has passed the gate yet. Run `daqflow run` with its recordings first"}
    manifest = registry.manifest(device_id, champion)
    if manifest["feature_config_hash"] != dataset["devices"][device_id]["feature_config_hash"]:
        return {
            "device_id": device_id,
            "version": champion,
            "error": f"champion {champion} of `{device_id}` was trained on other features; pass the fleet file it was trained with",
        }

    frame = load_device_frame(store, dataset, device_id)
    inputs = model_inputs(store, dataset, manifest, frame)
    probabilities = onnx_probabilities(registry.read_file(device_id, champion, "model.onnx"), manifest["input"]["name"], inputs)
    classes = manifest["classes"]
    predicted = [classes[i] for i in np.argmax(probabilities, axis=1)]
    truth = list(frame["label"].astype(str))
    metrics = classification_metrics(truth, predicted, labels=sorted(set(classes) | set(truth)))
    return {"device_id": device_id, "version": champion, "metrics": metrics, "windows": len(frame)}
