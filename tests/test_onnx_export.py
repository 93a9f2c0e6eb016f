"""ONNX export of LightGBM classifiers, checked on features of real CWRU windows."""

from __future__ import annotations

import re

import lightgbm
import numpy as np
import onnx
import onnxruntime
import pytest

from tasks.features import CWRU_DRIVE_END_BEARING, FeatureConfig, condition, extract_features, frame
from tasks.onnx_export import ONNX_INPUT_NAME, check_parity, lightgbm_to_onnx
from tasks.readers import read_signal_file

CLASS_BY_PREFIX = {"IR": 0, "B": 1, "OR": 2}
# Every 12k_DE sample file is a 0 HP run at a nominal 1797 rpm. B028_0.mat stores no speed.
NOMINAL_RPM = 1797.0


@pytest.fixture(scope="module")
def windows(sample_dir):
    """Float32 features and class indices of every window of the 12 kHz drive-end files."""
    config = FeatureConfig(hop_length=2048, bearing=CWRU_DRIVE_END_BEARING)
    features, labels = [], []
    for path in sorted((sample_dir / "12k_DE").glob("*.mat")):
        signal, _ = read_signal_file(str(path), channel="DE_time")
        frames = frame(condition(signal.values, 12_000.0, config), config.window_length, config.hop_length)
        rows = extract_features(frames, config, shaft_speed_rpm=signal.shaft_speed_rpm or NOMINAL_RPM)
        features.append(rows)
        labels += [CLASS_BY_PREFIX[re.match("[A-Z]+", path.name).group()]] * len(rows)
    return np.vstack(features).astype(np.float32), np.array(labels)


def _train(features: np.ndarray, labels: np.ndarray, **params) -> lightgbm.LGBMClassifier:
    settings = {"n_estimators": 30, "num_leaves": 8, "random_state": 0, "num_threads": 1, "verbose": -1, **params}
    return lightgbm.LGBMClassifier(**settings).fit(features, labels)


@pytest.fixture(scope="module")
def model(windows):
    return _train(*windows)


@pytest.fixture(scope="module")
def onnx_model(model, windows):
    return lightgbm_to_onnx(model, n_features=windows[0].shape[1])


def test_sample_windows_cover_three_classes(windows):
    features, labels = windows

    assert 300 <= len(features) <= 600
    assert set(labels) == {0, 1, 2}
    assert np.isfinite(features).all()


def test_export_matches_native_model(onnx_model, model, windows):
    features, _ = windows

    report = check_parity(onnx_model, model.predict_proba(features), features)

    assert report.windows == len(features)
    assert report.label_mismatches == 0
    assert report.max_abs_diff <= 1e-5
    assert report.ok


def test_export_interface(onnx_model, windows):
    features, _ = windows
    session = onnxruntime.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])

    inputs = session.get_inputs()
    outputs = {output.name: output for output in session.get_outputs()}
    label, probabilities = session.run(["label", "probabilities"], {ONNX_INPUT_NAME: features})

    assert [(node.name, node.type, node.shape[1]) for node in inputs] == [(ONNX_INPUT_NAME, "tensor(float)", features.shape[1])]
    assert outputs["label"].type == "tensor(int64)"
    assert outputs["probabilities"].type == "tensor(float)"
    assert label.shape == (len(features),)
    assert probabilities.shape == (len(features), 3)
    assert np.array_equal(label, np.argmax(probabilities, axis=1))


def test_export_is_deterministic(model, onnx_model, windows):
    again = lightgbm_to_onnx(model, n_features=windows[0].shape[1])

    assert again == onnx_model


def test_export_declares_free_batch_dimension(onnx_model):
    graph = onnx.load_from_string(onnx_model).graph

    batch_dims = [output.type.tensor_type.shape.dim[0] for output in graph.output]

    assert [dim.HasField("dim_value") for dim in batch_dims] == [False, False]


def test_parity_fails_against_other_model(onnx_model, windows):
    features, labels = windows
    shuffled = np.random.default_rng(0).permutation(labels)
    other = _train(features, shuffled)

    report = check_parity(onnx_model, other.predict_proba(features), features)

    assert report.label_mismatches > 0
    assert report.max_abs_diff > 1e-2
    assert not report.ok


def test_parity_fails_on_drift_beyond_tolerance(onnx_model, model, windows):
    features, _ = windows
    native = model.predict_proba(features)
    drifted = native.copy()
    drifted[np.arange(len(native)), np.argmax(native, axis=1)] += 1e-3

    report = check_parity(onnx_model, drifted, features)

    assert report.label_mismatches == 0
    assert report.max_abs_diff == pytest.approx(1e-3, rel=1e-2)
    assert not report.ok
    assert check_parity(onnx_model, drifted, features, atol=1e-2).ok


def test_parity_report_to_dict(onnx_model, model, windows):
    features, _ = windows

    report = check_parity(onnx_model, model.predict_proba(features), features).to_dict()

    assert set(report) == {"windows", "max_abs_diff", "label_mismatches", "ok"}
    assert report["windows"] == len(features)


def test_export_rejects_unfitted_model():
    with pytest.raises(ValueError, match="not fitted"):
        lightgbm_to_onnx(lightgbm.LGBMClassifier(), n_features=22)


def test_export_rejects_wrong_feature_count(model, windows):
    with pytest.raises(ValueError, match=rf"trained on {windows[0].shape[1]} features but n_features is 5"):
        lightgbm_to_onnx(model, n_features=5)


def test_export_rejects_class_names(windows):
    features, labels = windows
    named = _train(features, np.array(["inner_race", "ball", "outer_race"])[labels])

    with pytest.raises(ValueError, match="Train it on class indices 0..2"):
        lightgbm_to_onnx(named, n_features=features.shape[1])


@pytest.mark.parametrize(
    ("native_rows", "feature_shape", "match"),
    [
        (10, (0, 22), "non-empty"),
        (10, (10,), "non-empty"),
        (9, (10, 22), "inputs have 10 windows"),
    ],
)
def test_parity_rejects_bad_shapes(onnx_model, native_rows, feature_shape, match):
    features = np.zeros(feature_shape, dtype=np.float32)
    native = np.full((native_rows, 3), 1 / 3)

    with pytest.raises(ValueError, match=match):
        check_parity(onnx_model, native, features)


def test_parity_rejects_wrong_class_count(onnx_model, windows):
    features, _ = windows

    with pytest.raises(ValueError, match="returns probabilities of shape"):
        check_parity(onnx_model, np.full((len(features), 4), 0.25), features)


def _onnx_probabilities(onnx_model, features):
    session = onnxruntime.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {ONNX_INPUT_NAME: features})[0].astype(np.float64)


def test_parity_counts_tie_within_tolerance_as_agreement(onnx_model, windows):
    features = windows[0].astype(np.float32)
    native = _onnx_probabilities(onnx_model, features)
    best = int(np.argmax(native[0]))
    other = (best + 1) % native.shape[1]
    native[0, other] = native[0, best] + 5e-8  # the native model now prefers `other`, by a tie

    report = check_parity(onnx_model, native, features)

    # The probability check still fails on the changed row; the tie alone is no label mismatch.
    assert report.label_mismatches == 0


def test_parity_counts_clear_disagreement(onnx_model, windows):
    features = windows[0].astype(np.float32)
    native = _onnx_probabilities(onnx_model, features)
    best = int(np.argmax(native[0]))
    other = (best + 1) % native.shape[1]
    native[0, other] = native[0, best] + 1e-3

    report = check_parity(onnx_model, native, features)

    assert report.label_mismatches == 1
    assert not report.ok
