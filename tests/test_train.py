"""Tests of tasks.train and tasks.metrics on tasks.features window features of the real CWRU recordings."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import lightgbm
import numpy as np
import pandas as pd
import pytest
import scipy.io

from tasks.features import FeatureConfig, condition, extract_features, feature_names, frame
from tasks.metrics import classification_metrics
from tasks.train import (
    DEFAULT_LIGHTGBM_PARAMS,
    TrainConfig,
    TrainedModel,
    lightgbm_params,
    split_train_eval,
    train_lightgbm,
    training_key,
)

CWRU = Path(__file__).resolve().parents[1] / "data" / "sample" / "cwru"
DEVICE = "rig1-drive-end"
WINDOW_LENGTH = 2048
HOP_LENGTH = 1024
FEATURE_CONFIG = FeatureConfig(target_sampling_rate_hz=12_000.0, window_length=WINDOW_LENGTH, hop_length=HOP_LENGTH)
FEATURE_NAMES = feature_names(FEATURE_CONFIG)


def read_channel(path: Path, channel: str) -> np.ndarray:
    """Read the channel whose variable name ends with `channel`, such as ``X105_DE_time``."""
    contents = scipy.io.loadmat(path)
    keys = [key for key in contents if key.endswith(f"_{channel}")]
    assert len(keys) == 1, f"{path} has variables {sorted(contents)}, expected one ending with _{channel}"
    return contents[keys[0]].ravel()


def recording_frame(row: pd.Series, *, config: FeatureConfig) -> pd.DataFrame:
    """Build the window rows of one manifest row with the project's conditioning and features."""
    signal = condition(read_channel(CWRU / row["path"], row["channel"]), row["sampling_rate_hz"], config)
    features = extract_features(frame(signal, config.window_length, config.hop_length), config)

    index = np.arange(len(features))
    windows = pd.DataFrame(
        {
            "device_id": row["device_id"],
            "recording_id": row["path"],
            "recording_path": str(CWRU / row["path"]),
            "label": row["label"],
            "window_index": index,
            "window_start": index * config.hop_length,
            "recorded_at": row["recorded_at"],
        }
    )
    return pd.concat([windows, pd.DataFrame(features, columns=feature_names(config))], axis=1)


def device_frame(device_id: str, *, folder: str | None = None, hop_length: int = HOP_LENGTH) -> pd.DataFrame:
    """Build a device's window frame from the sample manifest, optionally limited to one folder."""
    manifest = pd.read_csv(CWRU / "recordings.csv")
    rows = manifest[manifest["device_id"] == device_id]
    if folder is not None:
        rows = rows[rows["path"].str.startswith(f"{folder}/")]

    config = replace(FEATURE_CONFIG, hop_length=hop_length)
    parts = [recording_frame(row, config=config) for _, row in rows.iterrows()]
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def drive_end() -> pd.DataFrame:
    """All drive-end recordings of the sample, with their recorded_at times."""
    return device_frame(DEVICE)


@pytest.fixture(scope="module")
def drive_end_12k() -> pd.DataFrame:
    """The 12 kHz drive-end fault recordings, without recorded_at, so each recording is split in time."""
    frame = device_frame(DEVICE, folder="12k_DE")
    frame["recorded_at"] = None
    return frame


@pytest.fixture(scope="module")
def trained(drive_end_12k: pd.DataFrame) -> tuple[TrainedModel, pd.DataFrame]:
    train, evaluation = split_train_eval(
        drive_end_12k, eval_share=0.2, window_length=WINDOW_LENGTH, hop_length=HOP_LENGTH
    )
    return train_lightgbm(train, feature_names=FEATURE_NAMES, config=TrainConfig()), evaluation


def ranges_overlap(train_starts: np.ndarray, eval_starts: np.ndarray, window_length: int) -> np.ndarray:
    """Return a (train, eval) matrix that is True where the sample ranges [start, start + length) intersect."""
    train_column = train_starts[:, None]
    eval_row = eval_starts[None, :]
    return (train_column < eval_row + window_length) & (eval_row < train_column + window_length)


# TrainConfig


def test_train_config_round_trip():
    config = TrainConfig(params={"n_estimators": 50}, eval_share=0.3, seed=7, num_threads=2)

    assert TrainConfig.from_dict(config.to_dict()) == config


