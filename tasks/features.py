"""Signal conditioning, windowing and per-window features of vibration recordings.

The dataset build runs this module inside Dask workers and the edge box runs it
on raw recordings, so it imports only numpy, scipy and the standard library, is
deterministic, and works on all windows of a recording at once.

The pipeline for one channel of one recording:

    >>> import numpy as np
    >>> config = FeatureConfig(bearing=CWRU_DRIVE_END_BEARING)
    >>> values = np.random.default_rng(0).normal(size=48_000)
    >>> signal = condition(values, 48_000.0, config)
    >>> windows = frame(signal, config.window_length, config.hop_length)
    >>> features = extract_features(windows, config, shaft_speed_rpm=1797.0)
    >>> features.shape == (len(windows), len(feature_names(config)))
    True
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import scipy.fft
import scipy.signal

FEATURE_CODE_VERSION = "1"
"""Version of the feature math. Bump it when a feature's definition changes,
because it is part of `FeatureConfig.config_hash`."""

TIME_DOMAIN_FEATURES = (
    "rms",
    "peak",
    "peak_to_peak",
    "crest_factor",
    "kurtosis",
    "skewness",
    "shape_factor",
    "impulse_factor",
    "std",
)

DEFECTS = ("bpfo", "bpfi", "bsf", "ftf")
"""Bearing defect frequencies: ball pass outer race, ball pass inner race,
ball spin and fundamental train (cage) frequency."""

DEFECT_TOLERANCE = 0.02
"""Relative half-width of the envelope spectrum search around a defect frequency.
It absorbs slip and the difference between nominal and measured shaft speed."""

# sosfiltfilt pads each end of a window with 27 samples for the order-4
# band-pass (scipy 1.17) and rejects windows that are not longer than that.
# 64 is a floor only: so short a window resolves the envelope spectrum poorly.
_MIN_WINDOW_LENGTH = 64

# butter() requires band edges strictly below Nyquist, and 5 % keeps a margin.
_MAX_BAND_EDGE_FRACTION = 0.95

_ENVELOPE_FILTER_ORDER = 4

# Fraction.limit_denominator(1000) cannot represent every rate ratio exactly.
# The relative error of the ratio shifts every frequency feature by as much.
_MAX_RESAMPLING_RATIO_ERROR = 1e-3


@dataclass(frozen=True)
class BearingGeometry:
    """Rolling-element bearing dimensions that set its defect frequencies.

    Args:
        n_balls: number of rolling elements.
        ball_diameter: rolling-element diameter, in the same unit as
            `pitch_diameter`.
        pitch_diameter: diameter of the circle through the ball centres.
        contact_angle_deg: contact angle in degrees, 0 for deep-groove bearings.
    """

    n_balls: int
    ball_diameter: float
    pitch_diameter: float
    contact_angle_deg: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_balls", _as_int("n_balls", self.n_balls))
        for name in ("ball_diameter", "pitch_diameter", "contact_angle_deg"):
            object.__setattr__(self, name, _as_float(name, getattr(self, name)))

        if self.n_balls < 1:
            raise ValueError(f"n_balls must be at least 1, got {self.n_balls}.")
        if not 0.0 < self.ball_diameter < self.pitch_diameter:
            raise ValueError(
                f"ball_diameter ({self.ball_diameter}) must be positive and smaller than "
                f"pitch_diameter ({self.pitch_diameter}). Check the bearing data sheet."
            )
        if not 0.0 <= self.contact_angle_deg < 90.0:
            raise ValueError(
                f"contact_angle_deg must be in [0, 90), got {self.contact_angle_deg}."
            )

    def defect_orders(self) -> dict[str, float]:
        """Compute the defect frequencies as multiples of the shaft frequency.

        Uses the kinematic formulas for a stationary outer race and rolling
        without slip. Real bearings slip a little, which `DEFECT_TOLERANCE`
        allows for.

        Returns:
            ``{"bpfo", "bpfi", "bsf", "ftf"}`` orders. BSF is the ball spin
            frequency, not twice it.
        """
        ratio = self.ball_diameter / self.pitch_diameter * math.cos(math.radians(self.contact_angle_deg))
        return {
            "bpfo": self.n_balls / 2.0 * (1.0 - ratio),
            "bpfi": self.n_balls / 2.0 * (1.0 + ratio),
            "bsf": self.pitch_diameter / (2.0 * self.ball_diameter) * (1.0 - ratio**2),
            "ftf": 0.5 * (1.0 - ratio),
        }


@dataclass(frozen=True)
class FeatureConfig:
    """Settings of conditioning, windowing and feature extraction.

    The config is part of a dataset's identity: `config_hash` changes when any
    field or `FEATURE_CODE_VERSION` changes. Integer-valued floats and ints
    hash the same, because fields are normalised to their declared types.

    Args:
        target_sampling_rate_hz: rate every recording is resampled to.
        window_length: samples per window (at least 64).
        hop_length: samples between the starts of consecutive windows.
        n_bands: number of equal-width spectrum bands from 0 Hz to Nyquist.
        envelope_band_hz: band-pass (low, high) in Hz applied before the
            Hilbert envelope. The high edge is clipped to 95 % of Nyquist.
        envelope_max_hz: upper end of the envelope spectrum range that the
            envelope bands cover, in Hz.
        n_envelope_bands: number of equal-width envelope bands.
        bearing: bearing geometry. When set, the envelope features are the
            amplitudes at its defect frequencies instead of envelope bands.

    Raises:
        ValueError: a field has the wrong type or an out-of-range value. The
            message names the field and the value.
    """

    target_sampling_rate_hz: float = 12_000.0
    window_length: int = 2048
    hop_length: int = 1024
    n_bands: int = 8
    envelope_band_hz: tuple[float, float] = (2_000.0, 5_000.0)
    envelope_max_hz: float = 500.0
    n_envelope_bands: int = 8
    bearing: BearingGeometry | None = None

    def __post_init__(self) -> None:
        self._normalise_types()
        self._check_sampling_rate()
        self._check_window()
        self._check_spectrum_bands()
        self._check_envelope_band()
        self._check_envelope_bands()

    @property
    def nyquist_hz(self) -> float:
        """Nyquist frequency of the target sampling rate, in Hz."""
        return self.target_sampling_rate_hz / 2.0

    @property
    def bin_spacing_hz(self) -> float:
        """Frequency resolution of a window's spectrum, in Hz."""
        return self.target_sampling_rate_hz / self.window_length

    def to_dict(self) -> dict[str, Any]:
        """Return the config as JSON-ready data: tuples as lists, the bearing as a dict or None."""
        data = dataclasses.asdict(self)
        data["envelope_band_hz"] = list(self.envelope_band_hz)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureConfig:
        """Build a config from `to_dict` output. Missing keys take their defaults.

        Raises:
            ValueError: `data` has keys that are not config fields, or a value
                is invalid.
        """
        _check_known_keys(cls, data)
        values = dict(data)

        if isinstance(values.get("bearing"), dict):
            _check_known_keys(BearingGeometry, values["bearing"])
            values["bearing"] = BearingGeometry(**values["bearing"])

        return cls(**values)

    def config_hash(self) -> str:
        """Return the sha256 hex digest of the canonical JSON of the config and `FEATURE_CODE_VERSION`."""
        payload = {"config": self.to_dict(), "feature_code_version": FEATURE_CODE_VERSION}
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def envelope_band_edges_hz(self) -> tuple[float, float]:
        """Return the band-pass edges actually used, with the high edge clipped below Nyquist."""
        low, high = self.envelope_band_hz
        return low, min(high, _MAX_BAND_EDGE_FRACTION * self.nyquist_hz)

    def _normalise_types(self) -> None:
        for name in ("target_sampling_rate_hz", "envelope_max_hz"):
            object.__setattr__(self, name, _as_float(name, getattr(self, name)))
        for name in ("window_length", "hop_length", "n_bands", "n_envelope_bands"):
            object.__setattr__(self, name, _as_int(name, getattr(self, name)))

        band = tuple(self.envelope_band_hz)
        if len(band) != 2:
            raise ValueError(f"envelope_band_hz must be a (low, high) pair in Hz, got {self.envelope_band_hz!r}.")
        object.__setattr__(self, "envelope_band_hz", tuple(_as_float("envelope_band_hz", edge) for edge in band))

        if self.bearing is not None and not isinstance(self.bearing, BearingGeometry):
            raise ValueError(
                f"bearing must be a BearingGeometry or None, got {type(self.bearing).__name__}. "
                "Use FeatureConfig.from_dict to build one from a dict."
            )

    def _check_sampling_rate(self) -> None:
        if self.target_sampling_rate_hz <= 0:
            raise ValueError(f"target_sampling_rate_hz must be positive, got {self.target_sampling_rate_hz}.")

    def _check_window(self) -> None:
        if self.window_length < _MIN_WINDOW_LENGTH:
            raise ValueError(f"window_length must be at least {_MIN_WINDOW_LENGTH} samples, got {self.window_length}.")
        if self.hop_length < 1:
            raise ValueError(f"hop_length must be at least 1 sample, got {self.hop_length}.")

    def _check_spectrum_bands(self) -> None:
        max_bands = self.window_length // 2
        if not 1 <= self.n_bands <= max_bands:
            raise ValueError(
                f"n_bands must be between 1 and {max_bands} (half the window_length) so that every band "
                f"contains a spectrum bin, got {self.n_bands}."
            )

    def _check_envelope_band(self) -> None:
        low, high = self.envelope_band_edges_hz()
        if not 0.0 < low < high:
            raise ValueError(
                f"envelope_band_hz {self.envelope_band_hz} is invalid at {self.target_sampling_rate_hz} Hz: "
                f"it needs 0 < low < high, and high is clipped to {high:g} Hz. Lower the band or raise "
                "target_sampling_rate_hz."
            )

    def _check_envelope_bands(self) -> None:
        if not 0.0 < self.envelope_max_hz <= self.nyquist_hz:
            raise ValueError(
                f"envelope_max_hz must be in (0, {self.nyquist_hz:g}] (the Nyquist frequency), "
                f"got {self.envelope_max_hz}."
            )
        if self.n_envelope_bands < 1:
            raise ValueError(f"n_envelope_bands must be at least 1, got {self.n_envelope_bands}.")

        band_width = self.envelope_max_hz / self.n_envelope_bands
        if band_width < self.bin_spacing_hz:
            raise ValueError(
                f"envelope bands of {band_width:g} Hz are narrower than the spectrum bin spacing "
                f"{self.bin_spacing_hz:g} Hz, so some would always be empty. Use fewer n_envelope_bands, "
                "a larger envelope_max_hz or a longer window_length."
            )


