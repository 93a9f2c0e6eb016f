"""Run a verified bundle on raw recordings on the edge box.

`EdgeModel.load` verifies the bundle's signature and hashes before anything in
it is used, then checks that this runtime computes the model input the way the
training did. Windows are computed exactly as in training: `condition` (DC
removal and resampling), `frame`, then `extract_features` for feature models,
and the input is cast to float32.

Two input kinds are supported, chosen by the manifest's ``input_spec.kind``:

- ``features``: a ``(n_windows, n_features)`` float32 matrix of window features.
- ``waveform``: the conditioned windows as a ``(n_windows, 1, window_length)``
  float32 array, for models such as a 1-D CNN.

Every model must have an output named ``probabilities`` of shape
``(n_windows, n_classes)``, in the order of the manifest's ``classes``.

Neither this module nor anything it imports loads Prefect, Dask, LightGBM or
torch, so the edge box needs only the runtime dependencies: numpy, scipy,
onnxruntime, cryptography and what `tasks.readers` reads files with.
"""

from __future__ import annotations

import hashlib
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
from onnxruntime.capi import onnxruntime_pybind11_state as onnxruntime_errors

from edge.bundle import MODEL_FILE, BundleError, verify_bundle
from edge.layout import find_trusted_keys, resolve_bundle
from tasks.features import FeatureConfig, condition, extract_features, feature_names, frame
from tasks.readers import Signal, read_signal_file
from tasks.recordings import RecordingError

PROBABILITIES_OUTPUT = "probabilities"
INPUT_KINDS = ("features", "waveform")

_SESSION_ERRORS = (
    onnxruntime_errors.Fail,
    onnxruntime_errors.InvalidArgument,
    onnxruntime_errors.InvalidGraph,
    onnxruntime_errors.InvalidProtobuf,
    onnxruntime_errors.NoModel,
    onnxruntime_errors.NotImplemented,
    onnxruntime_errors.RuntimeException,
)


