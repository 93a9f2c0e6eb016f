"""Tests of the recordings manifest parser, on the CWRU sample manifest and small variants of it."""

from __future__ import annotations

import csv
import pickle
import re
import uuid
from pathlib import Path

import fsspec
import pytest

from tasks.recordings import (
    OPTIONAL_COLUMNS,
    REASONS,
    REQUIRED_COLUMNS,
    ManifestError,
    Quarantined,
    RecordingError,
    read_manifest,
)

CWRU = Path(__file__).resolve().parent.parent / "data" / "sample" / "cwru"
SAMPLE_MANIFEST = CWRU / "recordings.csv"
HEADER = ",".join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)


def write_manifest(folder: Path, *rows: str, header: str = HEADER) -> Path:
    path = folder / "recordings.csv"
    path.write_text("\n".join((header, *rows)) + "\n", encoding="utf-8")
    return path


def test_sample_manifest_has_14_specs():
    specs, quarantined = read_manifest(str(SAMPLE_MANIFEST))

    assert len(specs) == 14
    assert quarantined == []


def test_sample_manifest_matches_csv_rows():
    with SAMPLE_MANIFEST.open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))

    specs, _ = read_manifest(str(SAMPLE_MANIFEST))

    for number, (spec, row) in enumerate(zip(specs, rows, strict=True), start=1):
        assert spec.row == number
        assert spec.path == row["path"]
        assert spec.uri == str(CWRU / row["path"])
        assert spec.device_id == row["device_id"]
        assert spec.label == row["label"]
        assert spec.sampling_rate_hz == float(row["sampling_rate_hz"])
        assert spec.channel == row["channel"]
        assert spec.recorded_at == row["recorded_at"]
        assert spec.daq_id == row["daq_id"]
        assert spec.shaft_speed_rpm == float(row["shaft_speed_rpm"])


def test_sample_manifest_uris_exist():
    specs, _ = read_manifest(str(SAMPLE_MANIFEST))

    missing = [spec.uri for spec in specs if not Path(spec.uri).is_file()]
    assert missing == []


def test_blank_optional_cells_become_none(tmp_path):
    manifest = write_manifest(tmp_path, "a.mat,dev1,normal,12000,,,,")

    specs, _ = read_manifest(str(manifest))

    assert specs[0].channel is None
    assert specs[0].recorded_at is None
    assert specs[0].daq_id is None
    assert specs[0].shaft_speed_rpm is None


def test_optional_columns_may_be_absent(tmp_path):
    manifest = write_manifest(tmp_path, "a.mat,dev1,normal,12000", header=",".join(REQUIRED_COLUMNS))

    specs, quarantined = read_manifest(str(manifest))

    assert quarantined == []
    assert specs[0].channel is None


def test_extra_columns_are_ignored(tmp_path):
    manifest = write_manifest(
        tmp_path,
        "operator A,a.mat,dev1,normal,12000,DE",
        header="notes,path,device_id,label,sampling_rate_hz,channel",
    )

    specs, quarantined = read_manifest(str(manifest))

    assert quarantined == []
    assert specs[0].path == "a.mat"
    assert specs[0].channel == "DE"


def test_cells_are_stripped(tmp_path):
    manifest = write_manifest(tmp_path, " a.mat , dev1 , normal , 12000 , DE ,,,")

    specs, _ = read_manifest(str(manifest))

    assert specs[0].path == "a.mat"
    assert specs[0].device_id == "dev1"
    assert specs[0].channel == "DE"


def test_blank_lines_are_not_rows(tmp_path):
    manifest = write_manifest(tmp_path, "a.mat,dev1,normal,12000,,,,", "", "b.mat,dev1,ball,12000,,,,")

    specs, _ = read_manifest(str(manifest))

    assert [spec.row for spec in specs] == [1, 2]
    assert [spec.path for spec in specs] == ["a.mat", "b.mat"]


def test_byte_order_mark_is_accepted(tmp_path):
    manifest = tmp_path / "recordings.csv"
    manifest.write_text(HEADER + "\na.mat,dev1,normal,12000,,,,\n", encoding="utf-8-sig")

    specs, _ = read_manifest(str(manifest))

    assert specs[0].path == "a.mat"


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("2000-01-31T15:28:20", "2000-01-31T15:28:20"),
        ("2000-01-31 15:28:20", "2000-01-31T15:28:20"),
        ("2000-01-31T15:28:20Z", "2000-01-31T15:28:20+00:00"),
        ("2000-01-31", "2000-01-31T00:00:00"),
    ],
)
def test_recorded_at_is_normalised(tmp_path, written, expected):
    manifest = write_manifest(tmp_path, f"a.mat,dev1,normal,12000,,{written},,")

    specs, _ = read_manifest(str(manifest))

    assert specs[0].recorded_at == expected


def test_relative_path_resolves_against_manifest_folder(tmp_path):
    manifest = write_manifest(tmp_path, "12k_DE/a/../B028_0.mat,dev1,ball,12000,,,,")

    specs, quarantined = read_manifest(str(manifest))

    assert quarantined == []
    assert specs[0].path == "12k_DE/a/../B028_0.mat"
    assert specs[0].uri == str(tmp_path / "12k_DE" / "B028_0.mat")


def test_absolute_path_and_url_are_kept(tmp_path):
    absolute = str(CWRU / "12k_DE" / "B028_0.mat")
    manifest = write_manifest(
        tmp_path,
        f"{absolute},dev1,ball,12000,,,,",
        "s3://bucket/12k_DE/B028_0.mat,dev1,ball,12000,,,,",
    )

    specs, _ = read_manifest(str(manifest))

    assert specs[0].uri == absolute
    assert specs[1].uri == "s3://bucket/12k_DE/B028_0.mat"