def condition(values: np.ndarray, sampling_rate_hz: float, config: FeatureConfig) -> np.ndarray:
    """Remove the DC offset of a recording and resample it to the target rate.

    The up/down factors of `scipy.signal.resample_poly` come from
    ``Fraction(target / rate).limit_denominator(1000)``. Nothing is resampled
    when the rates match. Cost: O(n) for the mean, O(n * filter length) for
    resampling.

    Args:
        values: one channel of a recording, 1-D.
        sampling_rate_hz: rate at which `values` was recorded.
        config: supplies `target_sampling_rate_hz`.

    Returns:
        The zero-mean float64 signal at `config.target_sampling_rate_hz`.

    Raises:
        ValueError: `values` is not 1-D, is empty or contains NaN or infinite
            samples, or `sampling_rate_hz` is not positive or has no ratio to
            the target rate with a denominator up to 1000.
    """
    signal = _as_recording(values)
    rate = _as_float("sampling_rate_hz", sampling_rate_hz)
    if rate <= 0:
        raise ValueError(f"sampling_rate_hz must be positive, got {rate}.")

    signal = signal - signal.mean()
    if rate == config.target_sampling_rate_hz:
        return signal

    up, down = _resampling_factors(rate, config.target_sampling_rate_hz)
    return scipy.signal.resample_poly(signal, up, down)


