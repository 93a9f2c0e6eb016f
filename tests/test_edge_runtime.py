"""The edge runtime on real CWRU recordings: same predictions as training, both input kinds, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import lightgbm
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge.bundle import BundleError, add_trusted_key, build_manifest, generate_signing_key, key_id, make_bundle
from edge.cli import main
from edge.layout import install_bundle, set_current, trusted_keys_dir
from edge.runtime import EdgeModel
from tasks.features import (
    CWRU_DRIVE_END_BEARING,
    FeatureConfig,
    condition,
    extract_features,
    feature_names,
    frame,
    n_windows,
)
from tasks.onnx_export import lightgbm_to_onnx
from tasks.readers import read_signal_file
from tasks.recordings import RecordingError

DEVICE = "rig1-drive-end"
CONFIG = FeatureConfig(hop_length=2048, bearing=CWRU_DRIVE_END_BEARING)
TRAINING_FILES = {"inner_race": "IR007_0.mat", "ball": "B007_0.mat", "outer_race": "OR007@6_0.mat"}
CLASSES = list(TRAINING_FILES)
FEATURES_INPUT = {"kind": "features", "name": "features", "dtype": "float32", "feature_names": feature_names(CONFIG)}
WAVEFORM_INPUT = {"kind": "waveform", "name": "waveform", "dtype": "float32", "shape": [None, 1, CONFIG.window_length]}


def _feature_spec(*, default_shaft_speed_rpm: float | None = 1797.0, **overrides) -> dict:
    spec = {
        "config": CONFIG.to_dict(),
        "config_hash": CONFIG.config_hash(),
        "window_length": CONFIG.window_length,
        "hop_length": CONFIG.hop_length,
        "target_sampling_rate_hz": CONFIG.target_sampling_rate_hz,
        "channel": "DE_time",
        "default_shaft_speed_rpm": default_shaft_speed_rpm,
    }
    return {**spec, **overrides}


def _training_features(path: Path, *, sampling_rate_hz: float = 12_000.0, shaft_speed_rpm: float | None = None) -> np.ndarray:
    """Features of every window of a recording, computed the way the training dataset does."""
    signal, _ = read_signal_file(str(path), channel="DE_time")
    windows = frame(condition(signal.values, sampling_rate_hz, CONFIG), CONFIG.window_length, CONFIG.hop_length)
    speed = shaft_speed_rpm if shaft_speed_rpm is not None else signal.shaft_speed_rpm
    return extract_features(windows, CONFIG, shaft_speed_rpm=speed).astype(np.float32)


@pytest.fixture(scope="module")
def recordings(sample_dir) -> Path:
    return sample_dir / "12k_DE"


@pytest.fixture(scope="module")
def native_model(recordings) -> lightgbm.LGBMClassifier:
    features = [_training_features(recordings / name) for name in TRAINING_FILES.values()]
    labels = np.concatenate([np.full(len(rows), index) for index, rows in enumerate(features)])
    model = lightgbm.LGBMClassifier(n_estimators=20, num_leaves=8, random_state=0, num_threads=1, verbose=-1)
    return model.fit(np.vstack(features), labels)


@pytest.fixture(scope="module")
def model_onnx(native_model) -> bytes:
    return lightgbm_to_onnx(native_model, n_features=len(FEATURES_INPUT["feature_names"]))


@pytest.fixture(scope="module")
def signing_key():
    return generate_signing_key()


@pytest.fixture
def edge_root(tmp_path, signing_key) -> Path:
    root = tmp_path / "edge"
    add_trusted_key(trusted_keys_dir(root), signing_key.public_key())
    return root


def _publish(edge_root: Path, key, model: bytes, *, version: str = "1", **fields) -> Path:
    manifest = build_manifest(
        device_id=DEVICE,
        version=version,
        model_type=fields.pop("model_type", "lightgbm"),
        classes=fields.pop("classes", CLASSES),
        input_spec=fields.pop("input_spec", FEATURES_INPUT),
        feature_spec=fields.pop("feature_spec", _feature_spec()),
        metrics={},
        dataset_version="20260101-abc",
        files={"model.onnx": model},
        key_id=key_id(key.public_key()),
        created_at="2026-01-01T12:00:00+00:00",
    )
    folder = install_bundle(edge_root, DEVICE, version, make_bundle(model_onnx=model, manifest=manifest, key=key))
    set_current(edge_root, DEVICE, version)
    return folder


@pytest.fixture
def edge_model(edge_root, signing_key, model_onnx) -> EdgeModel:
    _publish(edge_root, signing_key, model_onnx)
    return EdgeModel.load(edge_root / "devices" / DEVICE)


def test_load_from_device_folder(edge_model, edge_root):
    assert edge_model.bundle == edge_root / "devices" / DEVICE / "bundles" / "1"
    assert (edge_model.device_id, edge_model.version, edge_model.classes) == (DEVICE, "1", CLASSES)
    assert edge_model.config == CONFIG


def test_load_with_explicit_trusted_keys(edge_root, signing_key, model_onnx, tmp_path):
    bundle = _publish(edge_root, signing_key, model_onnx)
    keys = tmp_path / "keys"
    add_trusted_key(keys, signing_key.public_key())

    model = EdgeModel.load(bundle, trusted_keys=keys)

    assert model.version == "1"
    with pytest.raises(BundleError, match="which is not in") as raised:
        EdgeModel.load(bundle, trusted_keys=tmp_path / "empty")
    assert raised.value.reason == "unknown_key"


def test_predict_matches_native_model(edge_model, native_model, recordings):
    path = recordings / "IR021_0.mat"
    native = native_model.predict_proba(_training_features(path))

    result = edge_model.predict_recording(str(path), sampling_rate_hz=12_000.0)
    edge = np.array([[window["probabilities"][name] for name in CLASSES] for window in result["windows"]])

    assert edge.shape == native.shape
    assert np.abs(edge - native).max() <= 1e-5
    assert [window["label"] for window in result["windows"]] == [CLASSES[index] for index in native.argmax(axis=1)]


def test_predict_recording_result(edge_model, recordings):
    path = recordings / "OR021@6_0.mat"
    signal, _ = read_signal_file(str(path), channel="DE_time")

    result = edge_model.predict_recording(str(path), sampling_rate_hz=12_000.0)
    windows = result["windows"]
    counts = {name: sum(window["label"] == name for window in windows) for name in CLASSES}

    assert (result["device_id"], result["version"], result["recording"]) == (DEVICE, "1", str(path))
    assert result["window_count"] == len(windows) == n_windows(len(signal.values), CONFIG.window_length, CONFIG.hop_length)
    assert [window["window_index"] for window in windows] == list(range(len(windows)))
    assert windows[3]["window_start"] == pytest.approx(3 * CONFIG.hop_length / 12_000.0)
    assert all(abs(sum(window["probabilities"].values()) - 1.0) < 1e-5 for window in windows)
    assert all(window["label"] == max(window["probabilities"], key=window["probabilities"].get) for window in windows)
    assert result["label_counts"] == {name: count for name, count in counts.items() if count}
    assert result["majority_label"] == max(counts, key=counts.get)


def test_predict_recording_resamples_48k(edge_model, sample_dir):
    path = sample_dir / "48k_DE" / "IR014_0.mat"
    signal, _ = read_signal_file(str(path), channel="DE_time")
    resampled = condition(signal.values, 48_000.0, CONFIG)

    result = edge_model.predict_recording(str(path), sampling_rate_hz=48_000.0)
    misread = edge_model.predict_recording(str(path), sampling_rate_hz=12_000.0)

    assert result["window_count"] == n_windows(len(resampled), CONFIG.window_length, CONFIG.hop_length)
    assert misread["window_count"] == n_windows(len(signal.values), CONFIG.window_length, CONFIG.hop_length)
    assert misread["window_count"] > 3 * result["window_count"]


def test_predict_signal_matches_recording(edge_model, recordings):
    path = recordings / "B021_0.mat"
    signal, _ = read_signal_file(str(path), channel="DE_time")

    from_signal = edge_model.predict_signal(signal.values, sampling_rate_hz=12_000.0, shaft_speed_rpm=signal.shaft_speed_rpm)
    from_file = edge_model.predict_recording(str(path), sampling_rate_hz=12_000.0)

    assert from_signal["recording"] is None
    assert from_signal["windows"] == from_file["windows"]


def test_shaft_speed_argument_overrides_file(edge_model, native_model, recordings):
    path = recordings / "IR021_0.mat"

    stored = edge_model.predict_recording(str(path), sampling_rate_hz=12_000.0)
    overridden = edge_model.predict_recording(str(path), sampling_rate_hz=12_000.0, shaft_speed_rpm=1500.0)
    native = native_model.predict_proba(_training_features(path, shaft_speed_rpm=1500.0))

    assert overridden["windows"] != stored["windows"]
    assert overridden["windows"][0]["probabilities"]["inner_race"] == pytest.approx(native[0, 0], abs=1e-5)


def test_shaft_speed_manifest_default(edge_model, recordings):
    path = recordings / "B028_0.mat"
    signal, _ = read_signal_file(str(path), channel="DE_time")

    default = edge_model.predict_recording(str(path), sampling_rate_hz=12_000.0)
    explicit = edge_model.predict_recording(str(path), sampling_rate_hz=12_000.0, shaft_speed_rpm=1797.0)

    assert signal.shaft_speed_rpm is None
    assert default["windows"] == explicit["windows"]


def test_missing_shaft_speed_is_reported(edge_root, signing_key, model_onnx, recordings):
    _publish(edge_root, signing_key, model_onnx, feature_spec=_feature_spec(default_shaft_speed_rpm=None))
    model = EdgeModel.load(edge_root / "devices" / DEVICE)

    with pytest.raises(RecordingError, match="--shaft-speed-rpm") as raised:
        model.predict_recording(str(recordings / "B028_0.mat"), sampling_rate_hz=12_000.0)

    assert raised.value.reason == "invalid_value"


@pytest.mark.parametrize(
    ("recording", "options", "reason", "fragment"),
    [
        ("IR021_0.mat", {}, "invalid_sampling_rate", "--sampling-rate-hz"),
        ("IR021_0.mat", {"sampling_rate_hz": 0.0}, "invalid_sampling_rate", "sampling rate 0.0"),
        ("IR021_0.mat", {"sampling_rate_hz": 1e9}, "invalid_sampling_rate", "cannot resample"),
        ("absent.mat", {"sampling_rate_hz": 12_000.0}, "missing_file", "absent.mat"),
        ("B028_0.mat", {"sampling_rate_hz": 12_000.0, "channel": "BA"}, "channel_not_found", "--channel"),
    ],
)
def test_predict_recording_rejects_bad_input(edge_model, recordings, recording, options, reason, fragment):
    with pytest.raises(RecordingError, match=fragment) as raised:
        edge_model.predict_recording(str(recordings / recording), **options)

    assert raised.value.reason == reason


@pytest.mark.parametrize(
    ("values", "reason", "fragment"),
    [
        (np.zeros(1_000), "too_short", "shorter than one window"),
        (np.zeros(0), "too_short", "has no samples"),
        (np.r_[np.zeros(5_000), np.nan, np.zeros(5_000)], "non_finite", "first at index 5000"),
        (np.zeros((5_000, 2)), "invalid_value", "1-D array"),
    ],
)
def test_predict_signal_rejects_bad_samples(edge_model, values, reason, fragment):
    with pytest.raises(RecordingError, match=fragment) as raised:
        edge_model.predict_signal(values, sampling_rate_hz=12_000.0)

    assert raised.value.reason == reason


def test_cli_predict_prints_window_labels(edge_root, recordings, edge_model, capsys):
    path = str(recordings / "IR021_0.mat")

    status = main(["predict", str(edge_root / "devices" / DEVICE), path, "--sampling-rate-hz", "12000"])
    printed = json.loads(capsys.readouterr().out)
    expected = edge_model.predict_recording(path, sampling_rate_hz=12_000.0)

    assert status == 0
    assert [window["label"] for window in printed["windows"]] == [window["label"] for window in expected["windows"]]
    assert printed["majority_label"] == expected["majority_label"]
    assert printed["window_count"] == expected["window_count"] > 0


@pytest.mark.parametrize(
    ("recording", "options", "reason"),
    [
        ("IR021_0.mat", [], "invalid_sampling_rate"),
        ("absent.mat", ["--sampling-rate-hz", "12000"], "missing_file"),
        ("IR021_0.mat", ["--sampling-rate-hz", "12000", "--channel", "XX"], "channel_not_found"),
    ],
)
def test_cli_predict_bad_recording_exits_2(edge_model, recordings, capsys, recording, options, reason):
    status = main(["predict", str(edge_model.bundle), str(recordings / recording), *options])
    error = json.loads(capsys.readouterr().err)

    assert status == 2
    assert error["reason"] == reason


def _linear_waveform_model(weights: np.ndarray) -> bytes:
    """A real ONNX model: softmax of a linear map of the raw window, standing in for a CNN."""
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["waveform"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "weights"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "linear_waveform",
        [helper.make_tensor_value_info("waveform", TensorProto.FLOAT, [None, 1, weights.shape[0]])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, weights.shape[1]])],
        initializer=[numpy_helper.from_array(weights, "weights")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def test_waveform_model_gets_conditioned_windows(edge_root, signing_key, recordings):
    weights = np.random.default_rng(0).normal(scale=0.01, size=(CONFIG.window_length, len(CLASSES))).astype(np.float32)
    _publish(edge_root, signing_key, _linear_waveform_model(weights), model_type="cnn1d", input_spec=WAVEFORM_INPUT)
    model = EdgeModel.load(edge_root / "devices" / DEVICE)
    path = recordings / "B028_0.mat"
    signal, _ = read_signal_file(str(path), channel="DE_time")

    result = model.predict_recording(str(path), sampling_rate_hz=12_000.0)
    windows = frame(condition(signal.values, 12_000.0, CONFIG), CONFIG.window_length, CONFIG.hop_length)
    logits = windows.astype(np.float32) @ weights
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    edge = np.array([[window["probabilities"][name] for name in CLASSES] for window in result["windows"]])

    assert edge.shape == expected.shape
    assert np.abs(edge - expected).max() <= 1e-5


UNSUPPORTED = [
    pytest.param({"input_spec": {**FEATURES_INPUT, "kind": "spectrogram"}}, "supports float32 inputs of kind", id="unknown-kind"),
    pytest.param({"input_spec": {**FEATURES_INPUT, "dtype": "float16"}}, "supports float32 inputs", id="other-dtype"),
    pytest.param(
        {"input_spec": {**FEATURES_INPUT, "feature_names": FEATURES_INPUT["feature_names"][::-1]}},
        "expects features",
        id="other-feature-order",
    ),
    pytest.param({"feature_spec": _feature_spec(config_hash="0" * 64)}, "so its feature code differs", id="config-hash"),
    pytest.param(
        {"feature_spec": _feature_spec(config={**CONFIG.to_dict(), "notch_hz": 50.0})},
        "cannot read",
        id="unknown-config-field",
    ),
    pytest.param({"input_spec": {**FEATURES_INPUT, "name": "inputs"}}, "needs the single input 'inputs'", id="input-name"),
    pytest.param({"classes": [*CLASSES, "normal"]}, "returns 3 class probabilities", id="class-count"),
    pytest.param({"input_spec": {**WAVEFORM_INPUT, "shape": [None, 1, 1024]}}, "declares waveform shape", id="waveform-shape"),
]


@pytest.mark.parametrize(("fields", "fragment"), UNSUPPORTED)
def test_load_rejects_unsupported_bundle(edge_root, signing_key, model_onnx, fields, fragment):
    bundle = _publish(edge_root, signing_key, model_onnx, **fields)

    with pytest.raises(BundleError, match=fragment) as raised:
        EdgeModel.load(bundle)

    assert raised.value.reason == "unsupported"


def test_load_rejects_non_onnx_model(edge_root, signing_key):
    bundle = _publish(edge_root, signing_key, b"not an onnx model")

    with pytest.raises(BundleError, match="cannot be loaded by onnxruntime") as raised:
        EdgeModel.load(bundle)

    assert raised.value.reason == "unsupported"