@dataclass(frozen=True)
class EdgeModel:
    """A verified bundle, ready to classify recordings.

    Attributes:
        bundle: the bundle folder.
        manifest: the verified manifest.
        config: the feature settings the model was trained with.
        session: the onnxruntime session of model.onnx.
    """

    bundle: Path
    manifest: dict[str, Any] = field(repr=False)
    config: FeatureConfig = field(repr=False)
    session: onnxruntime.InferenceSession = field(repr=False)

    @classmethod
    def load(cls, bundle: Path, *, trusted_keys: Path | None = None) -> EdgeModel:
        """Verify a bundle and load its model.

        Args:
            bundle: a bundle folder, or a device folder whose `current` names
                the bundle in service.
            trusted_keys: folder of trusted public keys. Defaults to the
                `trusted_keys` folder of the edge root the bundle is in.

        Raises:
            BundleError: verification failed, or the bundle needs an input
                or feature code that this runtime does not have (reason
                ``unsupported``).
            LayoutError: the bundle or device folder does not exist, or the
                trusted keys cannot be found.
        """
        folder = resolve_bundle(Path(bundle))
        keys = find_trusted_keys(folder) if trusted_keys is None else Path(trusted_keys)
        manifest = verify_bundle(folder, trusted_keys=keys)

        config = _feature_config(manifest, folder)
        _check_input_spec(manifest, config, folder)
        session = _open_session(_read_model(folder, manifest), manifest, folder)
        return cls(bundle=folder, manifest=manifest, config=config, session=session)

    @property
    def device_id(self) -> str:
        """The device the model is for."""
        return self.manifest["device_id"]

    @property
    def version(self) -> str:
        """The model version."""
        return self.manifest["version"]

    @property
    def classes(self) -> list[str]:
        """Class names in the order of the probability columns."""
        return self.manifest["classes"]

    def predict_signal(
        self,
        values: np.ndarray,
        *,
        sampling_rate_hz: float,
        shaft_speed_rpm: float | None = None,
    ) -> dict[str, Any]:
        """Classify every window of one channel's raw samples.

        Cost: the whole signal is processed at once. `frame` returns a view,
        but a feature model's `extract_features` makes several float64
        temporaries the size of all windows, which is twice the signal at
        the default 50 % overlap.

        Args:
            values: raw 1-D samples as recorded.
            sampling_rate_hz: rate at which `values` was recorded.
            shaft_speed_rpm: shaft speed during the recording. Defaults to
                the manifest's ``default_shaft_speed_rpm``.

        Returns:
            The prediction, as described for `predict_recording`, with
            ``recording`` set to None.

        Raises:
            RecordingError: the sampling rate or shaft speed is missing or
                invalid, the samples are not finite, or the signal is shorter
                than one window.
        """
        return self._predict(values, sampling_rate_hz=sampling_rate_hz, shaft_speed_rpm=shaft_speed_rpm, recording=None)

    def predict_recording(
        self,
        path: str,
        *,
        channel: str | None = None,
        sampling_rate_hz: float | None = None,
        shaft_speed_rpm: float | None = None,
    ) -> dict[str, Any]:
        """Read one channel of a raw recording and classify every window.

        Args:
            path: local path or fsspec URL of a recording in a format that
                `tasks.readers` reads (.mat, .csv, .parquet, .npy).
            channel: the channel to read. Defaults to the manifest's
                ``feature_spec.channel``, else the file's only channel.
            sampling_rate_hz: rate of the recording. Required, because
                recordings such as CWRU .mat files do not store it.
            shaft_speed_rpm: shaft speed. Defaults to the speed stored in the
                file, else the manifest's ``default_shaft_speed_rpm``.

        Returns:
            ``{"device_id", "version", "recording", "windows", "window_count",
            "label_counts", "majority_label"}``. Each window is
            ``{"window_index", "window_start", "label", "probabilities"}``,
            with ``window_start`` in seconds from the start of the recording
            and ``probabilities`` by class name. The majority label is the
            most frequent window label, and a tie goes to the class with the
            larger summed probability.

        Raises:
            RecordingError: the recording is missing or unreadable, has no
                matching channel, or is invalid as for `predict_signal`.
        """
        if sampling_rate_hz is None:
            raise RecordingError(
                "invalid_sampling_rate",
                f"recording `{path}` has no sampling rate: the file does not store one. "
                "Pass the rate it was recorded at with --sampling-rate-hz.",
            )

        signal = self._read(path, channel=channel)
        speed = shaft_speed_rpm if shaft_speed_rpm is not None else signal.shaft_speed_rpm
        return self._predict(signal.values, sampling_rate_hz=sampling_rate_hz, shaft_speed_rpm=speed, recording=path)

    def _read(self, path: str, *, channel: str | None) -> Signal:
        selected = channel if channel is not None else self.manifest["feature_spec"].get("channel")
        try:
            signal, _ = read_signal_file(path, channel=selected)
        except RecordingError as error:
            if error.reason != "channel_not_found":
                raise
            raise RecordingError(error.reason, f"{error.message} On the edge box, pass the channel with --channel.") from None
        return signal

    def _predict(
        self,
        values: np.ndarray,
        *,
        sampling_rate_hz: float,
        shaft_speed_rpm: float | None,
        recording: str | None,
    ) -> dict[str, Any]:
        source = f"recording `{recording}`" if recording is not None else "the signal"
        speed = shaft_speed_rpm if shaft_speed_rpm is not None else self.manifest["feature_spec"].get("default_shaft_speed_rpm")
        samples = _checked_samples(values, sampling_rate_hz=sampling_rate_hz, source=source)

        windows = self._windows(samples, sampling_rate_hz=sampling_rate_hz, source=source)
        model_input = self._model_input(windows, shaft_speed_rpm=speed, source=source)
        (probabilities,) = self.session.run([PROBABILITIES_OUTPUT], {self.manifest["input_spec"]["name"]: model_input})
        return self._result(np.asarray(probabilities, dtype=np.float64), recording=recording)

    def _windows(self, values: np.ndarray, *, sampling_rate_hz: float, source: str) -> np.ndarray:
        # The samples passed _checked_samples, so condition() can only fail on the rate.
        try:
            conditioned = condition(values, sampling_rate_hz, self.config)
        except ValueError as error:
            raise RecordingError("invalid_sampling_rate", f"{source} cannot be conditioned: {error}") from None

        windows = frame(conditioned, self.config.window_length, self.config.hop_length)
        if windows.shape[0] == 0:
            needed_s = self.config.window_length / self.config.target_sampling_rate_hz
            raise RecordingError(
                "too_short",
                f"{source} lasts {len(values) / sampling_rate_hz:.3f} s at {sampling_rate_hz:g} Hz, shorter than "
                f"one window of {self.config.window_length} samples at {self.config.target_sampling_rate_hz:g} Hz "
                f"({needed_s:.3f} s). Record longer, or check --sampling-rate-hz.",
            )
        return windows

    def _model_input(self, windows: np.ndarray, *, shaft_speed_rpm: float | None, source: str) -> np.ndarray:
        if self.manifest["input_spec"]["kind"] == "waveform":
            return np.ascontiguousarray(windows[:, np.newaxis, :], dtype=np.float32)

        if self.config.bearing is not None and shaft_speed_rpm is None:
            raise RecordingError(
                "invalid_value",
                f"{source} has no shaft speed: the file stores none and bundle {self.version} of device "
                f"{self.device_id} has no default. Pass it with --shaft-speed-rpm.",
            )
        try:
            features = extract_features(windows, self.config, shaft_speed_rpm=shaft_speed_rpm)
        except ValueError as error:
            raise RecordingError("invalid_value", f"features of {source} cannot be computed: {error}") from None
        return features.astype(np.float32)

    def _result(self, probabilities: np.ndarray, *, recording: str | None) -> dict[str, Any]:
        labels = np.argmax(probabilities, axis=1)
        counts = np.bincount(labels, minlength=len(self.classes))
        step_s = self.config.hop_length / self.config.target_sampling_rate_hz

        windows = [
            {
                "window_index": index,
                "window_start": index * step_s,
                "label": self.classes[label],
                "probabilities": dict(zip(self.classes, row.tolist())),
            }
            for index, (label, row) in enumerate(zip(labels, probabilities))
        ]
        return {
            "device_id": self.device_id,
            "version": self.version,
            "recording": recording,
            "windows": windows,
            "window_count": len(windows),
            "label_counts": {name: int(count) for name, count in zip(self.classes, counts) if count},
            "majority_label": self.classes[_majority(counts, probabilities)],
        }


