"""Derive a fleet of devices from real source recordings, for tests and demos.

daqflow's reference case is one DAQ feeding many devices, with one model per device.
There is no plant data for that case, so `derive_fleet` builds such a fleet from a
manifest of real recordings (the CWRU sample in ``data/sample/cwru``). Every derived
device gets real recorded segments of each label its source channel has, seen through
the device's own sensor gain, white noise level and DC offset, so that models trained
per device differ.

The output is an ordinary recordings manifest (``recordings.csv``) with one 1-D float64
``.npy`` file per recording, plus ``fleet-provenance.json``, which records the source of
every segment and the sensor parameters of every device.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from tasks.readers import read_signal_file
from tasks.recordings import RecordingSpec, read_manifest
from tasks.store import Store

logger = logging.getLogger(__name__)

MAX_DEVICES = 200
GAIN_RANGE = (0.5, 2.0)
"""Sensor gain, a factor applied to the source signal."""
NOISE_RANGE = (0.0, 0.1)
"""Standard deviation of the added white noise, as a fraction of the segment's std."""
OFFSET_RANGE = (-0.2, 0.2)
"""DC offset, in the unit of the source signal (g for CWRU)."""

# A fixed start keeps the manifest byte-identical between runs with the same seed.
FLEET_START = datetime(2024, 1, 1)
MANIFEST_NAME = "recordings.csv"
PROVENANCE_NAME = "fleet-provenance.json"
MANIFEST_COLUMNS = (
    "path",
    "device_id",
    "label",
    "sampling_rate_hz",
    "channel",
    "recorded_at",
    "daq_id",
    "shaft_speed_rpm",
)


@dataclass(frozen=True)
class SourceRecording:
    """One row of the source manifest, with its channel loaded."""

    path: str
    sampling_rate_hz: float
    shaft_speed_rpm: float | None
    values: np.ndarray
    sha256: str


@dataclass(frozen=True)
class SourceChannel:
    """The recordings of one source device and channel, by label in manifest order."""

    device_id: str
    channel: str | None
    recordings: dict[str, list[SourceRecording]]


@dataclass(frozen=True)
class Segment:
    """A stretch of a source recording: `length` samples from sample `offset` on."""

    recording: SourceRecording
    offset: int
    length: int

    @property
    def values(self) -> np.ndarray:
        return self.recording.values[self.offset : self.offset + self.length]


@dataclass(frozen=True)
class Sensor:
    """The measurement chain of one derived device."""

    gain: float
    noise_std_fraction: float
    dc_offset: float


@dataclass(frozen=True)
class FleetOptions:
    """The validated options of one `derive_fleet` run."""

    n_devices: int
    seed: int
    seconds_per_recording: float
    recordings_per_label: int
    daq_id: str

    def __post_init__(self) -> None:
        _check_n_devices(self.n_devices)
        _check_seed(self.seed)
        _check_seconds(self.seconds_per_recording)
        _check_recordings_per_label(self.recordings_per_label)
        _check_daq_id(self.daq_id)

    def device_id(self, index: int) -> str:
        """Return the id of device `index`, zero-padded to the width of `n_devices`."""
        return f"dev-{index + 1:0{len(str(self.n_devices))}d}"

    def recorded_at(self, index: int, sequence: int) -> datetime:
        """Return the start time of recording `sequence` of device `index`.

        The DAQ records the devices in turn, one slot of whole minutes per recording,
        so every recording of the fleet gets its own start time.
        """
        slot = timedelta(minutes=math.ceil(self.seconds_per_recording / 60))
        return FLEET_START + (sequence * self.n_devices + index) * slot


