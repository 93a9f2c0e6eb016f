"""Dataset build: recordings to a versioned Parquet dataset of window features.

The plain functions here run on Dask workers and in tests; they import no
Prefect. `tasks.dataset_tasks` wraps them in Prefect tasks and
`flows.build_dataset` composes those.

A build has three steps:

1. `prepare_recording` (one Dask task per recording): read, validate and
   condition a recording (DC removal, resampling to the device's target rate)
   and store the conditioned signal as `.npy` under a content-addressed key,
   so an unchanged recording is read once across nightly builds.
2. `plan_partitions`: cut each conditioned recording into partitions, each a
   contiguous run of `windows_per_partition` windows.
3. `extract_partition` (one Dask task per partition): read the partition's
   samples, compute one feature row per window and write one Parquet file.

Storage layout under the storage root::

    cache/signals/<signal_id>.npy                   conditioned signals
    datasets/<version>/data/device_id=<id>/part-<recording_id>-<first window>.parquet
    datasets/<version>/manifest.json                written last
    datasets/latest                                 pointer to the newest version, flipped after the manifest
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version as package_version
from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.features import FeatureConfig, condition, extract_features, feature_names, frame, n_windows
from tasks.recordings import Quarantined, RecordingError, RecordingSpec
from tasks.store import Store
from tasks.validation import ValidationConfig, check_spec, load_recording

ID_COLUMNS = ("device_id", "recording_id", "recording_path", "label", "window_index", "window_start", "recorded_at")
LATEST_POINTER = "datasets/latest"


def code_version() -> str:
    """Return the installed daqflow version, part of every dataset and model version."""
    try:
        return package_version("daqflow")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "0+unknown"


@dataclass(frozen=True)
class BuildConfig:
    """How recordings become a dataset.

    Attributes:
        features: feature configuration used for every device without an override.
        device_features: per-device overrides, e.g. a device whose bearing
            geometry is known gets envelope amplitudes at its defect frequencies.
        validation: thresholds that quarantine a recording.
        windows_per_partition: windows per Parquet partition. Smaller means more,
            cheaper Dask tasks; about 1,000 partitions keep 2 to 16 cores busy.
    """

    features: FeatureConfig = field(default_factory=FeatureConfig)
    device_features: dict[str, FeatureConfig] = field(default_factory=dict)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    windows_per_partition: int = 8

    def __post_init__(self) -> None:
        if self.windows_per_partition < 1:
            raise ValueError(
                f"windows_per_partition must be at least 1, got {self.windows_per_partition}"
            )

    def features_for(self, device_id: str) -> FeatureConfig:
        return self.device_features.get(device_id, self.features)

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": self.features.to_dict(),
            "device_features": {device: cfg.to_dict() for device, cfg in sorted(self.device_features.items())},
            "validation": self.validation.to_dict(),
            "windows_per_partition": self.windows_per_partition,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BuildConfig":
        unknown = set(data) - {"features", "device_features", "validation", "windows_per_partition"}
        if unknown:
            raise ValueError(f"unknown build configuration keys: {sorted(unknown)}")
        return cls(
            features=FeatureConfig.from_dict(data.get("features", {})),
            device_features={
                device: FeatureConfig.from_dict(cfg) for device, cfg in data.get("device_features", {}).items()
            },
            validation=ValidationConfig(**data.get("validation", {})),
            windows_per_partition=int(data.get("windows_per_partition", 8)),
        )


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# --- step 1: one recording --------------------------------------------------------------


def prepare_recording(spec: RecordingSpec, *, config: BuildConfig, store: Store) -> dict[str, Any]:
    """Read, validate and condition one recording; store the conditioned signal.

    Returns a record of the accepted recording, or ``{"quarantined": {...}}``
    with the reason. Never raises for a bad recording: one bad file must not
    stop the others.
    """
    started = time.perf_counter()
    features = config.features_for(spec.device_id)
    try:
        check_spec(spec, config=config.validation)
        min_samples = math.ceil(features.window_length * spec.sampling_rate_hz / features.target_sampling_rate_hz)
        signal, file_sha256 = load_recording(spec, min_samples=min_samples, config=config.validation)
        shaft_speed = spec.shaft_speed_rpm if spec.shaft_speed_rpm is not None else signal.shaft_speed_rpm
        if features.bearing is not None and shaft_speed is None:
            raise RecordingError(
                "invalid_value",
                f"recording `{spec.path}` of device `{spec.device_id}` has no shaft speed, but the device's bearing "
                "geometry is set, so defect-frequency features need one. Add `shaft_speed_rpm` to the manifest row.",
            )
    except RecordingError as error:
        return {"quarantined": Quarantined(spec.path, spec.device_id, error.reason, error.message).to_dict()}

    recording_id = hashlib.sha256(f"{file_sha256}:{signal.channel}".encode()).hexdigest()[:16]
    signal_id = sha256_json(
        {
            "recording_id": recording_id,
            "sampling_rate_hz": spec.sampling_rate_hz,
            "target_sampling_rate_hz": features.target_sampling_rate_hz,
            "code_version": code_version(),
        }
    )[:24]
    signal_key = f"cache/signals/{signal_id}.npy"
    conditioned = condition(signal.values, spec.sampling_rate_hz, features)
    if not store.exists(signal_key):
        buffer = io.BytesIO()
        np.save(buffer, conditioned, allow_pickle=False)
        store.write_bytes(signal_key, buffer.getvalue())

    return {
        "row": spec.row,
        "path": spec.path,
        "device_id": spec.device_id,
        "label": spec.label,
        "daq_id": spec.daq_id,
        "recorded_at": spec.recorded_at,
        "channel": signal.channel,
        "manifest_channel": spec.channel,
        "sampling_rate_hz": spec.sampling_rate_hz,
        "shaft_speed_rpm": shaft_speed,
        "sha256": file_sha256,
        "recording_id": recording_id,
        "samples": int(signal.values.size),
        "conditioned_samples": int(conditioned.size),
        "windows": n_windows(conditioned.size, features.window_length, features.hop_length),
        "signal_key": signal_key,
        "seconds": time.perf_counter() - started,
    }


def drop_duplicates(prepared: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Keep the first recording of each content (file sha256 and channel) in manifest order.

    A byte-identical copy under another name would otherwise put the same
    windows on both sides of the train/evaluation split.
    """
    kept: list[dict[str, Any]] = []
    duplicates: list[dict[str, Any]] = []
    first_path: dict[str, str] = {}
    for record in sorted(prepared, key=lambda r: r["row"]):
        original = first_path.get(record["recording_id"])
        if original is None:
            first_path[record["recording_id"]] = record["path"]
            kept.append(record)
            continue
        message = (
            f"recording `{record['path']}` channel {record['channel']} has the same content (sha256 "
            f"{record['sha256'][:12]}...) as `{original}`, which is already in the dataset. "
            "Remove the duplicate row from the manifest."
        )
        duplicates.append(Quarantined(record["path"], record["device_id"], "duplicate", message).to_dict())
    return kept, duplicates


