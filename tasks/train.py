"""Per-device training: a leakage-free train/evaluation split and LightGBM fault models.

Plain functions, no Prefect: the training flow wraps them. One device's frame
has one row per window, with the columns ``device_id``, ``recording_id``,
``recording_path``, ``label``, ``window_index``, ``window_start``,
``recorded_at`` and the float feature columns.

Overlapping windows share samples, so a random row split would put the same
samples in training and evaluation. `split_train_eval` holds out the newest
time segment of each recording, or the newest recordings, and drops the
training windows that overlap an evaluation window.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, fields
from typing import Any

import lightgbm
import numpy as np
import pandas as pd

# Model families a TrainConfig may name. `train_lightgbm` trains "lightgbm" and
# `tasks.cnn1d` trains "cnn1d", a network on the raw windows.
MODEL_TYPES = ("lightgbm", "cnn1d")

DEFAULT_LIGHTGBM_PARAMS: dict[str, Any] = {
    "objective": "multiclass",
    "n_estimators": 200,
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_child_samples": 5,
    "deterministic": True,
    "force_row_wise": True,
    "verbose": -1,
}

# LightGBM 4.7 aliases of its seed and thread-count parameters. TrainConfig.seed
# and TrainConfig.num_threads set these, so `params` must not set them too.
_SEED_ALIASES = ("seed", "random_seed", "random_state")
_THREAD_ALIASES = ("num_threads", "num_thread", "nthread", "nthreads", "n_jobs")
# Objectives for which LightGBM predicts one probability column per class.
_MULTICLASS_OBJECTIVES = ("multiclass", "softmax", "multiclassova", "multiclass_ova", "ova", "ovr")

SPLIT_COLUMNS = ("device_id", "recording_id", "label", "window_index", "window_start", "recorded_at")

_TRAIN, _EVAL, _GAP = 0, 1, 2


@dataclass(frozen=True)
class TrainConfig:
    """Settings for training one device's model.

    Args:
        model_type: model family, one of `MODEL_TYPES`.
        params: parameters of the model family. For ``"lightgbm"`` they
            override `DEFAULT_LIGHTGBM_PARAMS`.
        eval_share: share of each recording's windows, or of a label's
            recordings, held out for evaluation (the newest ones), in (0, 1).
        seed: random seed of the model.
        num_threads: CPU threads LightGBM uses. It is part of the model
            version because LightGBM results may differ with the thread count.
    """

    model_type: str = "lightgbm"
    params: dict[str, Any] = field(default_factory=dict)
    eval_share: float = 0.2
    seed: int = 0
    num_threads: int = 1

    def __post_init__(self) -> None:
        # A private copy, so that later changes to the caller's dict do not change a frozen config.
        object.__setattr__(self, "params", dict(self.params))

        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"TrainConfig.model_type {self.model_type!r} is not supported; use one of {list(MODEL_TYPES)}.")
        if not (0.0 < self.eval_share < 1.0):
            raise ValueError(f"TrainConfig.eval_share is {self.eval_share}; set a share between 0 and 1, such as 0.2.")
        if not (isinstance(self.num_threads, int) and self.num_threads >= 1):
            raise ValueError(f"TrainConfig.num_threads is {self.num_threads!r}; set a whole number >= 1.")
        if not isinstance(self.seed, int):
            raise ValueError(f"TrainConfig.seed is {self.seed!r}; set a whole number.")

        owned = sorted(set(self.params).intersection(_SEED_ALIASES + _THREAD_ALIASES))
        if self.model_type == "lightgbm" and owned:
            raise ValueError(
                f"TrainConfig.params sets {owned}; set TrainConfig.seed and TrainConfig.num_threads instead."
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_type": self.model_type,
            "params": dict(self.params),
            "eval_share": self.eval_share,
            "seed": self.seed,
            "num_threads": self.num_threads,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build a config from `to_dict` output; missing keys take their defaults.

        Raises:
            ValueError: when `data` has keys that are not TrainConfig fields.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data).difference(known))
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {unknown}; valid keys are {sorted(known)}.")
        return cls(**data)


def split_train_eval(
    frame: pd.DataFrame, *, eval_share: float, window_length: int, hop_length: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split one device's windows into training and evaluation sets without leakage.

    For each label, the evaluation set is one of:

    * the newest recordings, when every window of the label has
      ``recorded_at`` and the label has recordings from at least two distinct
      times. The newest ``ceil(eval_share * n)`` of the ``n`` distinct times are
      held out, whole recordings, at least one. Recordings that share a
      ``recorded_at`` are held out together, because they are usually copies of
      one acquisition.
    * otherwise, the newest time segment of each recording: its last
      ``ceil(eval_share * n_windows)`` windows by ``window_start``, at least
      one. A recording with fewer than 2 windows goes to training only. The
      training windows whose samples overlap an evaluation window of the same
      recording are dropped, so no evaluation sample is seen in training.

    The result depends only on the rows, not on their order.

    Args:
        frame: the windows of one device.
        eval_share: share held out, in (0, 1).
        window_length: window length in samples, as the dataset was built.
        hop_length: hop between windows in samples, as the dataset was built.

    Returns:
        ``(train, evaluation)``: rows of `frame` in their original order, with
        their original index. Dropped overlap windows are in neither.

    Raises:
        ValueError: when the frame is empty, lacks a column, contains several
            devices, has windows that do not match `hop_length`, or leaves a
            label without training windows.
    """
    device_id = _check_split_inputs(frame, eval_share=eval_share, window_length=window_length, hop_length=hop_length)
    rows = frame.reset_index(drop=True)

    roles = np.full(len(rows), _TRAIN, dtype=np.int8)
    for label, label_rows in rows.groupby("label", sort=True):
        held_out = _held_out_recordings(label_rows, eval_share=eval_share, device_id=device_id)
        if held_out:
            roles[label_rows.index[label_rows["recording_id"].isin(held_out)]] = _EVAL
            continue
        for _, windows in label_rows.groupby("recording_id", sort=True):
            roles[windows.index] = _window_roles(windows, eval_share=eval_share, window_length=window_length)

    _check_training_labels(rows, roles, device_id=device_id, eval_share=eval_share)
    return frame.iloc[roles == _TRAIN], frame.iloc[roles == _EVAL]


