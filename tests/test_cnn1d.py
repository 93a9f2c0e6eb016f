"""Tests of tasks.cnn1d: training, reproducibility, ONNX export and parity on real CWRU windows."""

from __future__ import annotations

import copy
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import scipy.io
import torch
from numpy.lib.stride_tricks import sliding_window_view

from tasks.cnn1d import (
    Cnn1dConfig,
    TrainedCnn,
    check_waveform_parity,
    cnn1d_to_onnx,
    load_cnn1d,
    train_cnn1d,
)
from tasks.metrics import classification_metrics

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "data" / "sample" / "cwru"
WINDOW_LENGTH = 2048
HOP_LENGTH = 1024
EVAL_SHARE = 0.2
LABEL_PREFIXES = {"IR": "inner_race", "OR": "outer_race", "B": "ball"}

# Four epochs take about 3 s on one CPU thread, against about 13 s for the default 20 epochs.
FAST_CONFIG = Cnn1dConfig(epochs=4, seed=0, num_threads=1)
# Chance is about 0.33 for three balanced classes. With torch 2.13 on the CPU, seeds 0 to 4
# all gave 0.99 to 1.0 after two epochs and 1.0 after four, so 0.9 leaves room for other builds.
MIN_MACRO_F1 = 0.9


@dataclass(frozen=True)
class Split:
    train_windows: np.ndarray
    train_labels: list[str]
    eval_windows: np.ndarray
    eval_labels: list[str]


def label_of(path: Path) -> str:
    (label,) = [label for prefix, label in LABEL_PREFIXES.items() if path.name.startswith(prefix)]
    return label


def drive_end_signal(path: Path) -> np.ndarray:
    """Read the drive-end channel straight with scipy and remove its mean, as the dataset build does."""
    variables = scipy.io.loadmat(path)
    (name,) = [name for name in variables if name.endswith("_DE_time")]
    signal = variables[name].ravel().astype(np.float64)
    return signal - signal.mean()