def test_train_config_from_dict_names_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown TrainConfig keys \['learning_rate', 'shuffle'\]"):
        TrainConfig.from_dict({"eval_share": 0.2, "shuffle": True, "learning_rate": 0.1})


def test_train_config_cnn1d_keeps_own_params():
    config = TrainConfig(model_type="cnn1d", params={"epochs": 5, "num_threads": 2})

    assert config.params == {"epochs": 5, "num_threads": 2}


def test_train_config_copies_params():
    params = {"n_estimators": 50}
    config = TrainConfig(params=params)
    params["n_estimators"] = 10

    assert config.params == {"n_estimators": 50}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model_type": "xgboost"}, r"model_type 'xgboost' is not supported"),
        ({"eval_share": 0.0}, r"eval_share is 0.0"),
        ({"eval_share": 1.0}, r"eval_share is 1.0"),
        ({"num_threads": 0}, r"num_threads is 0"),
        ({"seed": "zero"}, r"seed is 'zero'"),
        ({"params": {"seed": 3}}, r"params sets \['seed'\]; set TrainConfig.seed"),
        ({"params": {"n_jobs": 4, "random_state": 1}}, r"params sets \['n_jobs', 'random_state'\]"),
    ],
)
def test_train_config_rejects_invalid_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


# split_train_eval: split inside each recording


def test_split_eval_windows_disjoint_from_training(drive_end_12k):
    train, evaluation = split_train_eval(
        drive_end_12k, eval_share=0.2, window_length=WINDOW_LENGTH, hop_length=HOP_LENGTH
    )

    for recording_id, eval_windows in evaluation.groupby("recording_id"):
        train_starts = train.loc[train["recording_id"] == recording_id, "window_start"].to_numpy()
        overlap = ranges_overlap(train_starts, eval_windows["window_start"].to_numpy(), WINDOW_LENGTH)
        assert not overlap.any(), f"{recording_id}: training windows share samples with evaluation windows"


def test_split_eval_windows_are_newest(drive_end_12k):
    train, evaluation = split_train_eval(
        drive_end_12k, eval_share=0.2, window_length=WINDOW_LENGTH, hop_length=HOP_LENGTH
    )

    for recording_id, windows in drive_end_12k.groupby("recording_id"):
        eval_starts = evaluation.loc[evaluation["recording_id"] == recording_id, "window_start"]
        train_starts = train.loc[train["recording_id"] == recording_id, "window_start"]
        assert len(eval_starts) == math.ceil(0.2 * len(windows)), recording_id
        assert eval_starts.min() > train_starts.max(), recording_id
        assert eval_starts.max() == windows["window_start"].max(), recording_id


def test_split_every_recording_in_both_sets(drive_end_12k):
    train, evaluation = split_train_eval(
        drive_end_12k, eval_share=0.2, window_length=WINDOW_LENGTH, hop_length=HOP_LENGTH
    )

    recordings = set(drive_end_12k["recording_id"])
    assert set(train["recording_id"]) == recordings
    assert set(evaluation["recording_id"]) == recordings


@pytest.mark.parametrize("hop_length", [512, 1024, 1536, 2048])
def test_split_gap_is_overlapping_windows_only(hop_length):
    frame = device_frame("rig1-fan-end", folder="12k_DE", hop_length=hop_length)
    frame["recorded_at"] = None

    train, evaluation = split_train_eval(frame, eval_share=0.2, window_length=WINDOW_LENGTH, hop_length=hop_length)

    expected_gap = math.ceil(WINDOW_LENGTH / hop_length) - 1
    for recording_id, windows in frame.groupby("recording_id"):
        in_train = (train["recording_id"] == recording_id).sum()
        in_eval = (evaluation["recording_id"] == recording_id).sum()
        assert len(windows) - in_train - in_eval == expected_gap, recording_id


def test_split_keeps_original_index(drive_end_12k):
    frame = drive_end_12k.set_index(drive_end_12k.index + 1000)

    train, evaluation = split_train_eval(frame, eval_share=0.2, window_length=WINDOW_LENGTH, hop_length=HOP_LENGTH)

    assert train.index.min() >= 1000
    assert train.equals(frame.loc[train.index])
    assert evaluation.equals(frame.loc[evaluation.index])