def n_windows(n_samples: int, window_length: int, hop_length: int) -> int:
    """Return how many whole windows `frame` cuts from `n_samples` samples.

    Raises:
        ValueError: a count is negative, or a length is below 1.
    """
    _check_framing(window_length, hop_length)
    if n_samples < 0:
        raise ValueError(f"n_samples must not be negative, got {n_samples}.")

    if n_samples < window_length:
        return 0
    return 1 + (n_samples - window_length) // hop_length


def frame(signal: np.ndarray, window_length: int, hop_length: int) -> np.ndarray:
    """Cut a signal into windows without copying it.

    Window ``i`` starts at sample ``i * hop_length``. Trailing samples that do
    not fill a whole window are dropped.

    Returns:
        A read-only ``(n_windows, window_length)`` view of `signal`, shaped
        ``(0, window_length)`` when the signal is shorter than one window. It is
        read-only because windows overlap when hop_length < window_length,
        so one write would change several.

    Raises:
        ValueError: `signal` is not 1-D, or a length is below 1.
    """
    if signal.ndim != 1:
        raise ValueError(f"frame() needs a 1-D signal, got shape {signal.shape}.")
    count = n_windows(signal.shape[0], window_length, hop_length)

    stride = signal.strides[0]
    return np.lib.stride_tricks.as_strided(
        signal,
        shape=(count, window_length),
        strides=(hop_length * stride, stride),
        writeable=False,
    )