def split_recording(signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hold out the newest windows, and drop training windows that share samples with them."""
    windows = sliding_window_view(signal, WINDOW_LENGTH)[::HOP_LENGTH]
    first_eval = len(windows) - round(EVAL_SHARE * len(windows))
    first_eval_sample = first_eval * HOP_LENGTH
    train_count = sum(1 for i in range(first_eval) if i * HOP_LENGTH + WINDOW_LENGTH <= first_eval_sample)
    return windows[:train_count], windows[first_eval:]


def _arguments(split: Split) -> tuple[np.ndarray, list[str], np.ndarray, list[str]]:
    return split.train_windows, split.train_labels, split.eval_windows, split.eval_labels


@pytest.fixture(scope="module")
def split() -> Split:
    """All 12 kHz drive-end recordings of the sample: three labels, about 650 training and 170 evaluation windows."""
    train_parts, train_labels, eval_parts, eval_labels = [], [], [], []
    for path in sorted((SAMPLE_DIR / "12k_DE").glob("*.mat")):
        train, evaluation = split_recording(drive_end_signal(path))
        train_parts.append(train)
        eval_parts.append(evaluation)
        train_labels += [label_of(path)] * len(train)
        eval_labels += [label_of(path)] * len(evaluation)
    return Split(np.concatenate(train_parts), train_labels, np.concatenate(eval_parts), eval_labels)


@pytest.fixture(scope="module")
def small_split(split: Split) -> Split:
    """Every fourth window of `split`, for tests that train more than once."""
    return Split(split.train_windows[::4], split.train_labels[::4], split.eval_windows[::4], split.eval_labels[::4])


@pytest.fixture(scope="module")
def trained(split: Split) -> TrainedCnn:
    started = time.perf_counter()
    model = train_cnn1d(
        split.train_windows, split.train_labels, split.eval_windows, split.eval_labels, config=FAST_CONFIG
    )
    print(
        f"\ncnn1d trained on {len(split.train_windows)} windows in {time.perf_counter() - started:.1f} s, "
        f"{model.epochs_run} epochs on {model.device_used}"
    )
    return model


@pytest.fixture(scope="module")
def onnx_model(trained: TrainedCnn) -> bytes:
    return cnn1d_to_onnx(trained)


# --- the train/evaluation split that the other tests use ---


def test_split_separates_train_and_eval() -> None:
    signal = drive_end_signal(SAMPLE_DIR / "12k_DE" / "IR007_0.mat")
    train, evaluation = split_recording(signal)
    n_windows = (len(signal) - WINDOW_LENGTH) // HOP_LENGTH + 1
    first_eval_start = (n_windows - len(evaluation)) * HOP_LENGTH
    last_train_end = (len(train) - 1) * HOP_LENGTH + WINDOW_LENGTH

    assert len(evaluation) == round(EVAL_SHARE * n_windows)
    assert last_train_end <= first_eval_start
    # With a hop of half a window, only the window just before the first evaluation window overlaps it.
    assert len(train) == n_windows - len(evaluation) - 1
    np.testing.assert_array_equal(evaluation[0], signal[first_eval_start : first_eval_start + WINDOW_LENGTH])


# --- training ---


def test_training_beats_chance_on_newest_windows(trained: TrainedCnn, split: Split) -> None:
    predicted = trained.predict_labels(split.eval_windows)
    metrics = classification_metrics(split.eval_labels, predicted, labels=trained.classes)
    print(f"\ncnn1d macro-F1 on {len(predicted)} held-out windows: {metrics['macro_f1']:.3f}")

    assert metrics["macro_f1"] > MIN_MACRO_F1, metrics


def test_trained_model_metadata(trained: TrainedCnn, split: Split) -> None:
    assert trained.classes == ["ball", "inner_race", "outer_race"]
    assert trained.window_length == WINDOW_LENGTH
    assert trained.device_used == ("cuda" if torch.cuda.is_available() else "cpu")
    assert 1 <= trained.epochs_run <= FAST_CONFIG.epochs


def test_trained_model_is_on_cpu_in_eval_mode(trained: TrainedCnn) -> None:
    assert not trained.model.training
    assert {parameter.device.type for parameter in trained.model.parameters()} == {"cpu"}


def test_network_size_stays_small(trained: TrainedCnn) -> None:
    n_parameters = sum(parameter.numel() for parameter in trained.model.parameters())

    assert 10_000 <= n_parameters <= 20_000


def test_predictions_are_probabilities(trained: TrainedCnn, split: Split) -> None:
    proba = trained.predict_proba(split.eval_windows)

    assert proba.dtype == np.float32
    assert proba.shape == (len(split.eval_windows), len(trained.classes))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert trained.predict_labels(split.eval_windows) == [trained.classes[i] for i in proba.argmax(axis=1)]


def test_prediction_ignores_window_scale(trained: TrainedCnn, split: Split) -> None:
    # The network normalises each window itself, so a gain change on the DAQ must not change the output.
    windows = split.eval_windows[:32]

    np.testing.assert_allclose(trained.predict_proba(windows * 8.0), trained.predict_proba(windows), atol=1e-5)


def test_same_seed_gives_identical_probabilities(small_split: Split) -> None:
    config = Cnn1dConfig(epochs=2, seed=3)
    first = train_cnn1d(*_arguments(small_split), config=config)
    second = train_cnn1d(*_arguments(small_split), config=config)

    assert np.array_equal(first.predict_proba(small_split.eval_windows), second.predict_proba(small_split.eval_windows))


def test_other_seed_gives_other_probabilities(small_split: Split) -> None:
    first = train_cnn1d(*_arguments(small_split), config=Cnn1dConfig(epochs=1, seed=3))
    second = train_cnn1d(*_arguments(small_split), config=Cnn1dConfig(epochs=1, seed=4))

    windows = small_split.eval_windows

    assert not np.array_equal(first.predict_proba(windows), second.predict_proba(windows))


def test_early_stopping_ends_before_epoch_limit(small_split: Split) -> None:
    # At this learning rate the evaluation loss stopped improving at epoch 3 with seed 0 (torch 2.13, CPU).
    config = Cnn1dConfig(epochs=40, patience=1, learning_rate=0.5)
    model = train_cnn1d(*_arguments(small_split), config=config)

    assert model.epochs_run < config.epochs


def test_training_restores_torch_settings(small_split: Split) -> None:
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    rng_state = torch.get_rng_state()

    train_cnn1d(*_arguments(small_split), config=Cnn1dConfig(epochs=1, num_threads=threads + 1))

    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    assert torch.equal(torch.get_rng_state(), rng_state)


def test_label_without_training_windows_raises(split: Split) -> None:
    keep = [i for i, label in enumerate(split.train_labels) if label != "outer_race"]
    train_labels = [split.train_labels[i] for i in keep]

    with pytest.raises(ValueError, match="outer_race.*no training windows"):
        train_cnn1d(split.train_windows[keep], train_labels, split.eval_windows, split.eval_labels, config=FAST_CONFIG)


def _with_nan(windows: np.ndarray) -> np.ndarray:
    broken = windows.copy()
    broken[2, 100] = np.nan
    return broken


def _one_label(split: Split) -> tuple[np.ndarray, list[str], np.ndarray, list[str]]:
    train_labels = ["ball"] * len(split.train_labels)
    eval_labels = ["ball"] * len(split.eval_labels)
    return split.train_windows, train_labels, split.eval_windows, eval_labels


BAD_TRAINING_INPUTS = [
    pytest.param(
        lambda s: (s.train_windows, s.train_labels[:-1], s.eval_windows, s.eval_labels),
        "train_labels has",
        id="label-count",
    ),
    pytest.param(
        lambda s: (s.train_windows, s.train_labels, s.eval_windows[:, :1024], s.eval_labels),
        "eval_windows have 1024 samples",
        id="eval-length",
    ),
    pytest.param(
        lambda s: (_with_nan(s.train_windows), s.train_labels, s.eval_windows, s.eval_labels),
        r"rows \[2\].*NaN",
        id="nan-window",
    ),
    pytest.param(lambda s: (s.train_windows[:0], [], s.eval_windows, s.eval_labels), "non-empty", id="empty-train"),
    pytest.param(
        lambda s: (s.train_windows[:, :32], s.train_labels, s.eval_windows[:, :32], s.eval_labels),
        "at least 64",
        id="too-short",
    ),
    pytest.param(_one_label, "at least two labels", id="one-label"),
]


@pytest.mark.parametrize(("make_arguments", "message"), BAD_TRAINING_INPUTS)
def test_bad_training_input_raises(small_split: Split, make_arguments, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        train_cnn1d(*make_arguments(small_split), config=FAST_CONFIG)


# --- config ---


def test_config_round_trips_through_json() -> None:
    config = Cnn1dConfig(epochs=7, channels=(8, 16), kernel_size=5, learning_rate=0.01, seed=11)
    data = json.loads(json.dumps(config.to_dict()))

    assert data["channels"] == [8, 16]
    assert Cnn1dConfig.from_dict(data) == config


def test_config_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown Cnn1dConfig keys \['depth', 'dropout'\]"):
        Cnn1dConfig.from_dict({"epochs": 3, "dropout": 0.1, "depth": 4})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", 0),
        ("batch_size", True),
        ("patience", 1.5),
        ("num_threads", -1),
        ("channels", ()),
        ("channels", (16, 0)),
        ("kernel_size", 8),
        ("learning_rate", 0.0),
        ("learning_rate", float("nan")),
        ("seed", "0"),
    ],
)
def test_config_rejects_invalid_value(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"Cnn1dConfig.{field} is"):
        Cnn1dConfig(**{field: value})


# --- native model file ---


def test_native_bytes_load_weights_only(trained: TrainedCnn) -> None:
    payload = torch.load(io.BytesIO(trained.native_bytes()), weights_only=True)

    assert payload["classes"] == trained.classes
    assert payload["window_length"] == WINDOW_LENGTH
    assert all(isinstance(tensor, torch.Tensor) for tensor in payload["state_dict"].values())


def test_native_bytes_reload_predicts_the_same(trained: TrainedCnn, split: Split) -> None:
    reloaded = load_cnn1d(trained.native_bytes())

    assert reloaded.classes == trained.classes
    assert reloaded.epochs_run == trained.epochs_run
    assert np.array_equal(reloaded.predict_proba(split.eval_windows), trained.predict_proba(split.eval_windows))


def test_load_rejects_other_files() -> None:
    buffer = io.BytesIO()
    torch.save({"state_dict": {}}, buffer)

    with pytest.raises(ValueError, match="not a daqflow cnn1d model"):
        load_cnn1d(buffer.getvalue())
    with pytest.raises(ValueError, match="could not be read"):
        load_cnn1d(b"tree model text")


# --- ONNX export and parity ---


def test_export_has_edge_input(onnx_model: bytes) -> None:
    (graph_input,) = onnx.load_from_string(onnx_model).graph.input
    tensor_type = graph_input.type.tensor_type
    batch, channel, length = tensor_type.shape.dim

    assert graph_input.name == "waveform"
    assert tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert batch.dim_param == "N"
    assert (channel.dim_value, length.dim_value) == (1, WINDOW_LENGTH)


def test_export_has_edge_outputs(onnx_model: bytes, trained: TrainedCnn) -> None:
    label, probabilities = onnx.load_from_string(onnx_model).graph.output

    assert (label.name, probabilities.name) == ("label", "probabilities")
    assert label.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert [dim.dim_param for dim in label.type.tensor_type.shape.dim] == ["N"]
    assert probabilities.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    probability_dims = [dim.dim_param or dim.dim_value for dim in probabilities.type.tensor_type.shape.dim]
    assert probability_dims == ["N", len(trained.classes)]


@pytest.mark.parametrize("n_windows", [1, 7])
def test_export_accepts_any_batch_size(onnx_model: bytes, split: Split, n_windows: int) -> None:
    session = onnxruntime.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    waveform = split.eval_windows[:n_windows, np.newaxis, :].astype(np.float32)
    label, probabilities = session.run(["label", "probabilities"], {"waveform": waveform})

    assert label.shape == (n_windows,)
    assert label.dtype == np.int64
    assert probabilities.shape == (n_windows, 3)


def test_export_is_byte_identical_when_repeated(onnx_model: bytes, trained: TrainedCnn) -> None:
    assert cnn1d_to_onnx(trained) == onnx_model


def test_parity_holds_on_eval_windows(onnx_model: bytes, trained: TrainedCnn, split: Split) -> None:
    report = check_waveform_parity(onnx_model, trained, split.eval_windows)
    print(f"\ncnn1d parity on {report['windows']} windows: max abs diff {report['max_abs_diff']:.2e}")

    assert report["windows"] == len(split.eval_windows)
    assert report["max_abs_diff"] <= 1e-5
    assert report["label_mismatches"] == 0
    assert report["ok"] is True


def test_parity_fails_for_other_model(onnx_model: bytes, trained: TrainedCnn, split: Split) -> None:
    # The same network with its class rows rotated, as if the class order had been mixed up.
    other = copy.deepcopy(trained)
    rotation = [1, 2, 0]
    with torch.no_grad():
        other.model.head.weight.copy_(trained.model.head.weight[rotation])
        other.model.head.bias.copy_(trained.model.head.bias[rotation])

    report = check_waveform_parity(onnx_model, other, split.eval_windows)

    assert report["ok"] is False
    assert report["max_abs_diff"] > 1e-5
    assert report["label_mismatches"] > 0


def test_parity_rejects_wrong_window_length(onnx_model: bytes, trained: TrainedCnn, split: Split) -> None:
    with pytest.raises(ValueError, match="windows have 1024 samples per window but the model expects 2048"):
        check_waveform_parity(onnx_model, trained, split.eval_windows[:, :1024])
