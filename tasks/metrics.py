"""Classification metrics for fault models: accuracy, per-class scores, macro-F1.

Pure numpy, so the same numbers come out in a flow, a Dask worker or a
notebook without scikit-learn. The gate compares champion and challenger on
`macro_f1`.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def classification_metrics(y_true: list[str], y_pred: list[str], *, labels: list[str]) -> dict[str, Any]:
    """Compute accuracy, macro-F1, per-class scores and the confusion matrix.

    Args:
        y_true: true label of each window.
        y_pred: predicted label of each window, in the same order.
        labels: every label of the model, in the order used for the rows
            and columns of the confusion matrix.

    Returns:
        ``{"accuracy", "macro_f1", "per_class", "confusion_matrix", "labels"}``.
        ``per_class`` maps each label to ``{"precision", "recall", "f1",
        "support"}``, where support is the number of true windows.
        ``confusion_matrix[i][j]`` counts windows of true label ``labels[i]``
        predicted as ``labels[j]``. Macro-F1 averages F1 over the labels that
        occur in ``y_true`` or ``y_pred``, so a label absent from both does not
        pull it down. A precision, recall or F1 whose denominator is zero is 0.0.

    Raises:
        ValueError: when the inputs are empty, differ in length, or hold a label
            that is not in ``labels``.

    Example:
        >>> classification_metrics(["ball", "ball"], ["ball", "normal"], labels=["ball", "normal"])["accuracy"]
        0.5
    """
    _check_inputs(y_true, y_pred, labels)

    matrix = _confusion_matrix(y_true, y_pred, labels=labels)
    true_counts = matrix.sum(axis=1)
    predicted_counts = matrix.sum(axis=0)
    hits = np.diag(matrix)

    precision = _safe_ratio(hits, predicted_counts)
    recall = _safe_ratio(hits, true_counts)
    f1 = _safe_ratio(2 * precision * recall, precision + recall)

    occurring = (true_counts + predicted_counts) > 0
    per_class = {
        label: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(true_counts[i]),
        }
        for i, label in enumerate(labels)
    }
    return {
        "accuracy": float(hits.sum() / matrix.sum()),
        "macro_f1": float(f1[occurring].mean()),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "labels": list(labels),
    }


def _confusion_matrix(y_true: list[str], y_pred: list[str], *, labels: list[str]) -> np.ndarray:
    """Count windows per (true label, predicted label) pair, rows and columns in ``labels`` order."""
    position = {label: i for i, label in enumerate(labels)}
    rows = np.array([position[label] for label in y_true], dtype=np.int64)
    columns = np.array([position[label] for label in y_pred], dtype=np.int64)

    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(matrix, (rows, columns), 1)
    return matrix


def _check_inputs(y_true: list[str], y_pred: list[str], labels: list[str]) -> None:
    if len(y_true) != len(y_pred):
        raise ValueError(
            f"y_true has {len(y_true)} labels but y_pred has {len(y_pred)}; pass one prediction per window."
        )
    if not y_true:
        raise ValueError("y_true and y_pred are empty; metrics need at least one window.")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels {labels} contain duplicates; pass each label once.")

    unknown = sorted(set(y_true).union(y_pred).difference(labels))
    if unknown:
        raise ValueError(f"labels {unknown} occur in y_true or y_pred but not in labels {labels}; add them to labels.")


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    result = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=result, where=denominator > 0)
    return result