def _check_split_inputs(frame: pd.DataFrame, *, eval_share: float, window_length: int, hop_length: int) -> str:
    if not (0.0 < eval_share < 1.0):
        raise ValueError(f"eval_share is {eval_share}; set a share between 0 and 1, such as 0.2.")
    if window_length < 1 or hop_length < 1:
        raise ValueError(
            f"window_length {window_length} and hop_length {hop_length} must be >= 1; pass the values the dataset was built with."
        )

    missing = [column for column in SPLIT_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"the frame has no columns {missing}; pass a device frame from the dataset, which has {list(SPLIT_COLUMNS)}.")
    if frame.empty:
        raise ValueError("the frame is empty; check that the dataset contains windows of this device.")

    devices = sorted(frame["device_id"].astype(str).unique())
    if len(devices) != 1:
        raise ValueError(f"the frame contains windows of devices {devices}; split one device at a time.")

    _check_window_layout(frame, device_id=devices[0], hop_length=hop_length)
    return devices[0]


def _check_window_layout(frame: pd.DataFrame, *, device_id: str, hop_length: int) -> None:
    """Check that, within each recording, window_start is window_index * hop_length plus a fixed offset."""
    offsets = frame["window_start"].astype("int64") - frame["window_index"].astype("int64") * hop_length
    per_recording = offsets.groupby(frame["recording_id"]).nunique()
    mismatched = sorted(per_recording.index[per_recording > 1])
    if mismatched:
        raise ValueError(
            f"device {device_id!r}: in recordings {mismatched}, window_start is not window_index * hop_length "
            f"(hop_length={hop_length}) plus a fixed offset; pass the hop_length the dataset was built with."
        )

    duplicated = frame.duplicated(["recording_id", "window_index"])
    if duplicated.any():
        recordings = sorted(frame.loc[duplicated, "recording_id"].unique())
        raise ValueError(f"device {device_id!r}: recordings {recordings} list a window_index twice; rebuild the dataset.")


def _held_out_recordings(label_rows: pd.DataFrame, *, eval_share: float, device_id: str) -> set[str]:
    """Return the newest recordings of a label, or an empty set when the windows must be split instead."""
    if label_rows["recorded_at"].isna().any():
        return set()

    times = _recording_times(label_rows, device_id=device_id)
    distinct = sorted(times.unique())
    if len(distinct) < 2:
        return set()

    newest = distinct[-_held_out_count(eval_share, len(distinct)) :]
    return set(times.index[times.isin(newest)])


