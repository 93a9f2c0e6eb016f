"""Publish a device's champion to the edge target as a signed bundle.

Plain Python, no Prefect. The bundle is written under a temporary name and
renamed into place, verified with the same code the edge box runs, and only
then is the device's `current` pointer flipped.
"""

from __future__ import annotations

import logging
import statistics
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge.bundle import add_trusted_key, build_manifest, key_id, make_bundle, verify_bundle
from edge.layout import bundle_dir, current_version, install_bundle, set_current, trusted_keys_dir
from tasks.registry import ModelRegistry

logger = logging.getLogger(__name__)


def feature_spec(dataset: dict[str, Any], device_id: str) -> dict[str, Any]:
    """Describe how the edge box turns a raw recording into model inputs, as training did."""
    schema = dataset["devices"][device_id]
    config = schema["feature_config"]
    recordings = [r for r in dataset["recordings"] if r["device_id"] == device_id]
    channels = {r.get("manifest_channel") for r in recordings}
    speeds = [r["shaft_speed_rpm"] for r in recordings if r.get("shaft_speed_rpm")]
    return {
        "config": config,
        "config_hash": schema["feature_config_hash"],
        "window_length": config["window_length"],
        "hop_length": config["hop_length"],
        "target_sampling_rate_hz": config["target_sampling_rate_hz"],
        "channel": channels.pop() if len(channels) == 1 else None,
        "default_shaft_speed_rpm": statistics.median(speeds) if speeds else None,
    }


def publish_device(
    registry: ModelRegistry, dataset: dict[str, Any], device_id: str, version: str, *, edge_root: Path, signing_key
) -> dict[str, Any]:
    """Write, verify and put into service the bundle of one model version.

    Returns a record with the bundle folder and whether it was newly published
    (False when that version was already in service).
    """
    target = bundle_dir(edge_root, device_id, version)
    if current_version(edge_root, device_id) == version:
        return {"device_id": device_id, "version": version, "bundle": str(target), "published": False}

    manifest = registry.manifest(device_id, version)
    model_onnx = registry.read_file(device_id, version, "model.onnx")
    public_key = signing_key.public_key()
    trusted = trusted_keys_dir(edge_root)
    if not (trusted / f"{key_id(public_key)}.pem").exists():
        add_trusted_key(trusted, public_key)

    if not target.exists():
        bundle_manifest = build_manifest(
            device_id=device_id,
            version=version,
            model_type=manifest["model_type"],
            classes=manifest["classes"],
            input_spec=manifest["input"],
            feature_spec=feature_spec(dataset, device_id),
            metrics={k: registry.metrics(device_id, version)[k] for k in ("accuracy", "macro_f1", "per_class")},
            dataset_version=manifest["dataset_version"],
            files={"model.onnx": model_onnx},
            key_id=key_id(public_key),
            created_at=datetime.now(timezone.utc).isoformat(),
            extra={"parity": manifest["parity"], "code_version": manifest["code_version"]},
        )
        install_bundle(edge_root, device_id, version, make_bundle(model_onnx=model_onnx, manifest=bundle_manifest, key=signing_key))

    verify_bundle(target, trusted_keys=trusted)
    set_current(edge_root, device_id, version)
    logger.info("Published bundle %s of device %s to %s", version, device_id, target)
    return {"device_id": device_id, "version": version, "bundle": str(target), "published": True}