def _majority(counts: np.ndarray, probabilities: np.ndarray) -> int:
    tied = np.flatnonzero(counts == counts.max())
    return int(tied[np.argmax(probabilities[:, tied].sum(axis=0))])


def _checked_samples(values: np.ndarray, *, sampling_rate_hz: float, source: str) -> np.ndarray:
    is_number = isinstance(sampling_rate_hz, numbers.Real) and not isinstance(sampling_rate_hz, bool)
    if not is_number or not 0 < sampling_rate_hz < float("inf"):
        raise RecordingError(
            "invalid_sampling_rate",
            f"{source} has sampling rate {sampling_rate_hz!r}. "
            "Pass the positive rate in Hz it was recorded at with --sampling-rate-hz.",
        )

    samples = np.asarray(values, dtype=np.float64)
    if samples.ndim != 1:
        raise RecordingError("invalid_value", f"{source} has shape {samples.shape}. Pass one channel as a 1-D array.")
    if samples.size == 0:
        raise RecordingError("too_short", f"{source} has no samples. Pass a recording with at least one window of data.")

    bad = np.flatnonzero(~np.isfinite(samples))
    if bad.size:
        raise RecordingError(
            "non_finite",
            f"{source} has {bad.size} NaN or infinite samples (first at index {bad[0]}). "
            "Repair the recording before classifying it.",
        )
    return samples


