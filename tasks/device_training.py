"""One device, end to end: split, train, export, check parity, register, gate.

`train_and_gate` is the unit of work of the fleet fan-out. It is plain Python
(no Prefect), so the same code runs in a mapped Prefect task of an in-process
run and in a `train-device` deployment run on a work pool.

A device's status after this step:

- ``promoted``: the challenger passed the gate and is now the champion.
- ``kept_champion``: the gate kept the current champion.
- ``skipped_unchanged``: the champion was trained from exactly these inputs
  (same dataset, features, parameters and code), so nothing was trained.
- ``failed``: an error, with its reason; the other devices carry on.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import replace
from typing import Any

import numpy as np
import onnxruntime
import pandas as pd

from tasks.dataset import code_version, load_device_frame
from tasks.fleet import DeviceConfig
from tasks.gate import GateConfig, decide
from tasks.metrics import classification_metrics
from tasks.onnx_export import check_parity
from tasks.registry import ModelRegistry
from tasks.store import Store
from tasks.train import TrainConfig, split_train_eval, train_lightgbm, training_key

logger = logging.getLogger(__name__)

PARITY_ATOL = 1e-5


def train_and_gate(
    store: Store, dataset: dict[str, Any], device: DeviceConfig, *, gate: GateConfig, num_threads: int = 1
) -> dict[str, Any]:
    """Train `device` on `dataset`, register the model and run the gate.

    Args:
        store: storage holding the dataset and the model registry.
        dataset: the dataset manifest (`tasks.dataset.read_dataset_manifest`).
        device: the device's merged fleet configuration.
        gate: promotion rule.
        num_threads: CPU threads for this device's training.

    Returns:
        The device record for the run summary: status, version, metrics, gate
        decision, parity report and seconds. Errors are raised, not recorded:
        the caller decides how a failure counts.
    """
    started = time.perf_counter()
    registry = ModelRegistry(store)
    schema = dataset["devices"][device.device_id]
    features = device.features
    if schema["feature_config_hash"] != features.config_hash():
        raise ValueError(
            f"dataset {dataset['version']} computed the features of `{device.device_id}` with another configuration "
            "than the fleet file sets; rebuild the dataset with this fleet file"
        )

    frame = load_device_frame(store, dataset, device.device_id)
    train, evaluation = split_train_eval(
        frame, eval_share=device.train.eval_share, window_length=features.window_length, hop_length=features.hop_length
    )
    train_config = _with_threads(device, num_threads)
    version = training_key(
        device_id=device.device_id,
        dataset_version=dataset["version"],
        feature_config_hash=schema["feature_config_hash"],
        config=train_config,
        code_version=code_version(),
    )
    record = {
        "device_id": device.device_id,
        "model_type": device.model_type,
        "version": version,
        "dataset_version": dataset["version"],
        "windows": {"train": len(train), "eval": len(evaluation)},
    }

    champion = registry.get_alias(device.device_id)
    if champion == version:
        record.update(status="skipped_unchanged", metrics=registry.metrics(device.device_id, version), champion=champion)
        record["seconds"] = time.perf_counter() - started
        return record

    if not registry.exists(device.device_id, version):
        _train_and_register(store, registry, dataset, device, train_config, version, train, evaluation, schema)
    manifest = registry.manifest(device.device_id, version)
    metrics = registry.metrics(device.device_id, version)
    eval_inputs = model_inputs(store, dataset, manifest, evaluation)

    champion_f1 = None
    if champion is not None:
        champion_f1 = score_champion(registry, device.device_id, champion, manifest, eval_inputs, evaluation)
    decision = decide(challenger_macro_f1=metrics["macro_f1"], champion_macro_f1=champion_f1, config=gate)
    if decision.promote:
        registry.set_alias(device.device_id, version)

    record.update(
        status="promoted" if decision.promote else "kept_champion",
        metrics=metrics,
        gate=decision.to_dict(),
        parity=manifest["parity"],
        previous_champion=champion,
        champion=version if decision.promote else champion,
        seconds=time.perf_counter() - started,
    )
    return record


def _with_threads(device: DeviceConfig, num_threads: int) -> TrainConfig:
    return replace(device.train, num_threads=num_threads)


def _train_and_register(
    store: Store,
    registry: ModelRegistry,
    dataset: dict[str, Any],
    device: DeviceConfig,
    config,
    version: str,
    train: pd.DataFrame,
    evaluation: pd.DataFrame,
    schema: dict[str, Any],
) -> None:
    """Train a challenger, export it to ONNX, check parity and register it."""
    names = schema["feature_names"]
    if device.model_type == "cnn1d":
        files, classes, input_spec, native_proba, eval_inputs, onnx_model = _train_cnn1d(store, dataset, device, config, train, evaluation)
    else:
        files, classes, input_spec, native_proba, eval_inputs, onnx_model = _train_lightgbm(device, config, train, evaluation, names)

    parity = check_parity(onnx_model, native_proba, eval_inputs, input_name=input_spec["name"], atol=PARITY_ATOL).to_dict()
    if not parity["ok"]:
        raise RuntimeError(
            f"ONNX export of `{device.device_id}` version {version} disagrees with the native model on "
            f"{parity['label_mismatches']} of {parity['windows']} evaluation windows (max probability difference "
            f"{parity['max_abs_diff']:.2e}, limit {PARITY_ATOL:.0e}); the model is not registered"
        )

    predicted = [classes[i] for i in np.argmax(native_proba, axis=1)]
    metrics = classification_metrics(list(evaluation["label"].astype(str)), predicted, labels=classes)
    metrics["eval_windows"] = len(evaluation)
    info = {
        "model_type": device.model_type,
        "dataset_version": dataset["version"],
        "feature_config": device.features.to_dict(),
        "feature_config_hash": schema["feature_config_hash"],
        "feature_names": names,
        "classes": classes,
        "input": input_spec,
        "params": config.to_dict(),
        "code_version": code_version(),
        "parity": parity,
        "eval_recordings": sorted(evaluation["recording_id"].unique().tolist()),
    }
    registry.register(device.device_id, version, files=files, metrics=metrics, info=info)
    logger.info("Registered %s model %s of device %s: macro-F1 %.3f", device.model_type, version, device.device_id, metrics["macro_f1"])


def _train_lightgbm(device, config, train, evaluation, names):
    from tasks.onnx_export import lightgbm_to_onnx

    model = train_lightgbm(train, feature_names=names, config=config)
    eval_features = evaluation[names].to_numpy(dtype=np.float32)
    onnx_model = lightgbm_to_onnx(model.model, n_features=len(names))
    input_spec = {"kind": "features", "name": "features", "dtype": "float32", "feature_names": names}
    files = {"model.txt": model.native_bytes(), "model.onnx": onnx_model}
    return files, model.classes, input_spec, model.predict_proba(eval_features), eval_features, onnx_model


def _train_cnn1d(store, dataset, device, train_config, train, evaluation):
    from tasks.cnn1d import Cnn1dConfig, cnn1d_to_onnx, train_cnn1d

    config = Cnn1dConfig.from_dict({**train_config.params, "seed": train_config.seed, "num_threads": train_config.num_threads})
    train_windows = load_windows(store, dataset, train)
    eval_windows = load_windows(store, dataset, evaluation)
    trained = train_cnn1d(
        train_windows, list(train["label"].astype(str)), eval_windows, list(evaluation["label"].astype(str)), config=config
    )
    onnx_model = cnn1d_to_onnx(trained)
    window_length = device.features.window_length
    input_spec = {"kind": "waveform", "name": "waveform", "dtype": "float32", "shape": [None, 1, window_length]}
    eval_inputs = eval_windows.astype(np.float32)[:, None, :]
    files = {"model.pt": trained.native_bytes(), "model.onnx": onnx_model}
    return files, trained.classes, input_spec, trained.predict_proba(eval_windows), eval_inputs, onnx_model


def load_windows(store: Store, dataset: dict[str, Any], rows: pd.DataFrame) -> np.ndarray:
    """Return the conditioned waveform of each row's window, shape (n, window_length), float32."""
    recordings = {r["recording_id"]: r for r in dataset["recordings"]}
    config = dataset["devices"][rows["device_id"].iloc[0]]["feature_config"]
    length = config["window_length"]
    out = np.empty((len(rows), length), dtype=np.float32)
    for recording_id, group in rows.groupby("recording_id", sort=False):
        signal = np.load(io.BytesIO(store.read_bytes(recordings[recording_id]["signal_key"])))
        positions = rows.index.get_indexer(group.index)
        for position, start in zip(positions, group["window_start"].to_numpy()):
            out[position] = signal[start : start + length]
    return out


