"""Tests of the recording readers, on the real CWRU files and on real signals written in other formats."""

from __future__ import annotations

import hashlib
import io
import uuid
from pathlib import Path

import fsspec
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io

from tasks.readers import SUPPORTED_SUFFIXES, list_channels, read_signal, read_signal_file
from tasks.recordings import RecordingError

CWRU = Path(__file__).resolve().parent.parent / "data" / "sample" / "cwru"


def cwru_bytes(path: str) -> bytes:
    return (CWRU / path).read_bytes()


def cwru_variable(path: str, variable: str) -> np.ndarray:
    """Load one variable with scipy directly, as the reference the readers must reproduce."""
    return scipy.io.loadmat(CWRU / path)[variable].ravel()


def write_mat_v73(variables: dict[str, np.ndarray]) -> bytes:
    """Write variables the way MATLAB's ``save -v7.3`` lays them out.

    The file is HDF5 behind a 512-byte user block whose first 128 bytes are a
    MAT header. Arrays are stored transposed because MATLAB is column-major.
    """
    buffer = io.BytesIO()
    with h5py.File(buffer, "w", userblock_size=512) as file:
        for name, value in variables.items():
            dataset = file.create_dataset(name, data=value.T)
            dataset.attrs["MATLAB_class"] = np.bytes_({"float64": "double", "uint16": "uint16"}[value.dtype.name])

    data = bytearray(buffer.getvalue())
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Thu Dec  4 20:20:00 2025 HDF5 schema 1.00 ."
    data[:128] = text.ljust(116, b" ") + bytes(8) + b"\x00\x02" + b"IM"
    return bytes(data)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("12k_DE/IR007_0.mat", "X105_DE_time"),
        ("Normal/Normal_0.mat", "X097_DE_time"),
    ],
)
def test_variable_name_differs_per_file(path, expected):
    signal = read_signal(cwru_bytes(path), name=path, channel="DE_time")

    assert signal.channel == expected
    assert np.array_equal(signal.values, cwru_variable(path, expected))


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("12k_DE/B028_0.mat", ["X048_DE_time"]),
        ("48k_DE/IR014_0.mat", ["X173_DE_time", "X173_FE_time"]),
    ],
)
def test_variable_number_differs_from_file_number(path, expected):
    assert list_channels(cwru_bytes(path), name=path) == expected


@pytest.mark.parametrize("channel", ["X105_DE_time", "DE_time", "DE"])
def test_channel_matches_by_suffix(channel):
    signal = read_signal(cwru_bytes("12k_DE/IR007_0.mat"), name="12k_DE/IR007_0.mat", channel=channel)

    assert signal.channel == "X105_DE_time"


def test_missing_channel_lists_channels_present():
    message = (
        r"recording `12k_DE/B028_0\.mat` has no channel matching `FE_time`\. "
        r"Channels present \(vectors named \*_time\): X048_DE_time\. Set `channel` in the manifest or drop the row\."
    )

    with pytest.raises(RecordingError, match=message) as raised:
        read_signal(cwru_bytes("12k_DE/B028_0.mat"), name="12k_DE/B028_0.mat", channel="FE_time")

    assert raised.value.reason == "channel_not_found"


def test_ambiguous_channel_lists_matches():
    with pytest.raises(RecordingError, match=r"several channels matching `time`: X105_DE_time, X105_FE_time") as raised:
        read_signal(cwru_bytes("12k_DE/IR007_0.mat"), name="12k_DE/IR007_0.mat", channel="time")

    assert raised.value.reason == "channel_not_found"


def test_no_channel_picks_the_only_one():
    signal = read_signal(cwru_bytes("12k_DE/B028_0.mat"), name="12k_DE/B028_0.mat", channel=None)

    assert signal.channel == "X048_DE_time"


def test_no_channel_with_several_raises():
    message = r"has 3 channels \(vectors named \*_time\): X105_DE_time, X105_FE_time, X105_BA_time\. Set `channel`"

    with pytest.raises(RecordingError, match=message) as raised:
        read_signal(cwru_bytes("12k_DE/IR007_0.mat"), name="12k_DE/IR007_0.mat", channel=None)

    assert raised.value.reason == "channel_not_found"


def test_stray_variable_is_not_a_channel():
    data = cwru_bytes("12k_FE/IR007_0.mat")
    assert "i" in scipy.io.loadmat(io.BytesIO(data))

    assert list_channels(data, name="12k_FE/IR007_0.mat") == ["X278_DE_time", "X278_FE_time", "X278_BA_time"]


def test_stray_variable_is_not_read():
    signal = read_signal(cwru_bytes("12k_FE/IR007_0.mat"), name="12k_FE/IR007_0.mat", channel="FE")

    assert signal.channel == "X278_FE_time"
    assert np.array_equal(signal.values, cwru_variable("12k_FE/IR007_0.mat", "X278_FE_time"))


