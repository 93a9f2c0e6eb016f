"""Tests of the recording checks, on the real CWRU files and on damaged copies of their signals."""

from __future__ import annotations

import hashlib
import math
import re
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from tasks.readers import Signal
from tasks.recordings import RecordingError, RecordingSpec, read_manifest
from tasks.validation import ValidationConfig, check_signal, check_spec, load_recording

CWRU = Path(__file__).resolve().parent.parent / "data" / "sample" / "cwru"
CONFIG = ValidationConfig()
# Samples in one window, as the feature stage could pass it.
MIN_SAMPLES = 2048


def make_spec(root: Path, path: str, *, channel: str | None = "DE_time", rate: float = 12000.0) -> RecordingSpec:
    return RecordingSpec(
        row=1,
        path=path,
        uri=str(root / path),
        device_id="rig1-drive-end",
        label="ball",
        sampling_rate_hz=rate,
        channel=channel,
    )


def real_signal(path: str, variable: str) -> np.ndarray:
    return scipy.io.loadmat(CWRU / path)[variable].ravel()


def save_mat(root: Path, path: str, variable: str, values: np.ndarray) -> None:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(target, {variable: values[:, np.newaxis]})


def write_bytes(root: Path, path: str, data: bytes) -> None:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def empty_file(root: Path) -> RecordingSpec:
    write_bytes(root, "12k_DE/B028_0.mat", b"")
    return make_spec(root, "12k_DE/B028_0.mat")


def truncated_mat(root: Path) -> RecordingSpec:
    write_bytes(root, "12k_DE/B028_0.mat", (CWRU / "12k_DE/B028_0.mat").read_bytes()[:1000])
    return make_spec(root, "12k_DE/B028_0.mat")


def nan_run(root: Path) -> RecordingSpec:
    values = real_signal("12k_DE/B028_0.mat", "X048_DE_time")
    values[5000:5010] = np.nan
    save_mat(root, "12k_DE/B028_0.mat", "X048_DE_time", values)
    return make_spec(root, "12k_DE/B028_0.mat")


def wrong_channel(root: Path) -> RecordingSpec:
    return replace(make_spec(CWRU, "12k_DE/B028_0.mat"), channel="FE_time")


def zero_sampling_rate(root: Path) -> RecordingSpec:
    return make_spec(CWRU, "12k_DE/B028_0.mat", rate=0.0)


def one_sample(root: Path) -> RecordingSpec:
    first = real_signal("12k_DE/B028_0.mat", "X048_DE_time")[0]
    write_bytes(root, "12k_DE/B028_0.csv", f"time,X048_DE_time\n0.0,{float(first)!r}\n".encode())
    return make_spec(root, "12k_DE/B028_0.csv", channel=None)


def text_renamed_mat(root: Path) -> RecordingSpec:
    write_bytes(root, "12k_DE/B028_0.mat", b"time,X048_DE_time\n0.0,0.0123\n0.0001,0.0456\n")
    return make_spec(root, "12k_DE/B028_0.mat")


def missing_file(root: Path) -> RecordingSpec:
    return make_spec(root, "12k_DE/B099_0.mat")


def flat_stretch(root: Path) -> RecordingSpec:
    values = real_signal("12k_DE/IR007_0.mat", "X105_DE_time")
    values[20000:22000] = values[20000]
    save_mat(root, "12k_DE/IR007_0.mat", "X105_DE_time", values)
    return make_spec(root, "12k_DE/IR007_0.mat")


def clipped(root: Path) -> RecordingSpec:
    values = real_signal("12k_DE/IR007_0.mat", "X105_DE_time")
    rail = 0.3 * np.abs(values).max()
    save_mat(root, "12k_DE/IR007_0.mat", "X105_DE_time", np.clip(values, -rail, rail))
    return make_spec(root, "12k_DE/IR007_0.mat")


