"""Tests of tasks.features against direct numpy computations on known signals and a real CWRU recording."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.stats

from tasks.features import (
    CWRU_DRIVE_END_BEARING,
    CWRU_FAN_END_BEARING,
    DEFECTS,
    BearingGeometry,
    FeatureConfig,
    condition,
    extract_features,
    feature_names,
    frame,
    n_windows,
)

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "data" / "sample" / "cwru"
RATE_HZ = 12_000.0
CWRU_RPM = 1797.0
BURST_HZ = 3_000.0
BURST_DECAY_S = 0.001

# A 187.5 Hz tone has exactly 64 samples per cycle at 12 kHz: a window of 2048
# samples contains 32 whole cycles and one sample lands on each crest.
WHOLE_CYCLE_HZ = 187.5

BEARING_CONFIG = FeatureConfig(bearing=CWRU_DRIVE_END_BEARING)
BAND_CONFIG = FeatureConfig()


def tone(frequency_hz: float, n_samples: int, *, amplitude: float = 1.0, rate_hz: float = RATE_HZ) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * frequency_hz * np.arange(n_samples) / rate_hz)


def impulse_train(repetition_hz: float, n_samples: int) -> np.ndarray:
    """Return decaying 3 kHz bursts that repeat at `repetition_hz`, plus a little white noise."""
    time_s = np.arange(n_samples) / RATE_HZ
    since_impulse_s = np.mod(time_s, 1.0 / repetition_hz)
    bursts = np.exp(-since_impulse_s / BURST_DECAY_S) * np.sin(2 * np.pi * BURST_HZ * since_impulse_s)
    noise = np.random.default_rng(7).normal(scale=0.05, size=n_samples)
    return bursts + noise


def amplitude_modulated(modulation_hz: float, depth: float) -> np.ndarray:
    """Return one window of a 3 kHz carrier whose envelope is 1 + depth * sin(2 pi modulation_hz t)."""
    time_s = np.arange(BEARING_CONFIG.window_length) / RATE_HZ
    return (1 + depth * np.sin(2 * np.pi * modulation_hz * time_s)) * np.sin(2 * np.pi * BURST_HZ * time_s)


def bin_hz(spectrum_bin: float) -> float:
    return spectrum_bin * BEARING_CONFIG.bin_spacing_hz


def rpm_for_bin(defect: str, spectrum_bin: float) -> float:
    """Return the shaft speed that puts `defect` at `spectrum_bin` of the envelope spectrum."""
    return bin_hz(spectrum_bin) * 60.0 / CWRU_DRIVE_END_BEARING.defect_orders()[defect]


def defect_hz(defect: str) -> float:
    return CWRU_DRIVE_END_BEARING.defect_orders()[defect] * CWRU_RPM / 60.0


def column(features: np.ndarray, config: FeatureConfig, name: str) -> np.ndarray:
    return features[:, feature_names(config).index(name)]


def single_window(signal: np.ndarray) -> np.ndarray:
    """Return the BAND_CONFIG features of the first window of `signal`."""
    return extract_features(signal[np.newaxis, : BAND_CONFIG.window_length], BAND_CONFIG)[0]


def row_value(row: np.ndarray, config: FeatureConfig, name: str) -> float:
    return row[feature_names(config).index(name)]


class TestBearingGeometry:
    def test_defect_orders_match_kinematic_formulas(self):
        bearing = BearingGeometry(n_balls=9, ball_diameter=0.3, pitch_diameter=1.5, contact_angle_deg=15.0)
        ratio = 0.3 / 1.5 * np.cos(np.radians(15.0))

        orders = bearing.defect_orders()

        assert orders["bpfo"] == pytest.approx(4.5 * (1 - ratio), rel=1e-12)
        assert orders["bpfi"] == pytest.approx(4.5 * (1 + ratio), rel=1e-12)
        assert orders["bsf"] == pytest.approx(1.5 / 0.6 * (1 - ratio**2), rel=1e-12)
        assert orders["ftf"] == pytest.approx(0.5 * (1 - ratio), rel=1e-12)

    @pytest.mark.parametrize("bearing", [CWRU_DRIVE_END_BEARING, CWRU_FAN_END_BEARING])
    def test_defect_orders_are_consistent(self, bearing):
        orders = bearing.defect_orders()

        assert orders["bpfo"] + orders["bpfi"] == pytest.approx(bearing.n_balls, rel=1e-12)
        assert orders["ftf"] * bearing.n_balls == pytest.approx(orders["bpfo"], rel=1e-12)

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"n_balls": 0, "ball_diameter": 0.3, "pitch_diameter": 1.5}, "n_balls"),
            ({"n_balls": 9.5, "ball_diameter": 0.3, "pitch_diameter": 1.5}, "n_balls"),
            ({"n_balls": 9, "ball_diameter": 1.5, "pitch_diameter": 0.3}, "ball_diameter"),
            ({"n_balls": 9, "ball_diameter": -0.3, "pitch_diameter": 1.5}, "ball_diameter"),
            ({"n_balls": 9, "ball_diameter": 0.3, "pitch_diameter": 1.5, "contact_angle_deg": 90}, "contact_angle"),
        ],
    )
    def test_invalid_geometry_rejected(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            BearingGeometry(**kwargs)


class TestTimeDomainFeatures:
    def test_sine_rms_and_crest_factor(self):
        amplitude = 2.5
        row = single_window(tone(WHOLE_CYCLE_HZ, 2048, amplitude=amplitude))

        # Whole cycles and a sample on each crest make these exact up to rounding.
        assert row_value(row, BAND_CONFIG, "rms") == pytest.approx(amplitude / np.sqrt(2), rel=1e-9)
        assert row_value(row, BAND_CONFIG, "crest_factor") == pytest.approx(np.sqrt(2), rel=1e-9)
        assert row_value(row, BAND_CONFIG, "peak") == pytest.approx(amplitude, rel=1e-9)
        assert row_value(row, BAND_CONFIG, "peak_to_peak") == pytest.approx(2 * amplitude, rel=1e-9)

    def test_sine_kurtosis_and_skewness(self):
        row = single_window(tone(WHOLE_CYCLE_HZ, 2048, amplitude=3.0))

        assert row_value(row, BAND_CONFIG, "kurtosis") == pytest.approx(-1.5, abs=1e-9)
        assert row_value(row, BAND_CONFIG, "skewness") == pytest.approx(0.0, abs=1e-9)

    def test_sine_shape_factor(self):
        row = single_window(tone(WHOLE_CYCLE_HZ, 2048))

        # Continuous sine: rms / mean|x| = pi / (2 sqrt 2). Sampling at 64 points
        # per cycle moves mean|x| by less than 0.1 %.
        assert row_value(row, BAND_CONFIG, "shape_factor") == pytest.approx(np.pi / (2 * np.sqrt(2)), rel=1e-3)

    def test_noise_matches_scipy_stats(self):
        windows = np.random.default_rng(3).standard_t(df=5, size=(6, 2048)) + 0.3
        features = extract_features(windows, BAND_CONFIG)
        centered = windows - windows.mean(axis=1, keepdims=True)
        mean_magnitude = np.abs(centered).mean(axis=1)
        rms = np.sqrt(np.mean(centered**2, axis=1))

        expected = {
            "rms": rms,
            "std": np.std(windows, axis=1),
            "peak": np.abs(centered).max(axis=1),
            "peak_to_peak": windows.max(axis=1) - windows.min(axis=1),
            "kurtosis": scipy.stats.kurtosis(windows, axis=1, fisher=True, bias=True),
            "skewness": scipy.stats.skew(windows, axis=1, bias=True),
            "shape_factor": rms / mean_magnitude,
            "impulse_factor": np.abs(centered).max(axis=1) / mean_magnitude,
        }
        for name, values in expected.items():
            np.testing.assert_allclose(column(features, BAND_CONFIG, name), values, rtol=1e-10, err_msg=name)

    def test_dc_offset_leaves_rms_and_std(self):
        signal = tone(1_000.0, 2048) + np.random.default_rng(1).normal(scale=0.2, size=2048)

        plain = single_window(signal)
        shifted = single_window(signal + 4.0)

        assert row_value(shifted, BAND_CONFIG, "rms") == pytest.approx(row_value(plain, BAND_CONFIG, "rms"), rel=1e-9)
        assert row_value(shifted, BAND_CONFIG, "std") == pytest.approx(row_value(plain, BAND_CONFIG, "std"), rel=1e-9)

    @pytest.mark.parametrize("config", [BAND_CONFIG, BEARING_CONFIG], ids=["bands", "bearing"])
    def test_all_zero_window_gives_zeros(self, config):
        features = extract_features(np.zeros((2, config.window_length)), config, shaft_speed_rpm=CWRU_RPM)

        assert np.all(features == 0.0)


class TestSpectrumFeatures:
    @pytest.mark.parametrize(
        ("signal", "band"),
        [
            # 448 whole cycles per window, in the middle of band 3 (2250-3000 Hz).
            (tone(2_625.0, 2048, amplitude=1.7), 3),
            # Alternating samples are a tone at Nyquist, the last bin of band 7.
            (1.7 * (-1.0) ** np.arange(2048), 7),
        ],
        ids=["2625-hz", "nyquist"],
    )
    def test_band_energy_parseval_tone(self, signal, band):
        row = single_window(signal)
        bands = np.array([row_value(row, BAND_CONFIG, f"band_energy_{index}") for index in range(BAND_CONFIG.n_bands)])

        assert bands.sum() == pytest.approx(row_value(row, BAND_CONFIG, "rms") ** 2, rel=1e-9)
        assert bands[band] / bands.sum() > 0.999

    def test_band_energy_parseval_noise(self):
        windows = np.random.default_rng(5).normal(scale=0.8, size=(40, 2048))
        features = extract_features(windows, BAND_CONFIG)
        names = [f"band_energy_{band}" for band in range(BAND_CONFIG.n_bands)]
        total = sum(column(features, BAND_CONFIG, name) for name in names)

        # The Hann window weights samples unequally, so Parseval holds only on
        # average. Over 40 windows the mean is within 2 %.
        assert total.mean() == pytest.approx(np.mean(column(features, BAND_CONFIG, "rms") ** 2), rel=0.02)

    def test_spectral_centroid_of_tone(self):
        row = single_window(tone(1_000.0, 2048))

        assert row_value(row, BAND_CONFIG, "spectral_centroid_hz") == pytest.approx(1_000.0, abs=BAND_CONFIG.bin_spacing_hz)


class TestEnvelopeFeatures:
    @pytest.mark.parametrize("defect", ["bpfo", "bpfi"])
    def test_impulse_train_peaks_at_its_defect(self, defect):
        windows = frame(impulse_train(defect_hz(defect), 24_000), 2048, 1024)
        features = extract_features(windows, BEARING_CONFIG, shaft_speed_rpm=CWRU_RPM)
        amplitudes = np.column_stack([column(features, BEARING_CONFIG, f"env_{name}") for name in DEFECTS])

        largest = np.array(DEFECTS)[amplitudes.argmax(axis=1)]

        assert list(largest) == [defect] * len(windows)

    @pytest.mark.parametrize("defect", ["bpfo", "bpfi"])
    def test_impulse_train_fills_envelope_band(self, defect):
        windows = frame(impulse_train(defect_hz(defect), 24_000), 2048, 1024)
        features = extract_features(windows, BAND_CONFIG)
        bands = np.column_stack(
            [column(features, BAND_CONFIG, f"env_band_{band}") for band in range(BAND_CONFIG.n_envelope_bands)]
        )
        expected_band = int(defect_hz(defect) // (BAND_CONFIG.envelope_max_hz / BAND_CONFIG.n_envelope_bands))

        assert list(bands.argmax(axis=1)) == [expected_band] * len(windows)

    def test_modulation_depth_read_at_defect(self):
        depth = 0.5
        windows = amplitude_modulated(bin_hz(18), depth)[np.newaxis]

        row = extract_features(windows, BEARING_CONFIG, shaft_speed_rpm=rpm_for_bin("bpfo", 18))[0]

        # On a bin the Hann-scaled amplitude spectrum reads the depth directly.
        assert row_value(row, BEARING_CONFIG, "env_bpfo") == pytest.approx(depth, rel=0.01)

    @pytest.mark.parametrize("offset", [0.9, 1.1])
    def test_modulation_outside_tolerance_ignored(self, offset):
        depth = 0.5
        windows = amplitude_modulated(offset * bin_hz(18), depth)[np.newaxis]

        row = extract_features(windows, BEARING_CONFIG, shaft_speed_rpm=rpm_for_bin("bpfo", 18))[0]

        assert row_value(row, BEARING_CONFIG, "env_bpfo") < 0.1 * depth

    def test_defect_between_bins_uses_nearest_bin(self):
        # Half-way between bins 2 and 3 the FTF is 0.5 bin from both, farther
        # than its 2 % tolerance of about 0.3 Hz.
        depth = 0.5
        windows = amplitude_modulated(bin_hz(2.5), depth)[np.newaxis]

        row = extract_features(windows, BEARING_CONFIG, shaft_speed_rpm=rpm_for_bin("ftf", 2.5))[0]

        # Hann scalloping loss half-way between bins is about 15 %.
        assert row_value(row, BEARING_CONFIG, "env_ftf") == pytest.approx(0.85 * depth, rel=0.05)

    def test_modulation_outside_envelope_band_ignored(self):
        # A 500 Hz carrier modulated at the BPFO lies below the 2-5 kHz band-pass,
        # and the unmodulated 3 kHz carrier inside it has a flat envelope.
        time_s = np.arange(BEARING_CONFIG.window_length) / RATE_HZ
        low_carrier = (1 + 0.5 * np.sin(2 * np.pi * bin_hz(18) * time_s)) * np.sin(2 * np.pi * 500.0 * time_s)
        in_band_carrier = 0.2 * np.sin(2 * np.pi * BURST_HZ * time_s)
        windows = (low_carrier + in_band_carrier)[np.newaxis]

        row = extract_features(windows, BEARING_CONFIG, shaft_speed_rpm=rpm_for_bin("bpfo", 18))[0]

        assert row_value(row, BEARING_CONFIG, "env_bpfo") < 0.01

    def test_envelope_band_power_matches_modulation(self):
        depth = 0.5
        row = single_window(amplitude_modulated(bin_hz(18), depth))
        bands = np.array(
            [row_value(row, BAND_CONFIG, f"env_band_{band}") for band in range(BAND_CONFIG.n_envelope_bands)]
        )

        # The mean-removed envelope is depth * sin(...), whose mean square is depth**2 / 2.
        # 105.5 Hz lies in band 1 (62.5-125 Hz).
        assert bands.sum() == pytest.approx(depth**2 / 2, rel=0.01)
        assert bands[1] / bands.sum() > 0.99

    def test_envelope_above_max_hz_ignored(self):
        # 703 Hz modulation is above envelope_max_hz (500 Hz), so no band may contain it.
        row = single_window(amplitude_modulated(bin_hz(120), 0.5))
        bands = np.array(
            [row_value(row, BAND_CONFIG, f"env_band_{band}") for band in range(BAND_CONFIG.n_envelope_bands)]
        )

        assert bands.sum() < 1e-3

    def test_bearing_without_shaft_speed_raises(self):
        windows = np.ones((1, BEARING_CONFIG.window_length))

        with pytest.raises(ValueError, match="shaft_speed_rpm is required"):
            extract_features(windows, BEARING_CONFIG)

    @pytest.mark.parametrize(
        ("rpm", "match"),
        [(0.0, "must be positive"), (float("nan"), "must be finite"), (300.0, "FTF.*resolution"), (1e6, "Nyquist")],
    )
    def test_bad_shaft_speed_raises(self, rpm, match):
        windows = np.ones((1, BEARING_CONFIG.window_length))

        with pytest.raises(ValueError, match=match):
            extract_features(windows, BEARING_CONFIG, shaft_speed_rpm=rpm)


class TestExtractFeatures:
    @pytest.mark.parametrize("config", [BAND_CONFIG, BEARING_CONFIG], ids=["bands", "bearing"])
    def test_names_match_matrix_width(self, config):
        windows = np.random.default_rng(0).normal(size=(3, config.window_length))

        features = extract_features(windows, config, shaft_speed_rpm=CWRU_RPM)

        assert features.shape == (3, len(feature_names(config)))
        assert features.dtype == np.float64
        assert len(set(feature_names(config))) == len(feature_names(config))

    def test_rows_independent_of_batch(self):
        windows = frame(impulse_train(defect_hz("bpfo"), 12_000), 2048, 1024)

        all_rows = extract_features(windows, BEARING_CONFIG, shaft_speed_rpm=CWRU_RPM)
        some_rows = extract_features(windows[2:4], BEARING_CONFIG, shaft_speed_rpm=CWRU_RPM)

        np.testing.assert_array_equal(some_rows, all_rows[2:4])

    def test_no_windows_gives_empty_matrix(self):
        features = extract_features(np.empty((0, BAND_CONFIG.window_length)), BAND_CONFIG)

        assert features.shape == (0, len(feature_names(BAND_CONFIG)))

    @pytest.mark.parametrize(
        ("windows", "match"),
        [
            (np.zeros(2048), "shape"),
            (np.zeros((2, 1024)), "shape"),
            (np.full((2, 2048), np.nan), "NaN or infinite"),
        ],
        ids=["1-d", "wrong-length", "nan"],
    )
    def test_bad_windows_raise(self, windows, match):
        with pytest.raises(ValueError, match=match):
            extract_features(windows, BAND_CONFIG)


class TestCondition:
    def test_resamples_48k_tone_to_12k(self):
        values = tone(1_000.0, 48_000, rate_hz=48_000.0) + 0.5

        signal = condition(values, 48_000.0, BAND_CONFIG)
        row = single_window(signal[4096:])

        assert signal.shape == (12_000,)
        assert row_value(row, BAND_CONFIG, "spectral_centroid_hz") == pytest.approx(1_000.0, abs=BAND_CONFIG.bin_spacing_hz)
        assert row_value(row, BAND_CONFIG, "rms") == pytest.approx(1 / np.sqrt(2), rel=0.01)

    def test_removes_mean(self):
        values = tone(1_000.0, 48_000, rate_hz=48_000.0) + 0.5

        signal = condition(values, 48_000.0, BAND_CONFIG)

        assert abs(signal.mean()) < 1e-3

    def test_matching_rate_only_removes_mean(self):
        values = np.random.default_rng(2).normal(loc=0.02, size=5_000).astype(np.float32)

        signal = condition(values, RATE_HZ, BAND_CONFIG)

        assert signal.dtype == np.float64
        np.testing.assert_allclose(signal, values.astype(np.float64) - values.astype(np.float64).mean(), rtol=1e-12)

    @pytest.mark.parametrize(
        ("values", "rate_hz", "match"),
        [
            (np.zeros((100, 1)), RATE_HZ, r"1-D.*ravel"),
            (np.zeros(0), RATE_HZ, "no samples"),
            (np.array([0.0, np.nan, 1.0, np.inf]), RATE_HZ, "2 NaN or infinite samples.*index 1"),
            (np.zeros(100), 0.0, "sampling_rate_hz must be positive"),
            (np.zeros(100), 12_000_000_007.0, "cannot resample"),
        ],
        ids=["column", "empty", "nan", "zero-rate", "unrepresentable-ratio"],
    )
    def test_bad_input_raises(self, values, rate_hz, match):
        with pytest.raises(ValueError, match=match):
            condition(values, rate_hz, BAND_CONFIG)


class TestFrame:
    @pytest.mark.parametrize(
        ("n_samples", "window_length", "hop_length", "expected"),
        [(10, 4, 2, 4), (11, 4, 2, 4), (4, 4, 1, 1), (3, 4, 1, 0), (0, 4, 2, 0), (10, 4, 4, 2)],
    )
    def test_window_count(self, n_samples, window_length, hop_length, expected):
        windows = frame(np.arange(float(n_samples)), window_length, hop_length)

        assert n_windows(n_samples, window_length, hop_length) == expected
        assert windows.shape == (expected, window_length)

    def test_windows_are_read_only_views(self):
        signal = np.arange(20.0)

        windows = frame(signal, 6, 4)

        assert np.shares_memory(windows, signal)
        assert not windows.flags.writeable
        for index, window in enumerate(windows):
            np.testing.assert_array_equal(window, signal[index * 4 : index * 4 + 6])

    def test_short_signal_gives_empty_view(self):
        windows = frame(np.arange(5.0), 8, 2)

        assert windows.shape == (0, 8)

    @pytest.mark.parametrize(
        ("signal", "window_length", "hop_length", "match"),
        [
            (np.zeros((4, 4)), 2, 1, "1-D"),
            (np.zeros(10), 0, 1, "window_length"),
            (np.zeros(10), 4, 0, "hop_length"),
        ],
        ids=["2-d", "zero-window", "zero-hop"],
    )
    def test_bad_input_raises(self, signal, window_length, hop_length, match):
        with pytest.raises(ValueError, match=match):
            frame(signal, window_length, hop_length)

    def test_negative_sample_count_raises(self):
        with pytest.raises(ValueError, match="n_samples"):
            n_windows(-1, 4, 2)


CHANGED_FIELDS = {
    "target_sampling_rate_hz": 24_000.0,
    "window_length": 4096,
    "hop_length": 512,
    "n_bands": 16,
    "envelope_band_hz": (2_500.0, 5_000.0),
    "envelope_max_hz": 400.0,
    "n_envelope_bands": 4,
    "bearing": CWRU_FAN_END_BEARING,
}


class TestFeatureConfig:
    def test_changed_fields_cover_every_field(self):
        assert set(CHANGED_FIELDS) == {field.name for field in dataclasses.fields(FeatureConfig)}

    def test_hash_is_stable(self):
        assert BEARING_CONFIG.config_hash() == BEARING_CONFIG.config_hash()
        assert BEARING_CONFIG.config_hash() == FeatureConfig(bearing=CWRU_DRIVE_END_BEARING).config_hash()

    @pytest.mark.parametrize(("field", "value"), CHANGED_FIELDS.items())
    def test_hash_changes_with_each_field(self, field, value):
        base = FeatureConfig(bearing=CWRU_DRIVE_END_BEARING)

        changed = dataclasses.replace(base, **{field: value})

        assert changed.config_hash() != base.config_hash()

    def test_hash_changes_with_bearing_geometry(self):
        other = dataclasses.replace(CWRU_DRIVE_END_BEARING, contact_angle_deg=5.0)

        assert FeatureConfig(bearing=other).config_hash() != BEARING_CONFIG.config_hash()

    def test_hash_ignores_int_versus_float(self):
        as_ints = FeatureConfig(target_sampling_rate_hz=12_000, envelope_band_hz=[2_000, 5_000], envelope_max_hz=500)

        assert as_ints.config_hash() == BAND_CONFIG.config_hash()

    def test_envelope_band_clipped_below_nyquist(self):
        config = FeatureConfig(target_sampling_rate_hz=8_000.0)

        assert config.envelope_band_edges_hz() == (2_000.0, 3_800.0)

    @pytest.mark.parametrize("config", [BAND_CONFIG, BEARING_CONFIG], ids=["bands", "bearing"])
    def test_dict_round_trip(self, config):
        data = json.loads(json.dumps(config.to_dict()))

        restored = FeatureConfig.from_dict(data)

        assert restored == config
        assert restored.config_hash() == config.config_hash()

    def test_to_dict_is_json_ready(self):
        data = BEARING_CONFIG.to_dict()

        assert data["envelope_band_hz"] == [2_000.0, 5_000.0]
        assert data["bearing"] == dataclasses.asdict(CWRU_DRIVE_END_BEARING)

    @pytest.mark.parametrize(
        ("data", "match"),
        [
            ({"window_length": 2048, "overlap": 0.5}, "unknown FeatureConfig keys: overlap"),
            ({"bearing": {"n_balls": 9, "ball_diameter": 0.3, "pitch_diameter": 1.5, "width": 1}}, "width"),
        ],
        ids=["config-key", "bearing-key"],
    )
    def test_from_dict_rejects_unknown_keys(self, data, match):
        with pytest.raises(ValueError, match=match):
            FeatureConfig.from_dict(data)

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"target_sampling_rate_hz": 0.0}, "target_sampling_rate_hz"),
            ({"window_length": 32}, "window_length"),
            ({"window_length": 2048.0}, "window_length must be an integer"),
            ({"hop_length": 0}, "hop_length"),
            ({"n_bands": 0}, "n_bands"),
            ({"n_bands": 2000}, "n_bands"),
            ({"envelope_band_hz": (5_000.0, 2_000.0)}, "envelope_band_hz"),
            ({"envelope_band_hz": (2_000.0,)}, "envelope_band_hz"),
            ({"target_sampling_rate_hz": 4_000.0}, "envelope_band_hz"),
            ({"envelope_max_hz": 7_000.0}, "envelope_max_hz"),
            ({"n_envelope_bands": 0}, "n_envelope_bands"),
            ({"n_envelope_bands": 200}, "narrower than the spectrum bin spacing"),
            ({"bearing": {"n_balls": 9}}, "bearing must be a BearingGeometry"),
        ],
    )
    def test_invalid_config_rejected(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            FeatureConfig(**kwargs)


@pytest.fixture(scope="module")
def inner_race_features() -> np.ndarray:
    """Features of the drive-end channel of CWRU 105.mat: 0.007 in inner race fault, 0 hp, 1797 rpm."""
    recording = scipy.io.loadmat(SAMPLE_DIR / "12k_DE" / "IR007_0.mat")
    signal = condition(recording["X105_DE_time"].ravel(), RATE_HZ, BEARING_CONFIG)
    windows = frame(signal, BEARING_CONFIG.window_length, BEARING_CONFIG.hop_length)
    return extract_features(windows, BEARING_CONFIG, shaft_speed_rpm=CWRU_RPM)


class TestRealRecording:
    def test_features_are_finite(self, inner_race_features):
        assert inner_race_features.shape[0] == n_windows(121_265, 2048, 1024)
        assert np.isfinite(inner_race_features).all()

    def test_inner_race_fault_shows_bpfi(self, inner_race_features):
        bpfi = column(inner_race_features, BEARING_CONFIG, "env_bpfi")
        bpfo = column(inner_race_features, BEARING_CONFIG, "env_bpfo")

        assert bpfi.mean() > bpfo.mean()
