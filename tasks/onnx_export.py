"""Export LightGBM classifiers to ONNX and check that the export predicts like the original.

The edge box runs models with onnxruntime only, so every exported model goes
through `check_parity` on real windows before it is published. The exported
graph has one float32 input, ``features`` with shape ``[N, n_features]``, and
two outputs: ``label`` (int64 class index, ``[N]``) and ``probabilities``
(float32, ``[N, n_classes]``).

Example::

    onnx_model = lightgbm_to_onnx(model, n_features=features.shape[1])
    features32 = features.astype(np.float32)
    report = check_parity(onnx_model, model.predict_proba(features32), features32)
    assert report.ok, report.to_dict()
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import lightgbm
import numpy as np
import onnx
import onnxmltools
import onnxruntime
from onnxmltools.convert.common.data_types import FloatTensorType

ONNX_INPUT_NAME = "features"
ONNX_OUTPUT_NAMES = ("label", "probabilities")

# The converter names the graph with a random uuid by default. A fixed name keeps
# the exported bytes, and so the bundle hash, the same for the same model.
_GRAPH_NAME = "daqflow_lightgbm_classifier"


@dataclass(frozen=True)
class ParityReport:
    """Agreement between the ONNX export and the native model on the same windows.

    Attributes:
        windows: number of windows compared.
        max_abs_diff: maximum absolute difference between the two probability arrays.
        label_mismatches: windows whose most probable class differs.
        ok: no label mismatch and `max_abs_diff` within the tolerance.
    """

    windows: int
    max_abs_diff: float
    label_mismatches: int
    ok: bool

    def to_dict(self) -> dict:
        """Return the report as JSON-ready data."""
        return asdict(self)


def lightgbm_to_onnx(model: lightgbm.LGBMClassifier, *, n_features: int) -> bytes:
    """Convert a fitted LightGBM classifier to a serialized ONNX model.

    The model must be trained on class indices 0..n_classes-1, so that the
    ONNX ``label`` output is the index into the bundle's class names.

    Raises:
        ValueError: the model is not fitted, was trained on another number of
            features, or on class labels other than 0..n_classes-1.
    """
    _check_model(model, n_features=n_features)

    converted = onnxmltools.convert_lightgbm(
        model,
        name=_GRAPH_NAME,
        initial_types=[(ONNX_INPUT_NAME, FloatTensorType([None, n_features]))],
        zipmap=False,
    )
    _name_outputs(converted.graph)
    _free_batch_dimension(converted.graph)

    onnx.checker.check_model(converted)
    return converted.SerializeToString()


def check_parity(
    onnx_model: bytes,
    native_proba: np.ndarray,
    inputs: np.ndarray,
    *,
    input_name: str = ONNX_INPUT_NAME,
    atol: float = 1e-5,
) -> ParityReport:
    """Run the ONNX model on `inputs` and compare it with the native probabilities.

    A label mismatch is a window where the two models' most probable classes
    differ by more than `atol` in the native probabilities. Classes tied within
    `atol` are not a mismatch: float32 rounding may break an exact tie either
    way, and both classes are then equally the model's prediction.

    Args:
        onnx_model: a serialized model from `lightgbm_to_onnx` or `tasks.cnn1d.cnn1d_to_onnx`.
        native_proba: the native model's probabilities on ``inputs.astype(np.float32)``.
        inputs: the model input, cast to float32 as on the edge box: window
            features ``(n_windows, n_features)`` or waveforms ``(n_windows, 1, window_length)``.
        input_name: name of the ONNX input.
        atol: largest accepted absolute difference of a probability.

    Raises:
        ValueError: the arrays are empty, not 2-D, or disagree in shape.
    """
    inputs32 = np.asarray(inputs, dtype=np.float32)
    native = np.asarray(native_proba, dtype=np.float64)
    _check_parity_inputs(native, inputs32)

    session = onnxruntime.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    (onnx_proba,) = session.run(["probabilities"], {input_name: inputs32})
    if onnx_proba.shape != native.shape:
        raise ValueError(
            f"the ONNX model returns probabilities of shape {onnx_proba.shape} but native_proba has shape "
            f"{native.shape}. Pass the probabilities of the exported model."
        )

    max_abs_diff = float(np.max(np.abs(onnx_proba.astype(np.float64) - native)))
    onnx_best = np.argmax(onnx_proba, axis=1)
    margin = native.max(axis=1) - native[np.arange(len(native)), onnx_best]
    mismatches = int(np.count_nonzero(margin > atol))
    return ParityReport(
        windows=int(inputs32.shape[0]),
        max_abs_diff=max_abs_diff,
        label_mismatches=mismatches,
        ok=mismatches == 0 and max_abs_diff <= atol,
    )


def _check_model(model: lightgbm.LGBMClassifier, *, n_features: int) -> None:
    if not model.__sklearn_is_fitted__():
        raise ValueError("the LightGBM model is not fitted. Call fit() before exporting it.")

    if model.n_features_in_ != n_features:
        raise ValueError(
            f"the LightGBM model was trained on {model.n_features_in_} features but n_features is {n_features}. "
            "Pass the number of feature columns the model was trained on."
        )

    classes = np.asarray(model.classes_)
    if classes.dtype.kind not in "iu" or not np.array_equal(classes, np.arange(classes.size)):
        raise ValueError(
            f"the LightGBM model was trained on class labels {classes.tolist()}. Train it on class indices "
            f"0..{classes.size - 1} and keep the class names in the bundle manifest."
        )


def _name_outputs(graph: onnx.GraphProto) -> None:
    """Rename the converter's outputs to ``label`` and ``probabilities``, which the edge runtime looks up."""
    if len(graph.output) != len(ONNX_OUTPUT_NAMES):
        raise ValueError(
            f"the converted LightGBM model has outputs {[output.name for output in graph.output]}, expected a label "
            "and a probabilities output. Check that the installed onnxmltools is the version daqflow pins."
        )

    for output, wanted in zip(graph.output, ONNX_OUTPUT_NAMES):
        if output.name == wanted:
            continue
        for node in graph.node:
            node.input[:] = [wanted if name == output.name else name for name in node.input]
            node.output[:] = [wanted if name == output.name else name for name in node.output]
        output.name = wanted


def _free_batch_dimension(graph: onnx.GraphProto) -> None:
    # The converter declares the label output with a fixed batch size of 1,
    # and onnxruntime then warns on every batch of more than one window.
    for output in graph.output:
        batch = output.type.tensor_type.shape.dim[0]
        batch.Clear()
        batch.dim_param = "N"


def _check_parity_inputs(native: np.ndarray, inputs: np.ndarray) -> None:
    if inputs.ndim < 2 or inputs.shape[0] == 0:
        raise ValueError(f"inputs must be a non-empty array with one row per window, got shape {inputs.shape}")

    if native.ndim != 2 or native.shape[0] != inputs.shape[0]:
        raise ValueError(
            f"native_proba has shape {native.shape} but inputs have {inputs.shape[0]} windows. "
            "Pass predict_proba of the same windows."
        )