def derive_fleet(
    manifest: str | Path,
    *,
    n_devices: int,
    out_dir: str | Path,
    seed: int = 0,
    seconds_per_recording: float = 2.0,
    recordings_per_label: int = 2,
    daq_id: str = "daq-01",
) -> Path:
    """Write a fleet of `n_devices` devices derived from the recordings in `manifest`.

    Device ``i`` (0-based) takes the source channel ``i % n`` of the ``n`` source
    channels (device id and channel pairs, in manifest order). For each label of that
    channel it gets `recordings_per_label` non-overlapping segments of
    `seconds_per_recording` seconds, cut at random offsets and kept at their source
    sampling rate. Each segment is scaled by the device's gain, then gets white noise and
    a DC offset. ``numpy.random.default_rng(seed + i)`` draws the sensor first, then the
    segments and the noise, so the same seed gives byte-identical files.

    Manifest rows that repeat a file (by sha256) and channel already used are skipped.
    Source recordings shorter than one segment are not used.

    The files are ``<out_dir>/recordings/<device_id>/<label>-<k>.npy`` (k from 1),
    ``<out_dir>/fleet-provenance.json`` and ``<out_dir>/recordings.csv``. Every file is
    written under a temporary name and renamed, and the manifest is written last.
    Files of an earlier, larger fleet in `out_dir` stay on disk but are not in the
    new manifest.

    Cost: every source recording is held in memory, and the fleet's files are written
    once, about 2.7 MB per device for the CWRU sample at the defaults.

    Args:
        manifest: local path of the source recordings manifest. Relative paths in it
            are resolved against its folder.
        n_devices: number of devices to derive, from 1 to 200.
        out_dir: folder to write the fleet to. It is created if missing.
        seed: non-negative base seed.
        seconds_per_recording: length of each derived recording in seconds.
        recordings_per_label: number of recordings per device and label.
        daq_id: value of the manifest's ``daq_id`` column.

    Returns:
        The path of the written ``recordings.csv``.

    Raises:
        ValueError: an option is out of range, the manifest is missing or has an
            invalid row, a source recording has non-finite values, or the recordings
            of a label are too short for the requested segments.
        RecordingError: a source recording is missing, unreadable or lacks its
            channel.

    Example::

        manifest = derive_fleet("data/sample/cwru/recordings.csv", n_devices=27, out_dir="fleet")
    """
    options = FleetOptions(
        n_devices=n_devices,
        seed=seed,
        seconds_per_recording=seconds_per_recording,
        recordings_per_label=recordings_per_label,
        daq_id=daq_id,
    )
    sources = load_source_channels(manifest)
    _log_unusable_recordings(sources, seconds=seconds_per_recording)

    store = Store("file", str(Path(out_dir).resolve()))
    rows: list[list[str]] = []
    devices: list[dict[str, Any]] = []
    for index in range(n_devices):
        source = sources[index % len(sources)]
        device_rows, device = _write_device(store, index, source=source, options=options)
        rows.extend(device_rows)
        devices.append(device)

    provenance = {
        "source_manifest": str(Path(manifest).resolve()),
        **asdict(options),
        "devices": devices,
    }
    store.write_json(PROVENANCE_NAME, provenance)
    store.write_text(MANIFEST_NAME, _manifest_csv(rows))
    logger.info(
        "Derived a fleet of %d devices (%d recordings) from %s into %s",
        n_devices,
        len(rows),
        manifest,
        store.path(MANIFEST_NAME),
    )
    return Path(store.path(MANIFEST_NAME))


def _write_device(
    store: Store, index: int, *, source: SourceChannel, options: FleetOptions
) -> tuple[list[list[str]], dict[str, Any]]:
    """Derive and write the recordings of device `index`.

    Returns:
        The device's manifest rows and its provenance entry.
    """
    device_id = options.device_id(index)
    rng = np.random.default_rng(options.seed + index)
    sensor = _draw_sensor(rng)
    segments = _cut_device_segments(
        rng, source, count=options.recordings_per_label, seconds=options.seconds_per_recording
    )

    rows: list[list[str]] = []
    files: list[dict[str, Any]] = []
    for sequence, (label, k, segment) in enumerate(segments):
        key = f"recordings/{device_id}/{label}-{k}.npy"
        store.write_bytes(key, _npy_bytes(_apply_sensor(rng, segment.values, sensor)))
        recorded_at = options.recorded_at(index, sequence)
        rows.append(
            _manifest_row(key, device_id, label, segment, recorded_at=recorded_at, daq_id=options.daq_id)
        )
        files.append(_file_provenance(key, label, segment))

    return rows, _device_provenance(device_id, source, sensor, rng_seed=options.seed + index, files=files)