def test_shaft_speed_read_from_file():
    signal = read_signal(cwru_bytes("12k_DE/IR007_0.mat"), name="12k_DE/IR007_0.mat", channel="DE")

    assert signal.shaft_speed_rpm == float(cwru_variable("12k_DE/IR007_0.mat", "X105RPM")[0])
    assert signal.shaft_speed_rpm == 1797.0


def test_shaft_speed_none_without_rpm_variable():
    signal = read_signal(cwru_bytes("12k_DE/B028_0.mat"), name="12k_DE/B028_0.mat", channel="DE")

    assert signal.shaft_speed_rpm is None


def test_duplicate_files_share_sha256():
    first, first_sha256 = read_signal_file(str(CWRU / "48k_DE/IR014_0.mat"), channel="DE")
    second, second_sha256 = read_signal_file(str(CWRU / "0HP/48k_Drive_End_IR014_0_174.mat"), channel="DE")

    assert first_sha256 == second_sha256
    assert first_sha256 == hashlib.sha256(cwru_bytes("48k_DE/IR014_0.mat")).hexdigest()
    assert np.array_equal(first.values, second.values)


def test_distinct_files_differ_in_sha256():
    _, first_sha256 = read_signal_file(str(CWRU / "12k_DE/IR007_0.mat"), channel="DE")
    _, second_sha256 = read_signal_file(str(CWRU / "12k_FE/IR007_0.mat"), channel="DE")

    assert first_sha256 != second_sha256


def test_offset_and_scale_are_kept():
    ball = read_signal(cwru_bytes("12k_DE/B028_0.mat"), name="12k_DE/B028_0.mat", channel="DE").values
    inner = read_signal(cwru_bytes("12k_DE/IR007_0.mat"), name="12k_DE/IR007_0.mat", channel="DE").values

    assert np.array_equal(ball, cwru_variable("12k_DE/B028_0.mat", "X048_DE_time"))
    assert np.array_equal(inner, cwru_variable("12k_DE/IR007_0.mat", "X105_DE_time"))
    assert inner.mean() != 0.0
    assert ball.std() > 4 * inner.std()


def test_values_are_1d_float64():
    signal = read_signal(cwru_bytes("12k_DE/IR007_0.mat"), name="12k_DE/IR007_0.mat", channel="DE")

    assert signal.values.ndim == 1
    assert signal.values.dtype == np.float64


def test_mat_v73_reads_back_equal():
    de = cwru_variable("12k_DE/IR007_0.mat", "X105_DE_time")[:, np.newaxis]
    fe = cwru_variable("12k_DE/IR007_0.mat", "X105_FE_time")[:, np.newaxis]
    rpm = np.array([[1797]], dtype=np.uint16)
    data = write_mat_v73({"X105_DE_time": de, "X105_FE_time": fe, "X105RPM": rpm})
    assert data[512:520] == b"\x89HDF\r\n\x1a\n"

    signal = read_signal(data, name="IR007_0_v73.mat", channel="DE")

    assert signal.channel == "X105_DE_time"
    assert np.array_equal(signal.values, de.ravel())
    assert signal.shaft_speed_rpm == 1797.0


def test_mat_v73_lists_channels():
    de = cwru_variable("12k_DE/B028_0.mat", "X048_DE_time")[:, np.newaxis]
    data = write_mat_v73({"X048_DE_time": de})

    assert list_channels(data, name="B028_0_v73.mat") == ["X048_DE_time"]