def test_split_ignores_row_order(drive_end_12k):
    shuffled = drive_end_12k.sample(frac=1.0, random_state=3)

    train, evaluation = split_train_eval(
        drive_end_12k, eval_share=0.2, window_length=WINDOW_LENGTH, hop_length=HOP_LENGTH
    )
    train_shuffled, eval_shuffled = split_train_eval(
        shuffled, eval_share=0.2, window_length=WINDOW_LENGTH, hop_length=HOP_LENGTH
    )

    assert sorted(train.index) == sorted(train_shuffled.index)
    assert sorted(evaluation.index) == sorted(eval_shuffled.index)


def test_split_single_window_recording_trains_only(drive_end_12k):
    first = drive_end_12k["recording_id"].iloc[0]
    frame = drive_end_12k[(drive_end_12k["recording_id"] != first) | (drive_end_12k["window_index"] == 0)]

    train, evaluation = split_train_eval(frame, eval_share=0.2, window_length=WINDOW_LENGTH, hop_length=HOP_LENGTH)

    assert (train["recording_id"] == first).sum() == 1
    assert (evaluation["recording_id"] == first).sum() == 0


# split_train_eval: holding out the newest recordings


def newest_recordings(device_id: str) -> dict[str, set[str]]:
    """Return, per label with recordings from two or more times, the recordings at the newest time."""
    manifest = pd.read_csv(CWRU / "recordings.csv")
    rows = manifest[manifest["device_id"] == device_id]
    newest = {}
    for label, label_rows in rows.groupby("label"):
        times = pd.to_datetime(label_rows["recorded_at"])
        if times.nunique() >= 2:
            newest[label] = set(label_rows.loc[times == times.max(), "path"])
    return newest


def test_split_holds_out_newest_recordings(drive_end):
    train, evaluation = split_train_eval(drive_end, eval_share=0.2, window_length=WINDOW_LENGTH, hop_length=HOP_LENGTH)

    for label, expected in newest_recordings(DEVICE).items():
        held_out = set(evaluation.loc[evaluation["label"] == label, "recording_id"])
        assert held_out == expected, label
        assert not set(train["recording_id"]).intersection(expected), label


def test_split_holds_out_whole_recordings(drive_end):
    train, evaluation = split_train_eval(drive_end, eval_share=0.2, window_length=WINDOW_LENGTH, hop_length=HOP_LENGTH)

    ball = drive_end[drive_end["recording_id"] == "12k_DE/B028_0.mat"]
    assert evaluation.index.isin(ball.index).sum() == len(ball)


def test_split_holds_out_copies_with_same_recorded_at(drive_end):
    train, evaluation = split_train_eval(drive_end, eval_share=0.2, window_length=WINDOW_LENGTH, hop_length=HOP_LENGTH)

    copies = {"48k_DE/IR014_0.mat", "0HP/48k_Drive_End_IR014_0_174.mat"}
    assert copies <= set(evaluation["recording_id"])
    assert not copies.intersection(train["recording_id"])


def test_split_single_recording_label_splits_windows(drive_end):
    train, evaluation = split_train_eval(drive_end, eval_share=0.2, window_length=WINDOW_LENGTH, hop_length=HOP_LENGTH)

    normal = drive_end[drive_end["label"] == "normal"]
    eval_normal = evaluation[evaluation["label"] == "normal"]
    train_normal = train[train["label"] == "normal"]
    assert len(eval_normal) == math.ceil(0.2 * len(normal))
    assert eval_normal["window_start"].min() >= train_normal["window_start"].max() + WINDOW_LENGTH


def test_split_missing_recorded_at_splits_windows(drive_end):
    frame = drive_end.copy()
    frame.loc[frame["recording_id"] == "12k_DE/B007_0.mat", "recorded_at"] = None

    train, evaluation = split_train_eval(frame, eval_share=0.2, window_length=WINDOW_LENGTH, hop_length=HOP_LENGTH)

    ball_recordings = set(frame.loc[frame["label"] == "ball", "recording_id"])
    assert set(evaluation.loc[evaluation["label"] == "ball", "recording_id"]) == ball_recordings


# split_train_eval: bad input