def model_inputs(store: Store, dataset: dict[str, Any], manifest: dict[str, Any], rows: pd.DataFrame) -> np.ndarray:
    """Return the ONNX input array for `rows`, as the model's input spec describes."""
    if manifest["input"]["kind"] == "waveform":
        return load_windows(store, dataset, rows.reset_index(drop=True))[:, None, :]
    return rows[manifest["input"]["feature_names"]].to_numpy(dtype=np.float32)


def onnx_probabilities(onnx_model: bytes, input_name: str, inputs: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(["probabilities"], {input_name: inputs})
    return probabilities


def score_champion(
    registry: ModelRegistry,
    device_id: str,
    champion: str,
    challenger: dict[str, Any],
    eval_inputs: np.ndarray,
    evaluation: pd.DataFrame,
) -> float | None:
    """Return the champion's macro-F1 on the challenger's evaluation windows.

    Returns None when the champion cannot read these windows (its features or
    input differ); the gate then treats the device as having no champion, and
    the decision message says so.
    """
    champion_manifest = registry.manifest(device_id, champion)
    if champion_manifest.get("input") != challenger["input"] or champion_manifest["feature_config_hash"] != challenger["feature_config_hash"]:
        logger.warning("Champion %s of %s uses other inputs than challenger %s; gating against the floor only", champion, device_id, challenger["version"])
        return None
    onnx_model = registry.read_file(device_id, champion, "model.onnx")
    probabilities = onnx_probabilities(onnx_model, champion_manifest["input"]["name"], eval_inputs)
    classes = champion_manifest["classes"]
    predicted = [classes[i] for i in np.argmax(probabilities, axis=1)]
    labels = sorted(set(classes) | set(evaluation["label"].astype(str)))
    return classification_metrics(list(evaluation["label"].astype(str)), predicted, labels=labels)["macro_f1"]