def test_url_manifest_joins_relative_paths():
    folder = f"memory://daqflow-test-{uuid.uuid4().hex}"
    filesystem = fsspec.filesystem("memory")
    filesystem.pipe(f"{folder}/recordings.csv", f"{HEADER}\n12k_DE/B028_0.mat,dev1,ball,12000,,,,\n".encode())
    try:
        specs, _ = read_manifest(f"{folder}/recordings.csv")
    finally:
        filesystem.rm(folder, recursive=True)

    assert specs[0].uri == f"{folder}/12k_DE/B028_0.mat"


@pytest.mark.parametrize("path", ["../B028_0.mat", "12k_DE/../../B028_0.mat", ".."])
def test_path_climbing_out_is_quarantined(tmp_path, path):
    manifest = write_manifest(tmp_path, f"{path},dev1,ball,12000,,,,", "ok.mat,dev1,ball,12000,,,,")

    specs, quarantined = read_manifest(str(manifest))

    assert [row.reason for row in quarantined] == ["path_outside_manifest"]
    assert quarantined[0].path == path
    assert path in quarantined[0].message
    assert [spec.path for spec in specs] == ["ok.mat"]


@pytest.mark.parametrize(
    ("row", "reason", "message"),
    [
        ("a.mat,,normal,12000,,,,", "invalid_value", r"row 1 \(`a\.mat`\) has an empty `device_id`"),
        ("a.mat,dev1,,12000,,,,", "invalid_value", r"has an empty `label`"),
        (",dev1,normal,12000,,,,", "invalid_value", r"row 1 has an empty `path`"),
        ("a.mat,dev1,normal,fast,,,,", "invalid_sampling_rate", r"sampling_rate_hz `fast`, which is not a number"),
        ("a.mat,dev1,normal,,,,,", "invalid_sampling_rate", r"sampling_rate_hz ``, which is not a number"),
        ("a.mat,dev1,normal,12000,,,,n/a", "invalid_value", r"shaft_speed_rpm `n/a`, which is not a finite number"),
        ("a.mat,dev1,normal,12000,,,,nan", "invalid_value", r"shaft_speed_rpm `nan`"),
        ("a.mat,dev1,normal,12000,,31/01/2000,,", "invalid_value", r"recorded_at `31/01/2000`, which is not ISO 8601"),
        ("a.mat,dev1,normal,12000,DE,,,1797,extra", "invalid_value", r"has 9 cells but the header has 8 columns"),
    ],
)
def test_bad_row_is_quarantined(tmp_path, row, reason, message):
    manifest = write_manifest(tmp_path, row, "ok.mat,dev1,normal,12000,,,,")

    specs, quarantined = read_manifest(str(manifest))

    assert len(quarantined) == 1
    assert quarantined[0].reason == reason
    assert re.search(message, quarantined[0].message)
    assert [spec.path for spec in specs] == ["ok.mat"]


def test_quarantined_row_keeps_device_id(tmp_path):
    manifest = write_manifest(tmp_path, "a.mat,dev1,normal,fast,,,,", "b.mat,,normal,fast,,,,")

    _, quarantined = read_manifest(str(manifest))

    assert [row.device_id for row in quarantined] == ["dev1", None]


def test_quarantined_to_dict():
    row = Quarantined(path="a.mat", device_id="dev1", reason="missing_file", message="recording `a.mat` not found.")

    assert row.to_dict() == {
        "path": "a.mat",
        "device_id": "dev1",
        "reason": "missing_file",
        "message": "recording `a.mat` not found.",
    }


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"is empty\. Write a header row with the columns path, device_id, label, sampling_rate_hz"),
        (HEADER.encode() + b"\n", r"has a header but no data rows"),
        (HEADER.encode() + b"\n\n\n", r"has a header but no data rows"),
        (
            b"path,label\na.mat,normal\n",
            r"missing the required columns device_id, sampling_rate_hz\. Its header is: path, label\. "
            r"Required columns: path, device_id, label, sampling_rate_hz",
        ),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", r"is not UTF-8 text"),
        (b"path,path,device_id,label,sampling_rate_hz\n", r"has the columns path more than once"),
    ],
)
def test_unusable_manifest_raises(tmp_path, content, message):
    manifest = tmp_path / "recordings.csv"
    manifest.write_bytes(content)

    with pytest.raises(ManifestError, match=message) as raised:
        read_manifest(str(manifest))

    assert str(manifest) in str(raised.value)


def test_missing_manifest_raises(tmp_path):
    with pytest.raises(ManifestError, match=r"manifest `.*nowhere\.csv` not found\. Check the path or URL"):
        read_manifest(str(tmp_path / "nowhere.csv"))


def test_folder_as_manifest_raises(tmp_path):
    with pytest.raises(ManifestError, match=r"is a folder"):
        read_manifest(str(tmp_path))


def test_reasons_cover_the_contract():
    assert set(REASONS) == {
        "missing_file",
        "path_outside_manifest",
        "empty_file",
        "unreadable",
        "channel_not_found",
        "invalid_sampling_rate",
        "invalid_value",
        "non_finite",
        "too_short",
        "flatline",
        "saturated",
        "duplicate",
    }


def test_recording_error_rejects_unknown_reason():
    with pytest.raises(ValueError, match=r"unknown recording error reason `broken`"):
        RecordingError("broken", "recording `a.mat` is broken.")


def test_recording_error_survives_pickle():
    error = RecordingError("too_short", "recording `a.mat` has 1 sample.")

    copy = pickle.loads(pickle.dumps(error))

    assert copy.reason == "too_short"
    assert copy.message == "recording `a.mat` has 1 sample."
    assert str(copy) == "recording `a.mat` has 1 sample."