def test_split_names_labels_without_training_windows(drive_end):
    with pytest.raises(ValueError, match=r"device 'rig1-drive-end': labels \['ball', 'inner_race', 'normal', 'outer_race'\]"):
        split_train_eval(drive_end, eval_share=0.99, window_length=WINDOW_LENGTH, hop_length=HOP_LENGTH)


def without_column(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["window_start"])


def with_two_devices(frame: pd.DataFrame) -> pd.DataFrame:
    other = frame.head(3).assign(device_id="rig2")
    return pd.concat([frame, other], ignore_index=True)


def with_bad_recorded_at(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(recorded_at=np.where(frame["recording_id"] == "12k_DE/B007_0.mat", "last tuesday", frame["recorded_at"]))


def with_two_recorded_at(frame: pd.DataFrame) -> pd.DataFrame:
    changed = frame.copy()
    changed.loc[(changed["recording_id"] == "12k_DE/B007_0.mat") & (changed["window_index"] == 0), "recorded_at"] = "2001-01-01T00:00:00"
    return changed


def with_repeated_window(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([frame, frame.head(1)], ignore_index=True)


@pytest.mark.parametrize(
    ("change", "options", "message"),
    [
        (without_column, {}, r"no columns \['window_start'\]"),
        (lambda frame: frame.head(0), {}, r"the frame is empty"),
        (with_two_devices, {}, r"devices \['rig1-drive-end', 'rig2'\]; split one device at a time"),
        (lambda frame: frame, {"hop_length": 512}, r"window_start is not window_index \* hop_length \(hop_length=512\)"),
        (lambda frame: frame, {"eval_share": 0.0}, r"eval_share is 0.0"),
        (lambda frame: frame, {"eval_share": 1.5}, r"eval_share is 1.5"),
        (lambda frame: frame, {"window_length": 0}, r"window_length 0 and hop_length 1024 must be >= 1"),
        (with_bad_recorded_at, {}, r"recording '12k_DE/B007_0.mat' has recorded_at 'last tuesday'"),
        (with_two_recorded_at, {}, r"recordings \['12k_DE/B007_0.mat'\] have several recorded_at values"),
        (with_repeated_window, {}, r"list a window_index twice"),
    ],
)
def test_split_rejects_bad_input(drive_end, change, options, message):
    arguments = {"eval_share": 0.2, "window_length": WINDOW_LENGTH, "hop_length": HOP_LENGTH, **options}

    with pytest.raises(ValueError, match=message):
        split_train_eval(change(drive_end), **arguments)


# train_lightgbm


def test_train_macro_f1_well_above_chance(trained):
    model, evaluation = trained

    predicted = model.predict_labels(evaluation[FEATURE_NAMES].to_numpy())
    metrics = classification_metrics(evaluation["label"].tolist(), predicted, labels=model.classes)

    assert model.classes == ["ball", "inner_race", "outer_race"]
    assert metrics["macro_f1"] > 0.9, metrics


def test_train_fits_class_indices(trained):
    model, _ = trained

    np.testing.assert_array_equal(model.model.classes_, np.arange(3))


def test_predict_labels_returns_names(trained):
    model, evaluation = trained

    predicted = model.predict_labels(evaluation[FEATURE_NAMES].to_numpy())

    assert set(predicted) <= set(model.classes)
    assert len(predicted) == len(evaluation)


def test_train_reproducible_probabilities(drive_end_12k, trained):
    model, evaluation = trained
    train, _ = split_train_eval(drive_end_12k, eval_share=0.2, window_length=WINDOW_LENGTH, hop_length=HOP_LENGTH)

    again = train_lightgbm(train.sample(frac=1.0, random_state=5), feature_names=FEATURE_NAMES, config=TrainConfig())

    features = evaluation[FEATURE_NAMES].to_numpy()
    np.testing.assert_array_equal(again.predict_proba(features), model.predict_proba(features))
    assert again.native_bytes() == model.native_bytes()


def test_train_seed_changes_bagged_model(drive_end_12k, trained):
    model, evaluation = trained
    train, _ = split_train_eval(drive_end_12k, eval_share=0.2, window_length=WINDOW_LENGTH, hop_length=HOP_LENGTH)
    bagging = {"subsample": 0.7, "subsample_freq": 1}

    first = train_lightgbm(train, feature_names=FEATURE_NAMES, config=TrainConfig(params=bagging, seed=1))
    second = train_lightgbm(train, feature_names=FEATURE_NAMES, config=TrainConfig(params=bagging, seed=2))

    features = evaluation[FEATURE_NAMES].to_numpy()
    assert not np.array_equal(first.predict_proba(features), second.predict_proba(features))


def row_across_float32_rounding(model: TrainedModel, row: np.ndarray) -> np.ndarray:
    """Move one feature of `row` just above a root split threshold, where float32 rounding lands on or below it."""
    for tree in model.model.booster_.dump_model()["tree_info"]:
        root = tree["tree_structure"]
        threshold = root["threshold"]
        # A quarter of a float32 step above the threshold, so float32 rounding can
        # bring the value back to or below it. float() keeps the comparison in float64.
        above = threshold + 0.25 * float(np.spacing(np.float32(threshold)))
        if float(np.float32(above)) <= threshold:
            moved = row.astype(np.float64).copy()
            moved[0, root["split_feature"]] = above
            return moved
    pytest.fail("no root split threshold rounds down in float32; pick another row construction")


def test_predict_proba_casts_to_float32(trained):
    model, evaluation = trained
    row = row_across_float32_rounding(model, evaluation[FEATURE_NAMES].to_numpy()[:1])
    booster = model.model.booster_

    probabilities = model.predict_proba(row)

    assert not np.array_equal(booster.predict(row), booster.predict(row.astype(np.float32)))
    np.testing.assert_array_equal(probabilities, booster.predict(row.astype(np.float32)))


def test_predict_proba_rows_sum_to_one(trained):
    model, evaluation = trained

    probabilities = model.predict_proba(evaluation[FEATURE_NAMES].to_numpy())

    assert probabilities.shape == (len(evaluation), 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)


def test_native_bytes_loads_as_booster(trained):
    model, evaluation = trained
    features = evaluation[FEATURE_NAMES].to_numpy(dtype=np.float32)

    booster = lightgbm.Booster(model_str=model.native_bytes().decode("utf-8"))

    np.testing.assert_allclose(booster.predict(features), model.predict_proba(features), rtol=1e-12)
    assert booster.feature_name() == FEATURE_NAMES


def test_predict_rejects_wrong_feature_count(trained):
    model, evaluation = trained

    with pytest.raises(ValueError, match=rf"shape \(\d+, 3\) but the model expects \(n_windows, {len(FEATURE_NAMES)}\)"):
        model.predict_proba(evaluation[FEATURE_NAMES[:3]].to_numpy())


def test_train_two_labels_keeps_one_column_per_class(drive_end_12k):
    frame = drive_end_12k[drive_end_12k["label"].isin(["ball", "outer_race"])]
    train, evaluation = split_train_eval(frame, eval_share=0.2, window_length=WINDOW_LENGTH, hop_length=HOP_LENGTH)

    model = train_lightgbm(train, feature_names=FEATURE_NAMES, config=TrainConfig())

    assert model.classes == ["ball", "outer_race"]
    assert model.predict_proba(evaluation[FEATURE_NAMES].to_numpy()).shape == (len(evaluation), 2)


def test_train_applies_param_overrides(drive_end_12k):
    train, _ = split_train_eval(drive_end_12k, eval_share=0.2, window_length=WINDOW_LENGTH, hop_length=HOP_LENGTH)

    model = train_lightgbm(train, feature_names=FEATURE_NAMES, config=TrainConfig(params={"n_estimators": 7}, seed=4))

    assert model.model.booster_.current_iteration() == 7
    assert model.model.get_params()["random_state"] == 4
    assert model.model.get_params()["num_leaves"] == DEFAULT_LIGHTGBM_PARAMS["num_leaves"]


def test_lightgbm_params_set_threads_and_num_class():
    params = lightgbm_params(TrainConfig(num_threads=2), n_classes=2)

    assert params["n_jobs"] == 2
    assert params["num_class"] == 2
    assert params["objective"] == "multiclass"


@pytest.mark.parametrize(
    ("change", "features", "message"),
    [
        (lambda frame: frame[frame["label"] == "ball"], FEATURE_NAMES, r"only the labels \['ball'\]; a fault classifier needs at least two"),
        (lambda frame: frame.head(0), FEATURE_NAMES, r"the training frame has no windows"),
        (lambda frame: frame, [*FEATURE_NAMES, "spectral_flux"], r"no feature columns \['spectral_flux'\]"),
        (lambda frame: frame, [], r"feature_names is empty"),
        (lambda frame: frame.drop(columns=["window_index"]), FEATURE_NAMES, r"no columns \['window_index'\]"),
    ],
)
def test_train_rejects_bad_input(drive_end_12k, change, features, message):
    with pytest.raises(ValueError, match=message):
        train_lightgbm(change(drive_end_12k), feature_names=features, config=TrainConfig())


def test_train_lightgbm_rejects_other_model_type(drive_end_12k):
    with pytest.raises(ValueError, match=r"train_lightgbm got a config for model_type 'cnn1d'"):
        train_lightgbm(drive_end_12k, feature_names=FEATURE_NAMES, config=TrainConfig(model_type="cnn1d"))


# training_key

KEY_INPUTS = {
    "device_id": DEVICE,
    "dataset_version": "ds-1",
    "feature_config_hash": "fc-1",
    "config": TrainConfig(),
    "code_version": "0.1.0",
}


def test_training_key_same_inputs_same_key():
    assert training_key(**KEY_INPUTS) == training_key(**{**KEY_INPUTS, "config": TrainConfig()})
    assert len(training_key(**KEY_INPUTS)) == 16


@pytest.mark.parametrize(
    "changed",
    [
        {"device_id": "rig1-fan-end"},
        {"dataset_version": "ds-2"},
        {"feature_config_hash": "fc-2"},
        {"code_version": "0.2.0"},
        {"config": TrainConfig(seed=1)},
        {"config": TrainConfig(params={"learning_rate": 0.1})},
        {"config": TrainConfig(eval_share=0.3)},
        {"config": TrainConfig(model_type="cnn1d")},
    ],
)
def test_training_key_changes_with_input(changed):
    assert training_key(**{**KEY_INPUTS, **changed}) != training_key(**KEY_INPUTS)


# classification_metrics


def test_metrics_match_hand_computed_values():
    y_true = ["ball", "ball", "ball", "inner_race", "inner_race", "outer_race"]
    y_pred = ["ball", "ball", "inner_race", "inner_race", "ball", "ball"]
    labels = ["ball", "inner_race", "outer_race", "normal"]

    metrics = classification_metrics(y_true, y_pred, labels=labels)

    # ball: 2 hits of 4 predicted and 3 true; inner_race: 1 of 2 and 2;
    # outer_race: never predicted; normal: absent from both, so not in macro-F1.
    assert metrics["accuracy"] == pytest.approx(3 / 6)
    assert metrics["per_class"]["ball"] == pytest.approx({"precision": 0.5, "recall": 2 / 3, "f1": 4 / 7, "support": 3})
    assert metrics["per_class"]["inner_race"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert metrics["per_class"]["outer_race"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert metrics["per_class"]["normal"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert metrics["macro_f1"] == pytest.approx((4 / 7 + 0.5 + 0.0) / 3)
    assert metrics["confusion_matrix"] == [[2, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert metrics["labels"] == labels


def test_metrics_perfect_prediction():
    metrics = classification_metrics(["ball", "normal"], ["ball", "normal"], labels=["ball", "normal"])

    assert metrics["accuracy"] == 1.0
    assert metrics["macro_f1"] == 1.0


@pytest.mark.parametrize(
    ("y_true", "y_pred", "labels", "message"),
    [
        (["ball"], ["ball", "ball"], ["ball"], r"y_true has 1 labels but y_pred has 2"),
        ([], [], ["ball"], r"empty"),
        (["ball"], ["cage"], ["ball"], r"labels \['cage'\] occur in y_true or y_pred but not in labels"),
        (["ball"], ["ball"], ["ball", "ball"], r"contain duplicates"),
    ],
)
def test_metrics_reject_bad_input(y_true, y_pred, labels, message):
    with pytest.raises(ValueError, match=message):
        classification_metrics(y_true, y_pred, labels=labels)