def load_source_channels(manifest: str | Path) -> list[SourceChannel]:
    """Read the source manifest and load every recording it lists.

    Rows whose file (by sha256) and channel were already loaded are skipped, because a
    byte-identical copy under another name would let segments of one device overlap.

    Args:
        manifest: local path of the recordings manifest.

    Returns:
        One `SourceChannel` per source device id and channel, in manifest order.

    Raises:
        ValueError: the manifest is missing or has an invalid row, or a recording has
            non-finite values. The message names the row or recording and the value.
        RecordingError: a recording is missing, unreadable or lacks its channel.
    """
    specs = _read_source_specs(manifest)

    groups: dict[tuple[str, str | None], dict[str, list[SourceRecording]]] = {}
    used: set[tuple[str, str | None]] = set()
    skipped: list[str] = []
    for spec in specs:
        _check_source_spec(spec, manifest=manifest)
        values, sha256 = _read_source_signal(spec)
        if (sha256, spec.channel) in used:
            skipped.append(spec.path)
            continue

        used.add((sha256, spec.channel))
        recording = SourceRecording(
            path=spec.path,
            sampling_rate_hz=spec.sampling_rate_hz,
            shaft_speed_rpm=spec.shaft_speed_rpm,
            values=values,
            sha256=sha256,
        )
        groups.setdefault((spec.device_id, spec.channel), {}).setdefault(spec.label, []).append(recording)

    if skipped:
        logger.info(
            "Skipped %d manifest rows that repeat a file and channel already used: %s",
            len(skipped),
            ", ".join(skipped),
        )
    return [SourceChannel(device_id, channel, labels) for (device_id, channel), labels in groups.items()]


def _check_n_devices(n_devices: int) -> None:
    if not _is_integer(n_devices) or not 1 <= n_devices <= MAX_DEVICES:
        raise ValueError(
            f"n_devices must be an integer from 1 to {MAX_DEVICES}, got {n_devices!r}. "
            "Pass a device count in that range."
        )


def _check_seconds(seconds_per_recording: float) -> None:
    is_number = isinstance(seconds_per_recording, (int, float)) and not isinstance(seconds_per_recording, bool)
    if not (is_number and math.isfinite(seconds_per_recording) and seconds_per_recording > 0):
        raise ValueError(
            "seconds_per_recording must be a positive, finite number of seconds, "
            f"got {seconds_per_recording!r}. Pass the length of each derived recording, for example 2.0."
        )


def _check_recordings_per_label(recordings_per_label: int) -> None:
    if not _is_integer(recordings_per_label) or recordings_per_label < 1:
        raise ValueError(
            f"recordings_per_label must be a positive integer, got {recordings_per_label!r}. "
            "Pass how many recordings each device gets per label, for example 2."
        )


def _check_daq_id(daq_id: str) -> None:
    if not isinstance(daq_id, str) or not daq_id.strip():
        raise ValueError(
            f"daq_id must be a non-empty string, got {daq_id!r}. Pass the DAQ's id, for example daq-01."
        )


