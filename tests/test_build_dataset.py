"""End-to-end dataset builds under a real Prefect server and a real Dask cluster."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from blocks.storage import LocalStorage
from flows.build_dataset import build_dataset
from tasks.dataset import BuildConfig, load_device_frame, read_dataset_manifest
from tasks.features import condition, extract_features, feature_names, frame
from tasks.readers import read_signal_file

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture(scope="module")
def sample_build(tmp_path_factory, sample_manifest, dask_compute):
    storage = LocalStorage(basepath=str(tmp_path_factory.mktemp("store")))
    summary = build_dataset(str(sample_manifest), storage=storage, compute=dask_compute)
    return storage, summary


def test_sample_build_quarantines_duplicate(sample_build):
    _, summary = sample_build
    reasons = {q["path"]: q["reason"] for q in summary["quarantined"]}

    assert reasons == {"0HP/48k_Drive_End_IR014_0_174.mat": "duplicate"}


def test_sample_build_counts(sample_build):
    storage, summary = sample_build
    manifest = read_dataset_manifest(storage.get_store(), summary["version"])

    assert summary["recordings"] == 13
    assert set(summary["devices"]) == {"rig1-drive-end", "rig1-fan-end"}
    assert summary["devices"]["rig1-drive-end"]["labels"].keys() == {"normal", "inner_race", "ball", "outer_race"}
    assert summary["windows"] == sum(r["windows"] for r in manifest["recordings"])
    assert summary["partitions"] == len(manifest["partitions"])


def test_sample_build_partitions_match_manifest(sample_build):
    storage, summary = sample_build
    store = storage.get_store()
    manifest = read_dataset_manifest(store, summary["version"])

    for partition in manifest["partitions"]:
        table = pq.read_table(store.path(partition["key"]))
        assert table.num_rows == partition["rows"], partition["key"]
    assert store.read_text("datasets/latest").strip() == summary["version"]


def test_normal_recording_resampled_to_device_rate(sample_build):
    storage, summary = sample_build
    manifest = read_dataset_manifest(storage.get_store(), summary["version"])
    normal = next(r for r in manifest["recordings"] if r["path"] == "Normal/Normal_0.mat" and r["device_id"] == "rig1-drive-end")

    assert normal["sampling_rate_hz"] == 48000
    assert normal["conditioned_samples"] == pytest.approx(normal["samples"] / 4, abs=1)


def test_window_features_equal_direct_computation(sample_build, sample_dir):
    storage, summary = sample_build
    store = storage.get_store()
    manifest = read_dataset_manifest(store, summary["version"])
    device = "rig1-drive-end"
    config = BuildConfig().features_for(device)
    frame_ = load_device_frame(store, manifest, device)
    record = next(r for r in manifest["recordings"] if r["path"] == "12k_DE/IR007_0.mat" and r["device_id"] == device)

    signal, _ = read_signal_file(str(sample_dir / record["path"]), channel="DE_time")
    windows = frame(condition(signal.values, 12000, config), config.window_length, config.hop_length)
    expected = extract_features(windows, config, shaft_speed_rpm=record["shaft_speed_rpm"])
    rows = frame_[frame_["recording_id"] == record["recording_id"]].sort_values("window_index")

    assert len(rows) == len(expected)
    np.testing.assert_allclose(rows[feature_names(config)].to_numpy(), expected, rtol=1e-12)


def test_rebuild_gives_same_version_and_reuses_it(sample_build, sample_manifest, dask_compute, tmp_path):
    storage, summary = sample_build

    again = build_dataset(str(sample_manifest), storage=storage, compute=dask_compute)
    elsewhere = build_dataset(str(sample_manifest), storage=LocalStorage(basepath=str(tmp_path)), compute=dask_compute)

    assert again["version"] == summary["version"]
    assert again["cached"] is True
    assert elsewhere["version"] == summary["version"]
    assert elsewhere["cached"] is False


def test_partition_content_hashes_reproducible(sample_build, sample_manifest, dask_compute, tmp_path):
    storage, summary = sample_build
    first = read_dataset_manifest(storage.get_store(), summary["version"])

    other = LocalStorage(basepath=str(tmp_path))
    build_dataset(str(sample_manifest), storage=other, compute=dask_compute)
    second = read_dataset_manifest(other.get_store(), summary["version"])

    assert [p["content_sha256"] for p in first["partitions"]] == [p["content_sha256"] for p in second["partitions"]]


def test_bad_rows_quarantined_rest_proceed(tmp_path, sample_dir, dask_compute):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(sample_dir / "12k_DE" / "IR007_0.mat", data / "good.mat")
    shutil.copy(sample_dir / "12k_DE" / "B007_0.mat", data / "good2.mat")
    (data / "empty.mat").write_bytes(b"")
    (data / "notes.mat").write_text("operator notes, not a MAT file\n")
    (data / "truncated.mat").write_bytes((sample_dir / "12k_DE" / "B021_0.mat").read_bytes()[:1000])
    with_nan = np.sin(np.linspace(0, 400, 30000))
    with_nan[1000:1200] = np.nan
    np.save(data / "nan_run.npy", with_nan)
    np.save(data / "one_sample.npy", np.array([0.5]))
    rows = [
        ("good.mat", "inner_race", 12000, "DE_time"),
        ("good2.mat", "ball", 12000, "DE_time"),
        ("empty.mat", "ball", 12000, "DE_time"),
        ("notes.mat", "ball", 12000, "DE_time"),
        ("truncated.mat", "ball", 12000, "DE_time"),
        ("nan_run.npy", "ball", 12000, ""),
        ("one_sample.npy", "ball", 12000, ""),
        ("good.mat", "inner_race", 12000, "BA_typo"),
        ("good.mat", "inner_race", 0, "DE_time"),
        ("../outside.mat", "ball", 12000, "DE_time"),
        ("missing.mat", "ball", 12000, "DE_time"),
    ]
    manifest = data / "recordings.csv"
    pd.DataFrame(
        [{"path": p, "device_id": "press-7", "label": label, "sampling_rate_hz": rate, "channel": ch} for p, label, rate, ch in rows]
    ).to_csv(manifest, index=False)

    summary = build_dataset(str(manifest), storage=LocalStorage(basepath=str(tmp_path / "store")), compute=dask_compute)
    reasons = sorted((q["path"], q["reason"]) for q in summary["quarantined"])

    assert summary["recordings"] == 2
    assert reasons == sorted(
        [
            ("empty.mat", "empty_file"),
            ("notes.mat", "unreadable"),
            ("truncated.mat", "unreadable"),
            ("nan_run.npy", "non_finite"),
            ("one_sample.npy", "too_short"),
            ("good.mat", "channel_not_found"),
            ("good.mat", "invalid_sampling_rate"),
            ("../outside.mat", "path_outside_manifest"),
            ("missing.mat", "missing_file"),
        ]
    )
    for item in summary["quarantined"]:
        assert item["path"] in item["message"], item


def test_unfinished_version_is_not_readable(tmp_path):
    store = LocalStorage(basepath=str(tmp_path)).get_store()
    store.write_bytes("datasets/ds-unfinished/data/device_id=a/part-x-000000.parquet", b"partial")

    with pytest.raises(FileNotFoundError, match="did not finish"):
        read_dataset_manifest(store, "ds-unfinished")
