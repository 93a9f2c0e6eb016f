"""Checks that a recording is fit for feature extraction.

`load_recording` runs them all: `check_spec` on the manifest row, then the
reader, then `check_signal` on the samples. Each check raises
`tasks.recordings.RecordingError` with a reason code from
`tasks.recordings.REASONS` and a message that names the recording's manifest
path, the value found and what to do. The checks never change the samples.

This module does not import Prefect, so the edge runtime can use it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from tasks.readers import Signal, read_signal_file
from tasks.recordings import RecordingError, RecordingSpec


@dataclass(frozen=True)
class ValidationConfig:
    """Limits that a recording must meet.

    Attributes:
        min_sampling_rate_hz: lowest accepted sampling rate, in samples per second.
        max_sampling_rate_hz: highest accepted sampling rate, in samples per second.
        flat_run_samples: length from which a run of identical consecutive
            samples counts as flat-lined.
        max_flat_share: maximum share of samples, from 0 to 1, in flat-lined runs.
        max_saturated_share: maximum share of samples, from 0 to 1, pinned at
            the signal's maximum or minimum in runs of 2 or more.

    Raises:
        ValueError: if a limit is out of its range.
    """

    min_sampling_rate_hz: float = 100.0
    max_sampling_rate_hz: float = 1_000_000.0
    flat_run_samples: int = 64
    max_flat_share: float = 0.01
    max_saturated_share: float = 0.001

    def __post_init__(self) -> None:
        if not 0 < self.min_sampling_rate_hz <= self.max_sampling_rate_hz:
            raise ValueError(
                f"invalid sampling rate range {self.min_sampling_rate_hz} to {self.max_sampling_rate_hz} Hz. "
                "Set 0 < min_sampling_rate_hz <= max_sampling_rate_hz."
            )
        if self.flat_run_samples < 2:
            raise ValueError(f"invalid flat_run_samples {self.flat_run_samples}. Set it to 2 or more.")
        for name in ("max_flat_share", "max_saturated_share"):
            share = getattr(self, name)
            if not 0 <= share <= 1:
                raise ValueError(f"invalid {name} {share}. Set a share from 0 to 1.")

    def to_dict(self) -> dict:
        return asdict(self)


def check_spec(spec: RecordingSpec, *, config: ValidationConfig) -> None:
    """Raise `RecordingError` ``invalid_sampling_rate`` unless the manifest's rate is usable.

    The rate must be a positive finite number within the configured range.
    """
    rate = spec.sampling_rate_hz
    if not math.isfinite(rate) or rate <= 0:
        raise RecordingError(
            "invalid_sampling_rate",
            f"recording `{spec.path}` has sampling_rate_hz {rate}, but it must be a positive number. "
            "Write the rate in samples per second in the manifest, for example 12000, or drop the row.",
        )

    if not config.min_sampling_rate_hz <= rate <= config.max_sampling_rate_hz:
        raise RecordingError(
            "invalid_sampling_rate",
            f"recording `{spec.path}` has sampling_rate_hz {rate:g}, outside the accepted range "
            f"{config.min_sampling_rate_hz:g} to {config.max_sampling_rate_hz:g} Hz. "
            "Fix the rate in the manifest, widen the range in ValidationConfig, or drop the row.",
        )


def check_signal(signal: Signal, spec: RecordingSpec, *, min_samples: int, config: ValidationConfig) -> None:
    """Raise `RecordingError` at the first check that the samples fail.

    The checks run in this order: ``non_finite`` (any NaN or infinity),
    ``too_short`` (fewer than `min_samples`), ``flatline`` and ``saturated``.
    Cost: a few passes over the samples, O(n) time and memory.

    Args:
        signal: the samples read from the recording.
        spec: the recording's manifest row, named in messages.
        min_samples: the samples one window needs at this recording's rate.
        config: the flat-line and saturation limits.

    Raises:
        ValueError: if `min_samples` is below 1.
    """
    if min_samples < 1:
        raise ValueError(f"invalid min_samples {min_samples}. Pass the samples one window needs, at least 1.")

    _check_finite(signal, spec)
    _check_length(signal, spec, min_samples=min_samples)
    _check_flatline(signal, spec, config=config)
    _check_saturation(signal, spec, config=config)


def load_recording(
    spec: RecordingSpec,
    *,
    min_samples: int,
    config: ValidationConfig,
    storage_options: dict | None = None,
) -> tuple[Signal, str]:
    """Check a manifest row, read its channel and check the samples.

    Args:
        spec: the recording's manifest row.
        min_samples: the samples one window needs at this recording's rate.
        config: the limits the recording must meet.
        storage_options: fsspec options for the recording's filesystem.

    Returns:
        The signal and the hex SHA-256 digest of the file's bytes.

    Raises:
        RecordingError: with any reason code of the checks and the reader.
    """
    check_spec(spec, config=config)
    signal, sha256 = read_signal_file(
        spec.uri,
        channel=spec.channel,
        storage_options=storage_options,
        name=spec.path,
    )
    check_signal(signal, spec, min_samples=min_samples, config=config)
    return signal, sha256


def _describe(signal: Signal, spec: RecordingSpec) -> str:
    return f"recording `{spec.path}` channel `{signal.channel}`"


def _check_finite(signal: Signal, spec: RecordingSpec) -> None:
    bad = np.flatnonzero(~np.isfinite(signal.values))
    if bad.size:
        raise RecordingError(
            "non_finite",
            f"{_describe(signal, spec)} has {bad.size} NaN or infinite samples, the first at index {bad[0]} "
            f"(value {signal.values[bad[0]]}). Re-export the recording without gaps, or drop the row.",
        )


def _check_length(signal: Signal, spec: RecordingSpec, *, min_samples: int) -> None:
    count = signal.values.size
    if count < min_samples:
        noun = "sample" if count == 1 else "samples"
        raise RecordingError(
            "too_short",
            f"{_describe(signal, spec)} has {count} {noun}, but one window at {spec.sampling_rate_hz:g} Hz "
            f"needs {min_samples}. Record for longer, shorten the window, or drop the row.",
        )


def _check_flatline(signal: Signal, spec: RecordingSpec, *, config: ValidationConfig) -> None:
    starts, lengths = _equal_runs(signal.values)
    flat = lengths >= config.flat_run_samples
    share = lengths[flat].sum() / signal.values.size
    if share > config.max_flat_share:
        longest = int(np.argmax(lengths))
        raise RecordingError(
            "flatline",
            f"{_describe(signal, spec)} has {share:.2%} of its samples in runs of {config.flat_run_samples} "
            f"or more identical values (allowed: {config.max_flat_share:.2%}). The longest run is "
            f"{lengths[longest]} samples of {signal.values[starts[longest]]} from index {starts[longest]}. "
            "Check the sensor and the DAQ, or drop the row.",
        )


def _check_saturation(signal: Signal, spec: RecordingSpec, *, config: ValidationConfig) -> None:
    # Runs of 2 or more keep the signal's own single peak from counting.
    # NOTE: impulsive signals often cross a rail for one sample only, and those
    # samples are not counted. Clipping CWRU 12k_DE/IR007_0.mat DE at half its
    # peak puts 1.6% of samples on the rails but only 0.13% in runs.
    values = signal.values
    starts, lengths = _equal_runs(values)
    lowest, highest = values.min(), values.max()
    run_values = values[starts]
    pinned = ((run_values == lowest) | (run_values == highest)) & (lengths >= 2)
    share = lengths[pinned].sum() / values.size
    if share > config.max_saturated_share:
        raise RecordingError(
            "saturated",
            f"{_describe(signal, spec)} has {share:.2%} of its samples pinned at its minimum {lowest} or "
            f"maximum {highest} in runs of 2 or more (allowed: {config.max_saturated_share:.2%}), "
            "which points to a clipped ADC. Widen the DAQ's input range or lower its gain, or drop the row.",
        )


def _equal_runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the start index and length of each run of identical consecutive values."""
    boundaries = np.flatnonzero(values[1:] != values[:-1]) + 1
    starts = np.concatenate(([0], boundaries))
    lengths = np.diff(np.concatenate((starts, [values.size])))
    return starts, lengths
