"""The recordings manifest: one CSV row per recording, parsed into `RecordingSpec`.

A manifest lists where each raw recording lives and what it is: the device it
came from, its fault label and its sampling rate. Problems with the whole file
raise `ManifestError`. Problems with one row quarantine that row with a reason
code from `REASONS`, and the other rows proceed.

Example::

    specs, quarantined = read_manifest("data/sample/cwru/recordings.csv")
    for row in quarantined:
        print(row.reason, row.message)

This module does not import Prefect, so the edge runtime can use it.
"""

from __future__ import annotations

import csv
import io
import math
import os
import posixpath
from dataclasses import asdict, dataclass
from datetime import datetime

import fsspec
from fsspec.core import split_protocol

REQUIRED_COLUMNS = ("path", "device_id", "label", "sampling_rate_hz")
OPTIONAL_COLUMNS = ("channel", "recorded_at", "daq_id", "shaft_speed_rpm")

REASONS: dict[str, str] = {
    "missing_file": "The recording file does not exist at the resolved path or URL.",
    "path_outside_manifest": "The relative path climbs out of the manifest's folder with `..`.",
    "empty_file": "The recording file has 0 bytes.",
    "unreadable": "The recording file is truncated, corrupt or in an unsupported format.",
    "channel_not_found": "No channel of the recording matches `channel`, or several do.",
    "invalid_sampling_rate": "sampling_rate_hz is not a number, not positive, or outside the accepted range.",
    "invalid_value": "A manifest cell is empty where a value is required, or cannot be parsed.",
    "non_finite": "The signal contains NaN or infinite samples.",
    "too_short": "The signal has fewer samples than one window needs.",
    "flatline": "Too many samples sit in long runs of one repeated value, as from a stalled sensor.",
    "saturated": "Too many samples are pinned at the signal's maximum or minimum, as from a clipped ADC.",
    "duplicate": "The file is byte-identical to a recording that was already accepted.",
}

_LOCAL_PROTOCOLS = (None, "file", "local")


class ManifestError(ValueError):
    """The whole manifest is unusable: not found, not CSV, no rows or a missing required column."""


class RecordingError(Exception):
    """One recording is unusable.

    Args:
        reason: a code from `REASONS`.
        message: a full sentence that names the recording, the value found
            and what to do.

    Raises:
        ValueError: if `reason` is not a code from `REASONS`.
    """

    def __init__(self, reason: str, message: str):
        if reason not in REASONS:
            raise ValueError(f"unknown recording error reason `{reason}`. Use one of: {', '.join(REASONS)}.")

        super().__init__(message)
        self.reason = reason
        self.message = message

    def __reduce__(self) -> tuple[type[RecordingError], tuple[str, str]]:
        # Dask and Prefect pickle exceptions, and the default reduction would
        # call __init__ with the message alone.
        return (type(self), (self.reason, self.message))


@dataclass(frozen=True)
class RecordingSpec:
    """One manifest row.

    Attributes:
        row: 1-based data row number, not counting the header.
        path: the path exactly as written in the manifest.
        uri: an absolute local path, or an fsspec URL such as ``s3://bucket/key.mat``.
        device_id: the device the recording came from.
        label: the fault label, for example ``inner_race``.
        sampling_rate_hz: samples per second; `tasks.validation.check_spec`
            checks its range.
        channel: the channel to read, or None for the only one in the file.
        recorded_at: ISO 8601 timestamp as `datetime.isoformat` writes it.
        daq_id: the acquisition unit that made the recording.
        shaft_speed_rpm: shaft speed in revolutions per minute.
    """

    row: int
    path: str
    uri: str
    device_id: str
    label: str
    sampling_rate_hz: float
    channel: str | None = None
    recorded_at: str | None = None
    daq_id: str | None = None
    shaft_speed_rpm: float | None = None


@dataclass(frozen=True)
class Quarantined:
    """A recording set aside, with its reason code and a message naming the file, the value and the fix."""

    path: str
    device_id: str | None
    reason: str
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


def read_manifest(
    manifest: str,
    *,
    storage_options: dict | None = None,
) -> tuple[list[RecordingSpec], list[Quarantined]]:
    """Parse a recordings manifest into specs and quarantined rows.

    Relative paths in the ``path`` column resolve against the manifest's
    folder. Absolute paths and URLs with a protocol are used as written. Blank
    optional cells become None and columns not in `REQUIRED_COLUMNS` or
    `OPTIONAL_COLUMNS` are ignored. Fully blank lines are skipped and not counted
    as rows.

    Args:
        manifest: local path or fsspec URL of a UTF-8 CSV file with a header row.
        storage_options: fsspec options for the manifest's filesystem, for
            example S3 credentials.

    Returns:
        The specs of the usable rows and the quarantined rows, both in file order.

    Raises:
        ManifestError: if the manifest is not found or is a folder, is not
            UTF-8 text, lacks a required column, repeats a column or has no
            data rows.
    """
    text = _read_text(manifest, storage_options=storage_options)
    rows = list(csv.reader(io.StringIO(text)))
    header = _parse_header(rows, manifest=manifest)
    records = [row for row in rows[1:] if any(cell.strip() for cell in row)]
    if not records:
        raise ManifestError(f"manifest `{manifest}` has a header but no data rows. Add one row per recording.")

    folder = _manifest_folder(manifest)
    specs: list[RecordingSpec] = []
    quarantined: list[Quarantined] = []
    for number, cells in enumerate(records, start=1):
        try:
            specs.append(_parse_row(number, header, cells, folder=folder))
        except RecordingError as error:
            quarantined.append(_quarantine_row(header, cells, error))

    return specs, quarantined