def dataset_version(recordings: list[dict[str, Any]], config: BuildConfig) -> str:
    """Return the content hash that names a dataset: same inputs and configuration, same version."""
    inputs = sorted(
        (r["device_id"], r["label"], r["sha256"], r["channel"], r["sampling_rate_hz"], r["recorded_at"] or "", r["shaft_speed_rpm"] or 0.0)
        for r in recordings
    )
    return "ds-" + sha256_json({"code_version": code_version(), "config": config.to_dict(), "recordings": inputs})[:16]


# --- step 2: partitions -------------------------------------------------------------------


def plan_partitions(recordings: list[dict[str, Any]], *, config: BuildConfig, version: str) -> list[dict[str, Any]]:
    """Cut every recording into partitions of at most `windows_per_partition` windows."""
    partitions = []
    for record in sorted(recordings, key=lambda r: (r["device_id"], r["recording_id"])):
        features = config.features_for(record["device_id"])
        for first in range(0, record["windows"], config.windows_per_partition):
            count = min(config.windows_per_partition, record["windows"] - first)
            key = (
                f"datasets/{version}/data/device_id={record['device_id']}/"
                f"part-{record['recording_id']}-{first:06d}.parquet"
            )
            partitions.append(
                {
                    "key": key,
                    "device_id": record["device_id"],
                    "recording_id": record["recording_id"],
                    "recording_path": record["path"],
                    "label": record["label"],
                    "recorded_at": record["recorded_at"],
                    "shaft_speed_rpm": record["shaft_speed_rpm"],
                    "signal_key": record["signal_key"],
                    "first_window": first,
                    "windows": count,
                    "features": features.to_dict(),
                }
            )
    return partitions