BAD_INPUTS: list[tuple[Callable[[Path], RecordingSpec], str, str]] = [
    (empty_file, "empty_file", r"recording `12k_DE/B028_0\.mat` is empty \(0 bytes\)"),
    (truncated_mat, "unreadable", r"recording `12k_DE/B028_0\.mat` could not be read as a MATLAB v5 MAT-file"),
    (nan_run, "non_finite", r"`12k_DE/B028_0\.mat` channel `X048_DE_time` has 10 NaN .* first at index 5000"),
    (
        wrong_channel,
        "channel_not_found",
        r"recording `12k_DE/B028_0\.mat` has no channel matching `FE_time`\. .*: X048_DE_time\. Set `channel`",
    ),
    (zero_sampling_rate, "invalid_sampling_rate", r"`12k_DE/B028_0\.mat` has sampling_rate_hz 0\.0, but it must be"),
    (one_sample, "too_short", r"`12k_DE/B028_0\.csv` channel `X048_DE_time` has 1 sample, .* needs 2048"),
    (text_renamed_mat, "unreadable", r"`12k_DE/B028_0\.mat` is not a MATLAB v5 or v7\.3 MAT-file"),
    (missing_file, "missing_file", r"recording `12k_DE/B099_0\.mat` not found at `.*B099_0\.mat`"),
    (flat_stretch, "flatline", r"`12k_DE/IR007_0\.mat` .* longest run is 2000 samples .* from index 20000"),
    (clipped, "saturated", r"`12k_DE/IR007_0\.mat` channel `X105_DE_time` has .* pinned at its minimum"),
]


@pytest.mark.parametrize(("build", "reason", "message"), BAD_INPUTS, ids=[case[0].__name__ for case in BAD_INPUTS])
def test_bad_recording_is_rejected(tmp_path, build, reason, message):
    spec = build(tmp_path)

    with pytest.raises(RecordingError, match=message) as raised:
        load_recording(spec, min_samples=MIN_SAMPLES, config=CONFIG)

    assert raised.value.reason == reason


def test_path_outside_manifest_is_quarantined(tmp_path):
    shutil.copy(CWRU / "12k_DE/B028_0.mat", tmp_path / "B028_0.mat")
    folder = tmp_path / "manifests"
    folder.mkdir()
    manifest = folder / "recordings.csv"
    manifest.write_text("path,device_id,label,sampling_rate_hz\n../B028_0.mat,rig1-drive-end,ball,12000\n")

    specs, quarantined = read_manifest(str(manifest))

    assert specs == []
    assert [row.reason for row in quarantined] == ["path_outside_manifest"]
    assert "../B028_0.mat" in quarantined[0].message


def test_real_recordings_pass():
    specs, _ = read_manifest(str(CWRU / "recordings.csv"))

    for spec in specs:
        signal, sha256 = load_recording(spec, min_samples=MIN_SAMPLES, config=CONFIG)
        assert signal.values.size > MIN_SAMPLES, spec.path
        assert len(sha256) == 64, spec.path


def test_load_recording_returns_file_sha256():
    spec = make_spec(CWRU, "12k_DE/B028_0.mat")

    _, sha256 = load_recording(spec, min_samples=MIN_SAMPLES, config=CONFIG)

    assert sha256 == hashlib.sha256((CWRU / "12k_DE/B028_0.mat").read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("rate", "message"),
    [
        (0.0, r"sampling_rate_hz 0\.0, but it must be a positive number"),
        (-12000.0, r"sampling_rate_hz -12000\.0, but it must be a positive number"),
        (math.nan, r"sampling_rate_hz nan, but it must be a positive number"),
        (math.inf, r"sampling_rate_hz inf, but it must be a positive number"),
        (50.0, r"sampling_rate_hz 50, outside the accepted range 100 to 1e\+06 Hz"),
        (2e6, r"sampling_rate_hz 2e\+06, outside the accepted range 100 to 1e\+06 Hz"),
    ],
)
def test_check_spec_rejects_rate(rate, message):
    spec = make_spec(CWRU, "12k_DE/B028_0.mat", rate=rate)

    with pytest.raises(RecordingError, match=message) as raised:
        check_spec(spec, config=CONFIG)

    assert raised.value.reason == "invalid_sampling_rate"


@pytest.mark.parametrize("rate", [100.0, 12000.0, 48000.0, 1e6])
def test_check_spec_accepts_rate(rate):
    check_spec(make_spec(CWRU, "12k_DE/B028_0.mat", rate=rate), config=CONFIG)