def _recording_times(label_rows: pd.DataFrame, *, device_id: str) -> pd.Series:
    """Return the parsed recorded_at of each recording of a label; naive times are taken as UTC."""
    per_recording = label_rows.groupby("recording_id", sort=True)["recorded_at"]
    inconsistent = sorted(per_recording.nunique().loc[lambda counts: counts > 1].index)
    if inconsistent:
        raise ValueError(
            f"device {device_id!r}: recordings {inconsistent} have several recorded_at values; "
            "give each recording one recorded_at."
        )

    values = per_recording.first()
    parsed = {}
    for recording_id, value in values.items():
        try:
            parsed[recording_id] = pd.to_datetime(value, format="ISO8601", utc=True)
        except ValueError as error:
            raise ValueError(
                f"device {device_id!r}: recording {recording_id!r} has recorded_at {value!r}, which is not an "
                "ISO 8601 time; fix it in the recordings manifest."
            ) from error
    return pd.Series(parsed)


def _window_roles(windows: pd.DataFrame, *, eval_share: float, window_length: int) -> np.ndarray:
    """Mark the newest windows of one recording as evaluation and the windows overlapping them as gap."""
    roles = np.full(len(windows), _TRAIN, dtype=np.int8)
    if len(windows) < 2:
        return roles

    starts = windows["window_start"].to_numpy(dtype=np.int64)
    newest_first = np.argsort(-starts, kind="stable")
    held_out = newest_first[: _held_out_count(eval_share, len(windows))]
    roles[held_out] = _EVAL

    # Every training window starts before the first evaluation window, so it
    # overlaps an evaluation window exactly when it ends after that start.
    first_eval_start = starts[held_out].min()
    roles[(roles == _TRAIN) & (starts + window_length > first_eval_start)] = _GAP
    return roles


def _held_out_count(eval_share: float, total: int) -> int:
    # Rounding first keeps float error from adding one, as in ceil(0.1 * 30) == 4.
    return max(1, math.ceil(round(eval_share * total, 9)))


def _check_training_labels(rows: pd.DataFrame, roles: np.ndarray, *, device_id: str, eval_share: float) -> None:
    trained = set(rows.loc[roles == _TRAIN, "label"])
    starved = sorted(set(rows["label"]).difference(trained))
    if starved:
        raise ValueError(
            f"device {device_id!r}: labels {starved} have no training windows left after holding out "
            f"eval_share={eval_share}; lower eval_share or add recordings of those labels."
        )