def _read_model(bundle: Path, manifest: dict[str, Any]) -> bytes:
    # verify_bundle hashed the file already, but it could be replaced before this second read.
    model = (bundle / MODEL_FILE).read_bytes()
    if hashlib.sha256(model).hexdigest() != manifest["files"][MODEL_FILE]["sha256"]:
        raise BundleError(
            "hash_mismatch", f"{bundle / MODEL_FILE} changed after it was verified. Copy the bundle again and retry."
        )
    return model


def _feature_config(manifest: dict[str, Any], bundle: Path) -> FeatureConfig:
    feature_spec = manifest["feature_spec"]
    try:
        config = FeatureConfig.from_dict(feature_spec["config"])
    except (KeyError, TypeError, ValueError) as error:
        raise BundleError(
            "unsupported",
            f"bundle {bundle} has a feature config this runtime cannot read ({error}). Update daqflow on the edge box.",
        ) from None

    if config.config_hash() != feature_spec.get("config_hash"):
        raise BundleError(
            "unsupported",
            f"bundle {bundle} was trained with feature config hash {feature_spec.get('config_hash')}, but this runtime "
            f"computes {config.config_hash()} for the same settings, so its feature code differs. Install the daqflow "
            "version the model was trained with on the edge box.",
        )
    return config


def _check_input_spec(manifest: dict[str, Any], config: FeatureConfig, bundle: Path) -> None:
    input_spec = manifest["input_spec"]
    if input_spec["kind"] not in INPUT_KINDS or input_spec["dtype"] != "float32":
        raise BundleError(
            "unsupported",
            f"bundle {bundle} needs a {input_spec['dtype']} input of kind {input_spec['kind']!r}. This runtime "
            f"supports float32 inputs of kind {', '.join(INPUT_KINDS)}. Update daqflow on the edge box.",
        )

    if input_spec["kind"] == "features":
        expected = feature_names(config)
        if input_spec.get("feature_names") != expected:
            raise BundleError(
                "unsupported",
                f"bundle {bundle} expects features {input_spec.get('feature_names')}, but this runtime computes "
                f"{expected} for its feature config. Install the daqflow version the model was trained with.",
            )
    elif input_spec.get("shape") != [None, 1, config.window_length]:
        raise BundleError(
            "unsupported",
            f"bundle {bundle} declares waveform shape {input_spec.get('shape')}, but its feature config cuts windows "
            f"of {config.window_length} samples, so the shape must be [null, 1, {config.window_length}]. Publish it again.",
        )


def _open_session(model: bytes, manifest: dict[str, Any], bundle: Path) -> onnxruntime.InferenceSession:
    try:
        session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    except _SESSION_ERRORS as error:
        raise BundleError(
            "unsupported",
            f"{bundle / MODEL_FILE} cannot be loaded by onnxruntime {onnxruntime.__version__} ({error}). "
            "Update onnxruntime on the edge box or export the model for this version.",
        ) from None

    input_names = [node.name for node in session.get_inputs()]
    output_names = [node.name for node in session.get_outputs()]
    if input_names != [manifest["input_spec"]["name"]] or PROBABILITIES_OUTPUT not in output_names:
        raise BundleError(
            "unsupported",
            f"{bundle / MODEL_FILE} has inputs {input_names} and outputs {output_names}. The manifest needs the single "
            f"input {manifest['input_spec']['name']!r} and an output {PROBABILITIES_OUTPUT!r}. Export the model again.",
        )

    classes = session.get_outputs()[output_names.index(PROBABILITIES_OUTPUT)].shape[-1]
    if isinstance(classes, int) and classes != len(manifest["classes"]):
        raise BundleError(
            "unsupported",
            f"{bundle / MODEL_FILE} returns {classes} class probabilities but the manifest lists "
            f"{len(manifest['classes'])} classes. Publish the bundle again.",
        )
    return session
