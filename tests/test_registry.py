"""Tests of tasks.registry on a local Store, with a LightGBM model trained on a real CWRU recording."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.stats

from tasks.registry import ModelIntegrityError, ModelRegistry
from tasks.store import Store
from tasks.train import TrainConfig, train_lightgbm

DEVICE = "rig1-drive-end"
CWRU_12K_DE = Path(__file__).resolve().parents[1] / "data" / "sample" / "cwru" / "12k_DE"


@pytest.fixture(scope="module")
def model_text() -> bytes:
    """LightGBM model text of a small model: ball versus outer race on two halves of real recordings."""
    frames = []
    for label, name in (("outer_race", "OR007@6_0.mat"), ("ball", "B007_0.mat")):
        contents = scipy.io.loadmat(CWRU_12K_DE / name)
        signal = next(value for key, value in contents.items() if key.endswith("_DE_time")).ravel()
        windows = signal[: 60 * 1024].reshape(60, 1024)
        frames.append(
            pd.DataFrame(
                {
                    "recording_id": name,
                    "window_index": np.arange(60),
                    "label": label,
                    "rms": np.sqrt(np.mean(windows**2, axis=1)),
                    "kurtosis": scipy.stats.kurtosis(windows, axis=1),
                }
            )
        )
    trained = train_lightgbm(
        pd.concat(frames, ignore_index=True), feature_names=["rms", "kurtosis"], config=TrainConfig(params={"n_estimators": 5})
    )
    return trained.native_bytes()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store("file", str(tmp_path))


@pytest.fixture
def registry(store: Store) -> ModelRegistry:
    return ModelRegistry(store)


INFO = {
    "dataset_version": "ds-1",
    "feature_config_hash": "fc-1",
    "params": {"n_estimators": 5},
    "code_version": "0.1.0",
    "model_type": "lightgbm",
    "classes": ["ball", "outer_race"],
    "feature_names": ["rms", "kurtosis"],
}
METRICS = {"macro_f1": 0.93, "accuracy": 0.95}


def register(registry: ModelRegistry, version: str, model_text: bytes, device_id: str = DEVICE) -> dict:
    files = {"model.txt": model_text, "model.onnx": b"\x08\x07onnx-bytes"}
    return registry.register(device_id, version, files=files, metrics=METRICS, info=INFO)


# register and read


def test_register_writes_layout(registry, store, model_text):
    register(registry, "v1", model_text)

    assert store.list(f"models/{DEVICE}/v1") == [
        f"models/{DEVICE}/v1/{name}" for name in ("manifest.json", "metrics.json", "model.onnx", "model.txt")
    ]


def test_register_manifest_records_files_and_info(registry, model_text):
    manifest = register(registry, "v1", model_text)

    assert manifest == registry.manifest(DEVICE, "v1")
    assert manifest["device_id"] == DEVICE
    assert manifest["version"] == "v1"
    assert manifest["files"]["model.txt"] == {"sha256": hashlib.sha256(model_text).hexdigest(), "bytes": len(model_text)}
    assert set(manifest["files"]) == {"model.txt", "model.onnx", "metrics.json"}
    assert {key: manifest[key] for key in INFO} == INFO
    assert manifest["created_at"].endswith("+00:00")


def test_register_round_trips_files_and_metrics(registry, model_text):
    register(registry, "v1", model_text)

    assert registry.read_file(DEVICE, "v1", "model.txt") == model_text
    assert registry.metrics(DEVICE, "v1") == METRICS
    assert registry.exists(DEVICE, "v1")
    assert not registry.exists(DEVICE, "v2")


def test_register_writes_manifest_last(registry, store, model_text, monkeypatch):
    written = []
    original = Store.write_bytes

    def recording_write(self, key, data):
        written.append(key.rsplit("/", 1)[-1])
        return original(self, key, data)

    monkeypatch.setattr(Store, "write_bytes", recording_write)
    register(registry, "v1", model_text)

    assert written == ["model.txt", "model.onnx", "metrics.json", "manifest.json"]


def test_version_without_manifest_is_not_listed(registry, store, model_text):
    register(registry, "v1", model_text)
    store.write_bytes(f"models/{DEVICE}/v2/model.txt", model_text)
    store.write_json(f"models/{DEVICE}/v2/metrics.json", METRICS)

    assert registry.versions(DEVICE) == ["v1"]
    assert not registry.exists(DEVICE, "v2")


def test_version_without_manifest_can_be_registered(registry, store, model_text):
    store.write_bytes(f"models/{DEVICE}/v1/model.txt", b"partial")

    register(registry, "v1", model_text)

    assert registry.read_file(DEVICE, "v1", "model.txt") == model_text


def test_versions_sorted_by_created_at(registry, store, model_text):
    for version in ("c", "a", "b"):
        register(registry, version, model_text)

    assert registry.versions(DEVICE) == ["c", "a", "b"]


def test_devices_lists_registered_devices_only(registry, store, model_text):
    register(registry, "v1", model_text, device_id="rig1-fan-end")
    register(registry, "v1", model_text)
    store.write_bytes("models/rig2/v1/model.txt", model_text)

    assert registry.devices() == [DEVICE, "rig1-fan-end"]


def test_empty_registry_lists_nothing(registry):
    assert registry.devices() == []
    assert registry.versions(DEVICE) == []
    assert registry.get_alias(DEVICE) is None


# integrity


def test_read_file_detects_flipped_byte(registry, store, tmp_path, model_text):
    register(registry, "v1", model_text)
    path = tmp_path / "models" / DEVICE / "v1" / "model.txt"
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))

    with pytest.raises(ModelIntegrityError, match=r"model.txt has sha256 \w+ \(\d+ bytes\) but the manifest records"):
        registry.read_file(DEVICE, "v1", "model.txt")


def test_metrics_detects_edited_file(registry, tmp_path, model_text):
    register(registry, "v1", model_text)
    path = tmp_path / "models" / DEVICE / "v1" / "metrics.json"
    path.write_text(json.dumps({**METRICS, "macro_f1": 0.99}))

    with pytest.raises(ModelIntegrityError, match=r"metrics.json has sha256"):
        registry.metrics(DEVICE, "v1")


def test_read_file_names_missing_file(registry, model_text):
    register(registry, "v1", model_text)

    with pytest.raises(FileNotFoundError, match=r"has no file 'bundle.tar'; files: \['metrics.json', 'model.onnx', 'model.txt'\]"):
        registry.read_file(DEVICE, "v1", "bundle.tar")


def test_manifest_names_missing_version(registry, model_text):
    register(registry, "v1", model_text)

    with pytest.raises(FileNotFoundError, match=r"version 'v9' of device 'rig1-drive-end' is not registered.*\['v1'\]"):
        registry.manifest(DEVICE, "v9")


# bad input to register


@pytest.mark.parametrize(
    ("device_id", "version", "files", "info", "message"),
    [
        ("../etc", "v1", {}, {}, r"device_id '../etc' is not a valid name"),
        (DEVICE, "a/b", {}, {}, r"version 'a/b' is not a valid name"),
        (DEVICE, "", {}, {}, r"version '' is not a valid name"),
        (DEVICE, "v1", {".hidden": b""}, {}, r"file name '.hidden' is not a valid name"),
        (DEVICE, "v1", {"manifest.json": b"{}"}, {}, r"files \['manifest.json'\] .* use names the registry writes itself"),
        (DEVICE, "v1", {}, {"created_at": "yesterday"}, r"info keys \['created_at'\] are set by the registry"),
    ],
)
def test_register_rejects_bad_input(registry, device_id, version, files, info, message):
    with pytest.raises(ValueError, match=message):
        registry.register(device_id, version, files=files, metrics=METRICS, info=info)


def test_register_rejects_existing_version(registry, model_text):
    register(registry, "v1", model_text)

    with pytest.raises(ValueError, match=r"'v1' of device 'rig1-drive-end' is already registered; versions are immutable"):
        register(registry, "v1", b"other model")
    assert registry.read_file(DEVICE, "v1", "model.txt") == model_text


# aliases


def test_champion_alias_points_at_version(registry, model_text):
    register(registry, "v1", model_text)
    register(registry, "v2", model_text)

    registry.set_alias(DEVICE, "v1")
    assert registry.get_alias(DEVICE) == "v1"

    registry.set_alias(DEVICE, "v2")
    assert registry.get_alias(DEVICE) == "v2"
    assert registry.get_alias(DEVICE, "challenger") is None


def test_alias_is_not_listed_as_version(registry, model_text):
    register(registry, "v1", model_text)
    registry.set_alias(DEVICE, "v1")

    assert registry.versions(DEVICE) == ["v1"]
    assert registry.devices() == [DEVICE]


def test_set_alias_rejects_unknown_version(registry, model_text):
    register(registry, "v1", model_text)
    registry.set_alias(DEVICE, "v1")

    with pytest.raises(ValueError, match=r"version 'v9': it is not registered. Registered versions: \['v1'\]"):
        registry.set_alias(DEVICE, "v9")
    assert registry.get_alias(DEVICE) == "v1"


def test_set_alias_rejects_version_name(registry, model_text):
    register(registry, "v1", model_text)
    register(registry, "v2", model_text)

    with pytest.raises(ValueError, match=r"alias 'v2' of device 'rig1-drive-end' is also a model version"):
        registry.set_alias(DEVICE, "v1", alias="v2")


def test_alias_flip_is_atomic_for_readers(registry, store, tmp_path, model_text):
    register(registry, "v1", model_text)
    register(registry, "v2", model_text)
    registry.set_alias(DEVICE, "v1")
    seen: list[str | None] = []
    errors: list[Exception] = []
    done = threading.Event()

    def read_until_done():
        reader = ModelRegistry(Store("file", str(tmp_path)))
        while not done.is_set():
            try:
                seen.append(reader.get_alias(DEVICE))
            except Exception as error:  # noqa: BLE001 - any failed read is what the test looks for
                errors.append(error)

    thread = threading.Thread(target=read_until_done)
    thread.start()
    for flip in range(200):
        registry.set_alias(DEVICE, "v2" if flip % 2 == 0 else "v1")
    done.set()
    thread.join()

    assert errors == []
    assert set(seen) <= {"v1", "v2"}
    assert len(seen) > 0
    assert [path.name for path in (tmp_path / "models" / DEVICE).iterdir() if path.name.startswith(".")] == []