def _check_seed(seed: int) -> None:
    if not _is_integer(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}. Pass 0 or a larger integer.")


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read_source_specs(manifest: str | Path) -> list[RecordingSpec]:
    if not Path(manifest).is_file():
        raise ValueError(
            f"source manifest `{manifest}` not found. "
            "Pass the path of a recordings CSV, such as data/sample/cwru/recordings.csv."
        )

    specs, quarantined = read_manifest(str(manifest))
    if quarantined:
        messages = " ".join(row.message for row in quarantined)
        raise ValueError(
            f"source manifest `{manifest}` has {len(quarantined)} invalid rows, "
            f"and a fleet needs every source row: {messages}"
        )
    return specs


def _check_source_spec(spec: RecordingSpec, *, manifest: str | Path) -> None:
    where = f"row {spec.row} (`{spec.path}`) of source manifest `{manifest}`"

    # The label becomes part of a file name, so it must not contain a path separator.
    allowed = all(char.isalnum() or char in "_-." for char in spec.label)
    if not allowed or spec.label.startswith("."):
        raise ValueError(
            f"{where} has the label {spec.label!r}, which is not usable as a file name. "
            "Use letters, digits, '_', '-' and '.', not starting with '.'."
        )

    if not (math.isfinite(spec.sampling_rate_hz) and spec.sampling_rate_hz > 0):
        raise ValueError(
            f"{where} has the invalid sampling_rate_hz {spec.sampling_rate_hz!r}. "
            "Set the recording's rate in Hz, for example 12000."
        )


def _read_source_signal(spec: RecordingSpec) -> tuple[np.ndarray, str]:
    """Read the channel of a source recording as a finite 1-D array, with the file's sha256."""
    signal, sha256 = read_signal_file(spec.uri, channel=spec.channel, name=spec.path)
    _check_finite(signal.values, spec=spec)
    return signal.values, sha256


def _check_finite(values: np.ndarray, *, spec: RecordingSpec) -> None:
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise ValueError(
            f"recording `{spec.path}` channel `{spec.channel}` has {bad.size} non-finite values, "
            f"the first at sample {bad[0]}. Drop the row or repair the file."
        )


def _segment_length(recording: SourceRecording, seconds: float) -> int:
    return max(1, round(seconds * recording.sampling_rate_hz))


def _log_unusable_recordings(sources: list[SourceChannel], *, seconds: float) -> None:
    for source in sources:
        for recordings in source.recordings.values():
            for recording in recordings:
                if len(recording.values) < _segment_length(recording, seconds):
                    logger.info(
                        "Source recording %s (%s) is %.2f s long, shorter than one %g s segment, so it is not used",
                        recording.path,
                        source.channel,
                        len(recording.values) / recording.sampling_rate_hz,
                        seconds,
                    )


def _draw_sensor(rng: np.random.Generator) -> Sensor:
    return Sensor(
        gain=float(rng.uniform(*GAIN_RANGE)),
        noise_std_fraction=float(rng.uniform(*NOISE_RANGE)),
        dc_offset=float(rng.uniform(*OFFSET_RANGE)),
    )


def _cut_device_segments(
    rng: np.random.Generator, source: SourceChannel, *, count: int, seconds: float
) -> list[tuple[str, int, Segment]]:
    """Cut `count` segments per label and order them as (label, k, segment).

    The order is k first, then label, so the recording times of the labels interleave
    and a split of one device's recordings by time has every label on both sides.
    """
    by_label = {
        label: _cut_label_segments(
            rng, recordings, count=count, seconds=seconds, label=label, source=source
        )
        for label, recordings in source.recordings.items()
    }
    return [(label, k + 1, by_label[label][k]) for k in range(count) for label in by_label]