# --- step 3: one partition ----------------------------------------------------------------


def read_npy_slice(store: Store, key: str, start: int, stop: int) -> np.ndarray:
    """Read samples [start, stop) of a 1-D `.npy` file with one ranged read.

    Works the same on a local disk and on S3, where it fetches only the bytes
    of the slice instead of the whole signal.
    """
    with store.fs.open(store.path(key), "rb") as fh:
        major, _minor = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(fh)
        if len(shape) != 1 or fortran_order:
            raise ValueError(f"{store.url(key)} is not a 1-D signal: shape {shape}")
        stop = min(stop, shape[0])
        fh.seek(fh.tell() + start * dtype.itemsize)
        data = fh.read((stop - start) * dtype.itemsize)
    return np.frombuffer(data, dtype=dtype).astype(np.float64)


def partition_frame(partition: dict[str, Any], windows: np.ndarray, features: np.ndarray, names: list[str]) -> pd.DataFrame:
    config = FeatureConfig.from_dict(partition["features"])
    index = np.arange(partition["first_window"], partition["first_window"] + len(windows), dtype=np.int64)
    columns: dict[str, Any] = {
        "device_id": partition["device_id"],
        "recording_id": partition["recording_id"],
        "recording_path": partition["recording_path"],
        "label": partition["label"],
        "window_index": index,
        "window_start": index * config.hop_length,
        "recorded_at": partition["recorded_at"],
    }
    frame_ = pd.DataFrame(columns, index=pd.RangeIndex(len(windows)))
    frame_["recorded_at"] = frame_["recorded_at"].astype("string")
    for position, name in enumerate(names):
        frame_[name] = features[:, position]
    return frame_


def content_hash(table: pd.DataFrame) -> str:
    """Hash of a partition's values, independent of Parquet encoding details."""
    row_hashes = pd.util.hash_pandas_object(table, index=False).to_numpy()
    return hashlib.sha256(row_hashes.tobytes()).hexdigest()


def extract_partition(partition: dict[str, Any], *, store: Store) -> dict[str, Any]:
    """Compute the feature rows of one partition and write them as one Parquet file."""
    started = time.perf_counter()
    config = FeatureConfig.from_dict(partition["features"])
    start = partition["first_window"] * config.hop_length
    stop = start + (partition["windows"] - 1) * config.hop_length + config.window_length
    samples = read_npy_slice(store, partition["signal_key"], start, stop)
    read_seconds = time.perf_counter() - started

    windows = frame(samples, config.window_length, config.hop_length)
    names = feature_names(config)
    features = extract_features(windows, config, shaft_speed_rpm=partition["shaft_speed_rpm"])
    feature_seconds = time.perf_counter() - started - read_seconds

    table = partition_frame(partition, windows, features, names)
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), buffer, compression="zstd")
    store.write_bytes(partition["key"], buffer.getvalue())

    return {
        "key": partition["key"],
        "device_id": partition["device_id"],
        "recording_id": partition["recording_id"],
        "first_window": partition["first_window"],
        "rows": len(table),
        "content_sha256": content_hash(table),
        "seconds": {"read": read_seconds, "features": feature_seconds, "total": time.perf_counter() - started},
    }


# --- manifest -----------------------------------------------------------------------------