def test_non_finite_is_checked_before_length():
    signal = Signal(values=np.array([np.inf]), channel="X048_DE_time", shaft_speed_rpm=None)

    with pytest.raises(RecordingError) as raised:
        check_signal(signal, make_spec(CWRU, "a.mat"), min_samples=MIN_SAMPLES, config=CONFIG)

    assert raised.value.reason == "non_finite"


def test_flat_runs_below_run_length_pass():
    values = real_signal("12k_DE/IR007_0.mat", "X105_DE_time")
    run = CONFIG.flat_run_samples - 1
    for start in range(1000, 100_000, 2000):
        values[start : start + run] = values[start]
    signal = Signal(values=values, channel="X105_DE_time", shaft_speed_rpm=None)

    check_signal(signal, make_spec(CWRU, "12k_DE/IR007_0.mat"), min_samples=MIN_SAMPLES, config=CONFIG)


def test_flat_runs_at_run_length_fail():
    values = real_signal("12k_DE/IR007_0.mat", "X105_DE_time")
    run = CONFIG.flat_run_samples
    for start in range(1000, 100_000, 2000):
        values[start : start + run] = values[start]
    signal = Signal(values=values, channel="X105_DE_time", shaft_speed_rpm=None)

    with pytest.raises(RecordingError, match=r"in runs of 64 or more identical values") as raised:
        check_signal(signal, make_spec(CWRU, "12k_DE/IR007_0.mat"), min_samples=MIN_SAMPLES, config=CONFIG)

    assert raised.value.reason == "flatline"


def test_saturation_limit_comes_from_config():
    values = real_signal("12k_DE/IR007_0.mat", "X105_DE_time")
    rail = 0.3 * np.abs(values).max()
    signal = Signal(values=np.clip(values, -rail, rail), channel="X105_DE_time", shaft_speed_rpm=None)
    lenient = ValidationConfig(max_saturated_share=0.5)

    check_signal(signal, make_spec(CWRU, "12k_DE/IR007_0.mat"), min_samples=MIN_SAMPLES, config=lenient)


def test_isolated_extremes_are_not_saturation():
    values = real_signal("12k_DE/IR007_0.mat", "X105_DE_time")
    values[::500] = values.max()
    signal = Signal(values=values, channel="X105_DE_time", shaft_speed_rpm=None)
    assert np.count_nonzero(values == values.max()) / values.size > CONFIG.max_saturated_share

    check_signal(signal, make_spec(CWRU, "12k_DE/IR007_0.mat"), min_samples=MIN_SAMPLES, config=CONFIG)


def test_check_signal_rejects_min_samples_below_one():
    signal = Signal(values=np.zeros(10), channel="0", shaft_speed_rpm=None)

    with pytest.raises(ValueError, match=r"invalid min_samples 0"):
        check_signal(signal, make_spec(CWRU, "a.npy"), min_samples=0, config=CONFIG)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"min_sampling_rate_hz": 0.0}, r"invalid sampling rate range 0\.0 to"),
        ({"min_sampling_rate_hz": 5e6}, r"invalid sampling rate range 5000000\.0 to 1000000\.0 Hz"),
        ({"flat_run_samples": 1}, r"invalid flat_run_samples 1"),
        ({"max_flat_share": 1.5}, r"invalid max_flat_share 1\.5"),
        ({"max_saturated_share": -0.1}, r"invalid max_saturated_share -0\.1"),
    ],
)
def test_config_rejects_bad_limits(options, message):
    with pytest.raises(ValueError, match=message):
        ValidationConfig(**options)


def test_config_to_dict():
    assert ValidationConfig().to_dict() == {
        "min_sampling_rate_hz": 100.0,
        "max_sampling_rate_hz": 1_000_000.0,
        "flat_run_samples": 64,
        "max_flat_share": 0.01,
        "max_saturated_share": 0.001,
    }


def test_messages_name_the_manifest_path(tmp_path):
    for build, _, _ in BAD_INPUTS:
        spec = build(tmp_path / build.__name__)
        with pytest.raises(RecordingError) as raised:
            load_recording(spec, min_samples=MIN_SAMPLES, config=CONFIG)
        assert re.search(rf"`{re.escape(spec.path)}`", raised.value.message), build.__name__
