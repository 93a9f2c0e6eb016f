"""Promotion gate: decide whether a challenger model replaces the champion.

`decide` only compares numbers. The caller scores challenger and champion on
the same fresh evaluation set, so both macro-F1 values describe the same data.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any, Literal

GateReason = Literal["no_champion", "better", "within_tolerance", "worse", "below_floor"]

# Absorbs float rounding in `champion - tolerance`, so a challenger exactly at the
# tolerance boundary is promoted: 0.8 - 0.1 is 0.7000000000000001, above 0.7.
_BOUNDARY_ABS_TOL = 1e-12


@dataclass(frozen=True)
class GateConfig:
    """Thresholds of the promotion gate.

    Args:
        tolerance: how far, in macro-F1, a challenger may fall below the
            champion and still be promoted. Retraining on fresh data is worth a
            small loss on one evaluation set.
        min_macro_f1: macro-F1 floor that every promoted model must reach,
            champion or not.
    """

    tolerance: float = 0.01
    min_macro_f1: float = 0.5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise ValueError(f"GateConfig.tolerance is {self.tolerance}; set a macro-F1 difference >= 0, such as 0.01.")
        if not (0.0 <= self.min_macro_f1 <= 1.0):
            raise ValueError(f"GateConfig.min_macro_f1 is {self.min_macro_f1}; set a macro-F1 floor between 0 and 1.")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class GateDecision:
    """Outcome of the gate for one device, ready to log and store beside the model."""

    promote: bool
    reason: GateReason
    challenger_macro_f1: float
    champion_macro_f1: float | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(*, challenger_macro_f1: float, champion_macro_f1: float | None, config: GateConfig) -> GateDecision:
    """Decide whether the challenger becomes champion.

    The challenger is promoted when it reaches ``config.min_macro_f1`` and
    either there is no champion or its macro-F1 is at least the champion's
    minus ``config.tolerance``. The floor is checked first, so a first model
    that is below the floor is not promoted.

    Args:
        challenger_macro_f1: macro-F1 of the new model on the evaluation set.
        champion_macro_f1: macro-F1 of the current champion on the same
            evaluation set, or None when the device has no champion yet.
        config: the gate thresholds.

    Returns:
        The decision, with ``reason`` one of ``no_champion``, ``better``,
        ``within_tolerance``, ``worse`` or ``below_floor``.

    Raises:
        ValueError: when a macro-F1 value is not a number between 0 and 1.

    Example:
        >>> decide(challenger_macro_f1=0.9, champion_macro_f1=0.905, config=GateConfig()).reason
        'within_tolerance'
    """
    _check_score("challenger_macro_f1", challenger_macro_f1)
    if champion_macro_f1 is not None:
        _check_score("champion_macro_f1", champion_macro_f1)

    reason = _reason(challenger_macro_f1, champion_macro_f1, config)
    return GateDecision(
        promote=reason in ("no_champion", "better", "within_tolerance"),
        reason=reason,
        challenger_macro_f1=float(challenger_macro_f1),
        champion_macro_f1=None if champion_macro_f1 is None else float(champion_macro_f1),
        message=_message(reason, challenger_macro_f1, champion_macro_f1, config),
    )


def _reason(challenger: float, champion: float | None, config: GateConfig) -> GateReason:
    if challenger < config.min_macro_f1:
        return "below_floor"
    if champion is None:
        return "no_champion"
    if challenger > champion:
        return "better"

    lowest_accepted = champion - config.tolerance
    if challenger >= lowest_accepted or math.isclose(challenger, lowest_accepted, abs_tol=_BOUNDARY_ABS_TOL):
        return "within_tolerance"
    return "worse"


def _message(reason: GateReason, challenger: float, champion: float | None, config: GateConfig) -> str:
    if reason == "below_floor":
        kept = "keeping the current champion" if champion is not None else "the device keeps no model in service"
        return f"challenger macro-F1 {challenger:.4f} is below the floor {config.min_macro_f1:.4f}; {kept}."
    if reason == "no_champion":
        return f"no champion yet; promoting the challenger (macro-F1 {challenger:.4f})."
    if reason == "better":
        return f"challenger macro-F1 {challenger:.4f} beats champion {champion:.4f}; promoting."
    if reason == "within_tolerance":
        return (
            f"challenger macro-F1 {challenger:.4f} is within {config.tolerance:.4f} of champion {champion:.4f}; "
            "promoting the model trained on fresher data."
        )
    return (
        f"challenger macro-F1 {challenger:.4f} is more than {config.tolerance:.4f} below champion {champion:.4f}; "
        "keeping the champion."
    )


def _check_score(name: str, value: float) -> None:
    if not (isinstance(value, numbers.Real) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} is {value!r}; pass the macro-F1 from classification_metrics, a number between 0 and 1.")