@dataclass
class TrainedModel:
    """A fitted classifier with the label and feature order it expects.

    Args:
        model: the fitted `lightgbm.LGBMClassifier`.
        classes: label of each `predict_proba` column, sorted by name.
        feature_names: feature columns, in the order of the feature matrix.
    """

    model: lightgbm.LGBMClassifier
    classes: list[str]
    feature_names: list[str]

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Return class probabilities, one row per window and one column per class.

        Features are cast to float32 first, as in training and in the ONNX model.
        """
        return self.model.predict_proba(self._as_float32_frame(features))

    def predict_labels(self, features: np.ndarray) -> list[str]:
        """Return the most probable label of each window."""
        best = np.argmax(self.predict_proba(features), axis=1)
        return [self.classes[i] for i in best]

    def native_bytes(self) -> bytes:
        """Return the LightGBM booster as model text, the content of ``model.txt``."""
        return self.model.booster_.model_to_string().encode("utf-8")

    def _as_float32_frame(self, features: np.ndarray) -> pd.DataFrame:
        # A frame with the training column names, because the classifier was fitted
        # on one and scikit-learn warns when the names are missing at prediction.
        matrix = np.asarray(features, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[1] != len(self.feature_names):
            raise ValueError(
                f"features have shape {matrix.shape} but the model expects (n_windows, {len(self.feature_names)}) "
                f"with columns {self.feature_names}; select those columns in that order."
            )
        return pd.DataFrame(matrix, columns=self.feature_names, copy=False)


def train_lightgbm(train: pd.DataFrame, *, feature_names: list[str], config: TrainConfig) -> TrainedModel:
    """Fit a LightGBM classifier on one device's training windows.

    Features are cast to float32, the input type of the ONNX model, so native
    and ONNX predictions start from the same numbers. Rows are sorted by recording
    and window first, so the model does not depend on the row order of `train`.
    Runs on ``config.num_threads`` threads. The classifier is fitted on class
    indices, so ``model.classes_`` is ``0..n-1`` and `TrainedModel.classes`
    contains the label names in that order.

    Args:
        train: training windows with a ``label`` column and the feature columns.
        feature_names: the feature columns, in model input order.
        config: the training configuration; ``params`` override
            `DEFAULT_LIGHTGBM_PARAMS`.

    Returns:
        The fitted model.

    Raises:
        ValueError: when the frame is empty, lacks a feature column, has fewer
            than two labels, or the config is not for LightGBM.
    """
    _check_training_frame(train, feature_names=feature_names, config=config)

    ordered = train.sort_values(["recording_id", "window_index"], kind="stable")
    features = ordered[list(feature_names)].astype(np.float32).reset_index(drop=True)
    labels = ordered["label"].astype(str).tolist()
    classes = sorted(set(labels))
    # The booster learns class indices, so the ONNX label output indexes `classes`.
    position = {label: i for i, label in enumerate(classes)}
    targets = np.array([position[label] for label in labels], dtype=np.int64)

    model = lightgbm.LGBMClassifier(**lightgbm_params(config, n_classes=len(classes)))
    model.fit(features, targets)
    return TrainedModel(model=model, classes=classes, feature_names=list(feature_names))


def lightgbm_params(config: TrainConfig, *, n_classes: int) -> dict[str, Any]:
    """Return the `LGBMClassifier` arguments for a config: defaults, overrides, seed and threads."""
    params = {**DEFAULT_LIGHTGBM_PARAMS, **config.params, "random_state": config.seed, "n_jobs": config.num_threads}

    # The scikit-learn wrapper sets num_class only for more than two classes, but a
    # multiclass objective needs it for two as well.
    if params.get("objective") in _MULTICLASS_OBJECTIVES:
        params["num_class"] = n_classes
    return params


def _check_training_frame(train: pd.DataFrame, *, feature_names: list[str], config: TrainConfig) -> None:
    if config.model_type != "lightgbm":
        raise ValueError(f"train_lightgbm got a config for model_type {config.model_type!r}; use the trainer for that type.")
    if not feature_names:
        raise ValueError("feature_names is empty; pass the feature columns of the dataset.")

    missing = [name for name in ("label", "recording_id", "window_index") if name not in train.columns]
    if missing:
        raise ValueError(f"the training frame has no columns {missing}; pass training windows from split_train_eval.")
    missing_features = [name for name in feature_names if name not in train.columns]
    if missing_features:
        raise ValueError(
            f"the training frame has no feature columns {missing_features}; pass the feature names of this dataset."
        )
    if train.empty:
        raise ValueError("the training frame has no windows; check the split and the dataset.")

    labels = sorted(train["label"].astype(str).unique())
    if len(labels) < 2:
        devices = sorted(train["device_id"].astype(str).unique()) if "device_id" in train.columns else []
        raise ValueError(
            f"the training windows of devices {devices} have only the labels {labels}; a fault classifier needs "
            "at least two labels. Add recordings of another condition, such as normal."
        )


def training_key(
    *, device_id: str, dataset_version: str, feature_config_hash: str, config: TrainConfig, code_version: str
) -> str:
    """Return the model version for a training run: a hash of everything that shapes the model.

    The same inputs give the same key, so a device whose data, features, config
    and code did not change can skip training. For ``"lightgbm"`` the key also
    covers the resolved parameters and the LightGBM version, so a change of
    defaults or library gives a new version.

    Returns:
        16 hex digits (the start of a sha256).
    """
    payload = {
        "device_id": device_id,
        "dataset_version": dataset_version,
        "feature_config_hash": feature_config_hash,
        # Threads follow the pool and the fleet's concurrency, not the model:
        # with deterministic=True LightGBM grows the same trees on any count.
        "config": {k: v for k, v in config.to_dict().items() if k != "num_threads"},
        "code_version": code_version,
    }
    if config.model_type == "lightgbm":
        payload["resolved_params"] = {**DEFAULT_LIGHTGBM_PARAMS, **config.params}
        payload["lightgbm_version"] = lightgbm.__version__
    encoded = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(encoded).hexdigest()[:16]