def build_manifest(
    *,
    version: str,
    config: BuildConfig,
    recordings: list[dict[str, Any]],
    partitions: list[dict[str, Any]],
    quarantined: list[dict[str, Any]],
    source_manifest: str,
) -> dict[str, Any]:
    """Assemble the dataset manifest; see `docs/dataset.md` for every field."""
    devices = sorted({r["device_id"] for r in recordings})
    schema = {}
    for device in devices:
        features = config.features_for(device)
        schema[device] = {
            "feature_config": features.to_dict(),
            "feature_config_hash": features.config_hash(),
            "feature_names": feature_names(features),
            "id_columns": list(ID_COLUMNS),
        }
    return {
        "version": version,
        "code_version": code_version(),
        "source_manifest": source_manifest,
        "build_config": config.to_dict(),
        "devices": schema,
        "recordings": [{k: v for k, v in r.items() if k != "seconds"} for r in sorted(recordings, key=lambda r: r["row"])],
        "partitions": [
            {k: p[k] for k in ("key", "device_id", "recording_id", "first_window", "rows", "content_sha256")}
            for p in sorted(partitions, key=lambda p: p["key"])
        ],
        "quarantined": quarantined,
        "created_at": pd.Timestamp.now(tz="UTC").isoformat(),
    }


def manifest_key(version: str) -> str:
    return f"datasets/{version}/manifest.json"


def commit_dataset(store: Store, manifest: dict[str, Any], *, update_latest: bool = True) -> str:
    """Write the manifest, then flip the `latest` pointer; return the manifest key."""
    key = store.write_json(manifest_key(manifest["version"]), manifest)
    if update_latest:
        point_latest(store, manifest["version"])
    return key


def point_latest(store: Store, version: str) -> None:
    """Make `version` the dataset that readers get when they ask for no version."""
    store.write_text(LATEST_POINTER, version + "\n")


def read_dataset_manifest(store: Store, version: str | None = None) -> dict[str, Any]:
    """Read a complete dataset's manifest; `version=None` reads the latest one."""
    if version is None:
        if not store.exists(LATEST_POINTER):
            raise FileNotFoundError(f"no dataset under {store.url('datasets')}; run build_dataset first")
        version = store.read_text(LATEST_POINTER).strip()
    key = manifest_key(version)
    if not store.exists(key):
        raise FileNotFoundError(
            f"dataset {version} has no manifest at {store.url(key)}: the build did not finish. Run build_dataset again."
        )
    return store.read_json(key)


def load_device_frame(store: Store, manifest: dict[str, Any], device_id: str) -> pd.DataFrame:
    """Read one device's windows, ordered by recording and window index."""
    keys = [p["key"] for p in manifest["partitions"] if p["device_id"] == device_id]
    if not keys:
        raise KeyError(f"dataset {manifest['version']} has no windows for device `{device_id}`")
    tables = [pq.read_table(store.path(key), filesystem=store.fs) for key in keys]
    frame_ = pa.concat_tables(tables).to_pandas()
    return frame_.sort_values(["recording_id", "window_index"], ignore_index=True)


def summarize(manifest: dict[str, Any], *, cached: bool) -> dict[str, Any]:
    """Summary of a dataset for the run output and the Prefect UI."""
    devices: dict[str, dict[str, Any]] = {}
    for record in manifest["recordings"]:
        device = devices.setdefault(record["device_id"], {"recordings": 0, "windows": 0, "partitions": 0, "labels": {}})
        device["recordings"] += 1
        device["windows"] += record["windows"]
        device["labels"][record["label"]] = device["labels"].get(record["label"], 0) + record["windows"]
    for partition in manifest["partitions"]:
        devices[partition["device_id"]]["partitions"] += 1
    return {
        "version": manifest["version"],
        "cached": cached,
        "recordings": len(manifest["recordings"]),
        "partitions": len(manifest["partitions"]),
        "windows": sum(p["rows"] for p in manifest["partitions"]),
        "devices": devices,
        "quarantined": manifest["quarantined"],
    }


def batched(items: list[Any], n_batches: int) -> Iterable[list[Any]]:
    """Split `items` into at most `n_batches` contiguous, nearly equal batches."""
    n_batches = max(1, min(n_batches, len(items)))
    size = math.ceil(len(items) / n_batches)
    for start in range(0, len(items), size):
        yield items[start : start + size]