def test_truncated_mat_v73_is_unreadable():
    de = cwru_variable("12k_DE/B028_0.mat", "X048_DE_time")[:, np.newaxis]
    data = write_mat_v73({"X048_DE_time": de})

    with pytest.raises(RecordingError, match=r"could not be read as a MATLAB v7\.3 MAT-file") as raised:
        read_signal(data[: len(data) // 2], name="B028_0_v73.mat", channel=None)

    assert raised.value.reason == "unreadable"


def test_csv_round_trip():
    values = cwru_variable("12k_DE/IR007_0.mat", "X105_DE_time")
    frame = pd.DataFrame({"time": np.arange(values.size) / 12000, "X105_DE_time": values})
    data = frame.to_csv(index=False).encode()

    signal = read_signal(data, name="IR007_0.csv", channel=None)

    assert signal.channel == "X105_DE_time"
    assert np.array_equal(signal.values, values)
    assert signal.shaft_speed_rpm is None


def test_csv_time_column_is_not_a_channel():
    values = cwru_variable("12k_DE/B028_0.mat", "X048_DE_time")[:100]
    data = pd.DataFrame({"Timestamp": np.arange(100), "DE": values, "FE": values}).to_csv(index=False).encode()

    assert list_channels(data, name="B028_0.csv") == ["DE", "FE"]


def test_csv_text_column_is_not_a_channel():
    data = b"label,DE\nball,0.1\nball,0.2\n"

    with pytest.raises(RecordingError, match=r"no channel matching `label`\. Channels present \(numeric columns"):
        read_signal(data, name="B028_0.csv", channel="label")


def test_parquet_round_trip():
    de = cwru_variable("12k_DE/IR007_0.mat", "X105_DE_time")
    fe = cwru_variable("12k_DE/IR007_0.mat", "X105_FE_time")
    buffer = io.BytesIO()
    pd.DataFrame({"t": np.arange(de.size) / 12000, "DE": de, "FE": fe}).to_parquet(buffer)

    signal = read_signal(buffer.getvalue(), name="IR007_0.parquet", channel="FE")

    assert signal.channel == "FE"
    assert np.array_equal(signal.values, fe)


def test_npy_round_trip_1d():
    values = cwru_variable("12k_DE/B028_0.mat", "X048_DE_time")
    buffer = io.BytesIO()
    np.save(buffer, values)

    signal = read_signal(buffer.getvalue(), name="B028_0.npy", channel=None)

    assert signal.channel == "0"
    assert np.array_equal(signal.values, values)


def test_npy_round_trip_2d():
    de = cwru_variable("12k_DE/IR007_0.mat", "X105_DE_time")
    fe = cwru_variable("12k_DE/IR007_0.mat", "X105_FE_time")
    buffer = io.BytesIO()
    np.save(buffer, np.stack([de, fe], axis=1))
    data = buffer.getvalue()

    signal = read_signal(data, name="IR007_0.npy", channel="1")

    assert list_channels(data, name="IR007_0.npy") == ["0", "1"]
    assert np.array_equal(signal.values, fe)


def test_npy_3d_is_unreadable():
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((4, 3, 2)))

    with pytest.raises(RecordingError, match=r"contains a 3-D array of float64.*1-D or 2-D") as raised:
        read_signal(buffer.getvalue(), name="cube.npy", channel=None)

    assert raised.value.reason == "unreadable"


@pytest.mark.parametrize(
    ("name", "data", "reason", "message"),
    [
        ("B028_0.mat", b"", "empty_file", r"recording `B028_0\.mat` is empty \(0 bytes\)"),
        ("B028_0.wav", b"RIFF", "unreadable", r"unsupported suffix `\.wav`\. Supported suffixes: \.mat, \.csv"),
        ("B028_0", b"RIFF", "unreadable", r"recording `B028_0` has no suffix\. Supported suffixes"),
        ("B028_0.mat", b"time,DE\n0,0.1\n", "unreadable", r"is not a MATLAB v5 or v7\.3 MAT-file"),
        ("B028_0.csv", b"\xff\xfe\x00binary", "unreadable", r"could not be read as CSV"),
        ("B028_0.parquet", b"PAR1 not really", "unreadable", r"could not be read as Parquet"),
        ("B028_0.npy", b"\x93NUMPY\x01\x00", "unreadable", r"could not be read as a NumPy \.npy array"),
    ],
)
def test_bad_bytes_raise(name, data, reason, message):
    with pytest.raises(RecordingError, match=message) as raised:
        read_signal(data, name=name, channel=None)

    assert raised.value.reason == reason


def test_truncated_mat_is_unreadable():
    data = cwru_bytes("12k_DE/B028_0.mat")[:1000]

    with pytest.raises(RecordingError, match=r"could not be read as a MATLAB v5 MAT-file.*truncated or corrupt"):
        read_signal(data, name="12k_DE/B028_0.mat", channel="DE")


def test_supported_suffixes_are_listed_in_order():
    assert SUPPORTED_SUFFIXES == (".mat", ".csv", ".parquet", ".npy")


def test_missing_file_names_path_and_uri(tmp_path):
    uri = str(tmp_path / "12k_DE" / "B099_0.mat")

    with pytest.raises(RecordingError, match=r"recording `12k_DE/B099_0\.mat` not found at `.*B099_0\.mat`") as raised:
        read_signal_file(uri, channel="DE", name="12k_DE/B099_0.mat")

    assert raised.value.reason == "missing_file"


def test_folder_is_unreadable(tmp_path):
    with pytest.raises(RecordingError, match=r"is a folder, not a file") as raised:
        read_signal_file(str(tmp_path), channel="DE")

    assert raised.value.reason == "unreadable"


def test_read_through_fsspec_url():
    data = cwru_bytes("12k_DE/B028_0.mat")
    uri = f"memory://daqflow-test-{uuid.uuid4().hex}/12k_DE/B028_0.mat"
    filesystem = fsspec.filesystem("memory")
    filesystem.pipe(uri, data)
    try:
        signal, sha256 = read_signal_file(uri, channel="DE")
    finally:
        filesystem.rm(uri)

    assert signal.channel == "X048_DE_time"
    assert sha256 == hashlib.sha256(data).hexdigest()