def _read_text(manifest: str, *, storage_options: dict | None) -> str:
    try:
        with fsspec.open(manifest, "rb", **(storage_options or {})) as file:
            data = file.read()
    except FileNotFoundError as error:
        raise ManifestError(f"manifest `{manifest}` not found. Check the path or URL.") from error
    except IsADirectoryError as error:
        raise ManifestError(f"manifest `{manifest}` is a folder. Pass the path of the CSV file inside it.") from error

    try:
        # utf-8-sig drops the byte order mark that spreadsheet programs write.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ManifestError(
            f"manifest `{manifest}` is not UTF-8 text (invalid byte at offset {error.start}). "
            "Save it as a UTF-8 CSV file."
        ) from error


def _parse_header(rows: list[list[str]], *, manifest: str) -> list[str]:
    if not rows:
        raise ManifestError(
            f"manifest `{manifest}` is empty. Write a header row with the columns {', '.join(REQUIRED_COLUMNS)}."
        )

    header = [name.strip() for name in rows[0]]
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise ManifestError(
            f"manifest `{manifest}` is missing the required columns {', '.join(missing)}. "
            f"Its header is: {', '.join(header)}. Required columns: {', '.join(REQUIRED_COLUMNS)}."
        )

    repeated = sorted({name for name in header if name and header.count(name) > 1})
    if repeated:
        raise ManifestError(
            f"manifest `{manifest}` has the columns {', '.join(repeated)} more than once. "
            "Keep one column of each name."
        )

    return header


def _manifest_folder(manifest: str) -> str:
    """Return the manifest's folder as an absolute local path or a URL ending in ``/``."""
    protocol, location = split_protocol(manifest)
    if protocol in _LOCAL_PROTOCOLS:
        return os.path.dirname(os.path.abspath(location))

    return f"{protocol}://{posixpath.dirname(location)}/"


def _parse_row(number: int, header: list[str], cells: list[str], *, folder: str) -> RecordingSpec:
    if len(cells) > len(header):
        raise RecordingError(
            "invalid_value",
            f"manifest row {number} has {len(cells)} cells but the header has {len(header)} columns. "
            "Quote cells that contain commas, or drop the row.",
        )

    values = _row_values(header, cells)
    path = _required(values, "path", number=number)
    return RecordingSpec(
        row=number,
        path=path,
        uri=_resolve_path(path, folder=folder, number=number),
        device_id=_required(values, "device_id", number=number),
        label=_required(values, "label", number=number),
        sampling_rate_hz=_parse_sampling_rate(values, number=number),
        channel=values.get("channel"),
        recorded_at=_parse_recorded_at(values, number=number),
        daq_id=values.get("daq_id"),
        shaft_speed_rpm=_parse_shaft_speed(values, number=number),
    )


def _row_values(header: list[str], cells: list[str]) -> dict[str, str]:
    """Map the known columns to their stripped cells, leaving blank and missing cells out."""
    known = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)
    values = {}
    for name, cell in zip(header, cells):
        if name in known and cell.strip():
            values[name] = cell.strip()
    return values


def _required(values: dict[str, str], column: str, *, number: int) -> str:
    if column not in values:
        where = f"manifest row {number} (`{values['path']}`)" if "path" in values else f"manifest row {number}"
        raise RecordingError("invalid_value", f"{where} has an empty `{column}`. Fill it in or drop the row.")
    return values[column]


def _resolve_path(path: str, *, folder: str, number: int) -> str:
    protocol, _ = split_protocol(path)
    if protocol is not None or os.path.isabs(path):
        return path

    relative = posixpath.normpath(path)
    if relative == ".." or relative.startswith("../"):
        raise RecordingError(
            "path_outside_manifest",
            f"manifest row {number} path `{path}` climbs out of the manifest's folder. "
            "Move the recording under that folder, or write its absolute path or URL.",
        )

    if "://" in folder:
        return folder + relative
    return os.path.join(folder, relative)


def _parse_sampling_rate(values: dict[str, str], *, number: int) -> float:
    text = values.get("sampling_rate_hz", "")
    try:
        return float(text)
    except ValueError:
        raise RecordingError(
            "invalid_sampling_rate",
            f"manifest row {number} (`{values['path']}`) has sampling_rate_hz `{text}`, which is not a number. "
            "Write the rate in samples per second, for example 12000.",
        ) from None


def _parse_recorded_at(values: dict[str, str], *, number: int) -> str | None:
    text = values.get("recorded_at")
    if text is None:
        return None

    try:
        return datetime.fromisoformat(text).isoformat()
    except ValueError:
        raise RecordingError(
            "invalid_value",
            f"manifest row {number} (`{values['path']}`) has recorded_at `{text}`, which is not ISO 8601. "
            "Write it as 2000-01-31T15:28:20, or leave the cell blank.",
        ) from None


def _parse_shaft_speed(values: dict[str, str], *, number: int) -> float | None:
    text = values.get("shaft_speed_rpm")
    if text is None:
        return None

    try:
        speed = float(text)
    except ValueError:
        speed = math.nan
    if not math.isfinite(speed):
        raise RecordingError(
            "invalid_value",
            f"manifest row {number} (`{values['path']}`) has shaft_speed_rpm `{text}`, which is not a finite number. "
            "Write the speed in revolutions per minute, for example 1797, or leave the cell blank.",
        )
    return speed


def _quarantine_row(header: list[str], cells: list[str], error: RecordingError) -> Quarantined:
    values = _row_values(header, cells)
    return Quarantined(
        path=values.get("path", ""),
        device_id=values.get("device_id"),
        reason=error.reason,
        message=error.message,
    )