def feature_names(config: FeatureConfig) -> list[str]:
    """Return the names of the columns of `extract_features` for this config, in order."""
    names = list(TIME_DOMAIN_FEATURES)
    names += [f"band_energy_{band}" for band in range(config.n_bands)]
    names.append("spectral_centroid_hz")

    if config.bearing is not None:
        names += [f"env_{defect}" for defect in DEFECTS]
    else:
        names += [f"env_band_{band}" for band in range(config.n_envelope_bands)]
    return names


def extract_features(
    windows: np.ndarray,
    config: FeatureConfig,
    *,
    shaft_speed_rpm: float | None = None,
) -> np.ndarray:
    """Compute the features of every window, one row per window.

    Every feature is computed on the window minus its own mean, in float64:

    - Time domain: ``rms``, ``peak`` (max ``|x|``), ``peak_to_peak``,
      ``crest_factor`` (peak / rms), ``kurtosis`` (excess, so a sine gives
      -1.5), ``skewness``, ``shape_factor`` (rms / mean ``|x|``),
      ``impulse_factor`` (peak / mean ``|x|``) and ``std`` (population, so it
      equals rms). A ratio with a zero denominator, as in an all-zero window,
      is 0.
    - Frequency domain: the one-sided power spectrum of the Hann-windowed
      window, divided by ``window_length * sum(hann**2)``. By Parseval the
      bins then sum to ``sum((x * hann)**2) / sum(hann**2)``, which is close
      to the mean square (rms**2) of a stationary signal and equal to it for a
      sine with a whole number of cycles. ``band_energy_<i>`` sums the bins
      in equal-width bands from 0 Hz to Nyquist, with the Nyquist bin in the
      last band. ``spectral_centroid_hz`` is the power-weighted mean frequency.
    - Envelope: band-pass ``envelope_band_hz``, Hilbert magnitude, mean
      removed. The band-pass is ``scipy.signal.butter`` with N=4 (8 poles for
      a band-pass) as second-order sections, run forward and backward by
      ``sosfiltfilt``.
      With a bearing, ``env_<defect>`` is the max of the Hann-windowed
      amplitude spectrum (a sine of amplitude a gives a) over the bins within
      2 % of the defect frequency. The nearest bin counts even when no bin
      falls within 2 %. Without a bearing, ``env_band_<i>`` is the envelope
      power, scaled like the spectrum above, in equal-width bands from 0 Hz
      to ``envelope_max_hz``.

    Cost: O(n_windows * L log L) time for L = window_length, and several
    temporary arrays the size of `windows`, one of them complex. Limits: the
    frequency resolution is ``target_sampling_rate_hz / window_length`` (5.9 Hz
    by default). The band-pass runs per window, so its edge transients reach
    into each end of a window. With the default band its impulse response
    falls below 1 % of its peak within 30 samples.

    Args:
        windows: ``(n_windows, window_length)`` samples at
            `config.target_sampling_rate_hz`, for example from `frame`.
        config: feature settings.
        shaft_speed_rpm: shaft speed during the recording. Required when
            `config.bearing` is set and ignored otherwise.

    Returns:
        ``(n_windows, len(feature_names(config)))`` float64 features.

    Raises:
        ValueError: `windows` has the wrong shape or non-finite samples, or the
            shaft speed is missing or puts a defect frequency outside the
            resolvable range.
    """
    centered = _as_windows(windows, config)
    centered = centered - centered.mean(axis=1, keepdims=True)

    defect_hz = None
    if config.bearing is not None:
        defect_hz = _defect_frequencies_hz(config, shaft_speed_rpm)

    if centered.shape[0] == 0:
        return np.empty((0, len(feature_names(config))), dtype=np.float64)

    envelope = _envelope(centered, config)
    if defect_hz is not None:
        envelope_features = _defect_amplitudes(envelope, config, defect_hz)
    else:
        envelope_features = _envelope_band_powers(envelope, config)

    power = _power_spectrum(centered)
    return np.hstack(
        [
            _time_domain_features(centered),
            _band_sums(power, config, upper_hz=config.nyquist_hz, n_bands=config.n_bands),
            _spectral_centroid_hz(power, config)[:, np.newaxis],
            envelope_features,
        ]
    )


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r} ({type(value).__name__}).")
    return int(value)


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__}).")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}.")
    return float(value)