def _cut_label_segments(
    rng: np.random.Generator,
    recordings: list[SourceRecording],
    *,
    count: int,
    seconds: float,
    label: str,
    source: SourceChannel,
) -> list[Segment]:
    """Cut `count` non-overlapping segments of one label from one source recording.

    A device is one machine, so all its recordings of a label come from the same
    physical fault: one random recording of the label with room for all segments.
    Different devices draw different recordings, so the fleet mixes fault sizes.
    Only the segments of one device are kept apart: different devices may reuse
    the same source stretch, with their own gain, noise and offset on it.
    """
    lengths = [_segment_length(recording, seconds) for recording in recordings]
    capacities = [len(recording.values) // length for recording, length in zip(recordings, lengths)]
    roomy = [i for i, capacity in enumerate(capacities) if capacity >= count]
    if not roomy:
        raise ValueError(
            _too_short_message(
                recordings, capacities, count=count, seconds=seconds, label=label, source=source
            )
        )

    chosen = int(rng.choice(roomy))
    segments = _place_segments(rng, recordings[chosen], length=lengths[chosen], count=count)
    return [segments[i] for i in rng.permutation(len(segments))]


def _place_segments(
    rng: np.random.Generator, recording: SourceRecording, *, length: int, count: int
) -> list[Segment]:
    """Place `count` segments at uniformly random, non-overlapping offsets.

    Drawing `count` sorted starts in the slack (the samples left over by the segments)
    and shifting the j-th by j segment lengths keeps the segments apart.
    """
    slack = len(recording.values) - count * length
    starts = np.sort(rng.integers(0, slack, size=count, endpoint=True))
    return [Segment(recording, int(start) + j * length, length) for j, start in enumerate(starts)]


def _too_short_message(
    recordings: list[SourceRecording],
    capacities: list[int],
    *,
    count: int,
    seconds: float,
    label: str,
    source: SourceChannel,
) -> str:
    details = ", ".join(
        f"`{recording.path}` ({len(recording.values) / recording.sampling_rate_hz:.2f} s, "
        f"room for {capacity})"
        for recording, capacity in zip(recordings, capacities)
    )
    return (
        f"the {label} recordings of source device `{source.device_id}` channel `{source.channel}` "
        f"are too short for {count} non-overlapping segments of {seconds:g} s: {details}. "
        "Lower seconds_per_recording or recordings_per_label, "
        "or add longer recordings of this label to the manifest."
    )


def _apply_sensor(rng: np.random.Generator, values: np.ndarray, sensor: Sensor) -> np.ndarray:
    scaled = sensor.gain * values
    noise = rng.normal(0.0, sensor.noise_std_fraction * float(scaled.std()), size=scaled.size)
    return scaled + noise + sensor.dc_offset


def _npy_bytes(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, values, allow_pickle=False)
    return buffer.getvalue()


def _format_number(value: float | None) -> str:
    """Format a manifest number as the sample manifest writes it: 48000, not 48000.0."""
    if value is None:
        return ""
    return str(int(value)) if value.is_integer() else repr(value)


def _manifest_row(
    key: str, device_id: str, label: str, segment: Segment, *, recorded_at: datetime, daq_id: str
) -> list[str]:
    return [
        key,
        device_id,
        label,
        _format_number(segment.recording.sampling_rate_hz),
        "",
        recorded_at.isoformat(),
        daq_id,
        _format_number(segment.recording.shaft_speed_rpm),
    ]


def _manifest_csv(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    writer.writerows(rows)
    return buffer.getvalue()


def _file_provenance(key: str, label: str, segment: Segment) -> dict[str, Any]:
    return {
        "path": key,
        "label": label,
        "sampling_rate_hz": segment.recording.sampling_rate_hz,
        "source_path": segment.recording.path,
        "source_sha256": segment.recording.sha256,
        "source_offset_samples": segment.offset,
        "length_samples": segment.length,
    }


def _device_provenance(
    device_id: str,
    source: SourceChannel,
    sensor: Sensor,
    *,
    rng_seed: int,
    files: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "device_id": device_id,
        "source_device_id": source.device_id,
        "channel": source.channel,
        "rng_seed": rng_seed,
        "gain": sensor.gain,
        "noise_std_fraction": sensor.noise_std_fraction,
        "dc_offset": sensor.dc_offset,
        "files": files,
    }