def _check_known_keys(cls: type, data: dict[str, Any]) -> None:
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(
            f"unknown {cls.__name__} keys: {', '.join(unknown)}. Known keys: {', '.join(sorted(known))}. "
            "Remove them, or upgrade daqflow if the config was written by a newer version."
        )


def _as_recording(values: np.ndarray) -> np.ndarray:
    signal = np.asarray(values, dtype=np.float64)
    if signal.ndim != 1:
        raise ValueError(
            f"condition() needs one channel as a 1-D array, got shape {signal.shape}. "
            "Pass values.ravel() for an (n, 1) MATLAB column."
        )
    if signal.size == 0:
        raise ValueError("the recording has no samples. Drop it from the manifest.")

    bad = np.flatnonzero(~np.isfinite(signal))
    if bad.size:
        raise ValueError(
            f"the recording has {bad.size} NaN or infinite samples (first at index {bad[0]}). "
            "Repair or drop the recording before feature extraction."
        )
    return signal


def _resampling_factors(rate_hz: float, target_hz: float) -> tuple[int, int]:
    ratio = Fraction(target_hz / rate_hz).limit_denominator(1000)
    relative_error = abs(float(ratio) * rate_hz / target_hz - 1.0)
    if ratio == 0 or relative_error > _MAX_RESAMPLING_RATIO_ERROR:
        raise ValueError(
            f"cannot resample from {rate_hz:g} Hz to {target_hz:g} Hz: the closest ratio with a "
            f"denominator up to 1000 is {ratio}, off by {relative_error:.2%}. Resample the recording "
            "to a nearby standard rate first."
        )
    return ratio.numerator, ratio.denominator


def _check_framing(window_length: int, hop_length: int) -> None:
    if window_length < 1:
        raise ValueError(f"window_length must be at least 1, got {window_length}.")
    if hop_length < 1:
        raise ValueError(f"hop_length must be at least 1, got {hop_length}.")


def _as_windows(windows: np.ndarray, config: FeatureConfig) -> np.ndarray:
    array = np.asarray(windows, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != config.window_length:
        raise ValueError(
            f"windows must have shape (n_windows, {config.window_length}) to match window_length, "
            f"got {array.shape}. Cut them with frame()."
        )

    bad_rows = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if bad_rows.size:
        raise ValueError(
            f"{bad_rows.size} windows contain NaN or infinite samples (first: window {bad_rows[0]}). "
            "Repair the recording, or pass it through condition(), which rejects such samples."
        )
    return array


def _defect_frequencies_hz(config: FeatureConfig, shaft_speed_rpm: float | None) -> dict[str, float]:
    if shaft_speed_rpm is None:
        raise ValueError(
            "shaft_speed_rpm is required because the config has a bearing. Pass the recording's "
            "shaft speed, or use a config with bearing=None for envelope band features."
        )
    rpm = _as_float("shaft_speed_rpm", shaft_speed_rpm)
    if rpm <= 0:
        raise ValueError(f"shaft_speed_rpm must be positive, got {rpm}.")

    orders = config.bearing.defect_orders()
    frequencies = {defect: orders[defect] * rpm / 60.0 for defect in DEFECTS}
    for defect, hz in frequencies.items():
        _check_resolvable(defect, hz, rpm, config)
    return frequencies


def _check_resolvable(defect: str, hz: float, rpm: float, config: FeatureConfig) -> None:
    if hz < config.bin_spacing_hz:
        raise ValueError(
            f"at {rpm:g} rpm the {defect.upper()} is {hz:.2f} Hz, below the envelope spectrum resolution "
            f"of {config.bin_spacing_hz:.2f} Hz. Increase window_length to resolve it."
        )
    if hz * (1.0 + DEFECT_TOLERANCE) > config.nyquist_hz:
        raise ValueError(
            f"at {rpm:g} rpm the {defect.upper()} is {hz:.1f} Hz, too close to the Nyquist frequency "
            f"{config.nyquist_hz:g} Hz. Check shaft_speed_rpm or raise target_sampling_rate_hz."
        )


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Divide elementwise, giving 0 where the denominator is not positive."""
    result = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=result, where=denominator > 0)
    return result


def _time_domain_features(centered: np.ndarray) -> np.ndarray:
    magnitude = np.abs(centered)
    variance = np.mean(centered**2, axis=1)
    rms = np.sqrt(variance)
    peak = magnitude.max(axis=1)
    mean_magnitude = magnitude.mean(axis=1)

    variance_squared = variance**2
    kurtosis = np.where(
        variance_squared > 0,
        _ratio(np.mean(centered**4, axis=1), variance_squared) - 3.0,
        0.0,
    )
    skewness = _ratio(np.mean(centered**3, axis=1), variance**1.5)

    columns = {
        "rms": rms,
        "peak": peak,
        "peak_to_peak": np.ptp(centered, axis=1),
        "crest_factor": _ratio(peak, rms),
        "kurtosis": kurtosis,
        "skewness": skewness,
        "shape_factor": _ratio(rms, mean_magnitude),
        "impulse_factor": _ratio(peak, mean_magnitude),
        # Population std equals rms after mean removal. Both stay because
        # the feature names are part of the dataset schema.
        "std": rms,
    }
    return np.column_stack([columns[name] for name in TIME_DOMAIN_FEATURES])


def _one_sided_weights(window_length: int) -> np.ndarray:
    """Return the factor that folds negative frequencies onto each rfft bin."""
    weights = np.full(window_length // 2 + 1, 2.0)
    weights[0] = 1.0
    if window_length % 2 == 0:
        weights[-1] = 1.0
    return weights


def _hann_rfft(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the rfft of each Hann-windowed row and the Hann window used."""
    hann = scipy.signal.windows.hann(frames.shape[1], sym=False)
    return scipy.fft.rfft(frames * hann, axis=1), hann


def _power_spectrum(frames: np.ndarray) -> np.ndarray:
    spectrum, hann = _hann_rfft(frames)
    scale = frames.shape[1] * np.sum(hann**2)
    return _one_sided_weights(frames.shape[1]) * np.abs(spectrum) ** 2 / scale


def _amplitude_spectrum(frames: np.ndarray) -> np.ndarray:
    spectrum, hann = _hann_rfft(frames)
    return _one_sided_weights(frames.shape[1]) * np.abs(spectrum) / np.sum(hann)


def _bin_frequencies_hz(config: FeatureConfig) -> np.ndarray:
    return scipy.fft.rfftfreq(config.window_length, d=1.0 / config.target_sampling_rate_hz)


def _band_sums(power: np.ndarray, config: FeatureConfig, *, upper_hz: float, n_bands: int) -> np.ndarray:
    """Sum the power in equal-width bands from 0 Hz to `upper_hz`. A bin at `upper_hz` counts in the last band."""
    frequencies = _bin_frequencies_hz(config)
    in_range = frequencies <= upper_hz
    band_of_bin = np.minimum((frequencies[in_range] / (upper_hz / n_bands)).astype(int), n_bands - 1)

    membership = np.zeros((in_range.sum(), n_bands))
    membership[np.arange(band_of_bin.size), band_of_bin] = 1.0
    return power[:, in_range] @ membership


def _spectral_centroid_hz(power: np.ndarray, config: FeatureConfig) -> np.ndarray:
    return _ratio(power @ _bin_frequencies_hz(config), power.sum(axis=1))


def _envelope(centered: np.ndarray, config: FeatureConfig) -> np.ndarray:
    sos = scipy.signal.butter(
        _ENVELOPE_FILTER_ORDER,
        config.envelope_band_edges_hz(),
        btype="bandpass",
        output="sos",
        fs=config.target_sampling_rate_hz,
    )
    filtered = scipy.signal.sosfiltfilt(sos, centered, axis=1)

    envelope = np.abs(scipy.signal.hilbert(filtered, axis=1))
    return envelope - envelope.mean(axis=1, keepdims=True)


def _defect_amplitudes(envelope: np.ndarray, config: FeatureConfig, defect_hz: dict[str, float]) -> np.ndarray:
    amplitude = _amplitude_spectrum(envelope)
    frequencies = _bin_frequencies_hz(config)

    columns = []
    for defect in DEFECTS:
        target = defect_hz[defect]
        searched = np.abs(frequencies - target) <= DEFECT_TOLERANCE * target
        searched[np.argmin(np.abs(frequencies - target))] = True
        columns.append(amplitude[:, searched].max(axis=1))
    return np.column_stack(columns)


def _envelope_band_powers(envelope: np.ndarray, config: FeatureConfig) -> np.ndarray:
    return _band_sums(
        _power_spectrum(envelope),
        config,
        upper_hz=config.envelope_max_hz,
        n_bands=config.n_envelope_bands,
    )


CWRU_DRIVE_END_BEARING = BearingGeometry(n_balls=9, ball_diameter=0.3126, pitch_diameter=1.537)
"""SKF 6205-2RS JEM, the drive-end bearing of the CWRU test rig (inches)."""

CWRU_FAN_END_BEARING = BearingGeometry(n_balls=8, ball_diameter=0.2656, pitch_diameter=1.122)
"""SKF 6203-2RS JEM, the fan-end bearing of the CWRU test rig (inches)."""
