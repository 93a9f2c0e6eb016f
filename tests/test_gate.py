"""Tests of the promotion gate in tasks.gate."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.gate import GateConfig, GateDecision, decide

CONFIG = GateConfig(tolerance=0.01, min_macro_f1=0.5)


@pytest.mark.parametrize(
    ("challenger", "champion", "promote", "reason"),
    [
        (0.92, 0.90, True, "better"),
        (0.90, 0.90, True, "within_tolerance"),
        (0.895, 0.90, True, "within_tolerance"),
        (0.89, 0.90, True, "within_tolerance"),
        (0.8899, 0.90, False, "worse"),
        (0.70, 0.90, False, "worse"),
        (0.49, 0.40, False, "below_floor"),
        (0.49, None, False, "below_floor"),
        (0.50, None, True, "no_champion"),
        (0.75, None, True, "no_champion"),
    ],
)
def test_decide_table(challenger, champion, promote, reason):
    decision = decide(challenger_macro_f1=challenger, champion_macro_f1=champion, config=CONFIG)

    assert decision.reason == reason
    assert decision.promote is promote
    assert decision.challenger_macro_f1 == challenger
    assert decision.champion_macro_f1 == champion


def test_decide_floor_checked_before_champion():
    decision = decide(challenger_macro_f1=0.45, champion_macro_f1=0.30, config=GateConfig(min_macro_f1=0.6))

    assert decision.reason == "below_floor"
    assert not decision.promote


def test_decide_promotes_at_tolerance_boundary_despite_rounding():
    # 0.8 - 0.1 is 0.7000000000000001 in binary floating point.
    decision = decide(challenger_macro_f1=0.7, champion_macro_f1=0.8, config=GateConfig(tolerance=0.1))

    assert decision.reason == "within_tolerance"
    assert decision.promote


def test_decide_zero_tolerance_rejects_any_loss():
    decision = decide(challenger_macro_f1=0.899, champion_macro_f1=0.90, config=GateConfig(tolerance=0.0))

    assert decision.reason == "worse"


def test_decide_accepts_numpy_scores():
    decision = decide(challenger_macro_f1=np.float32(0.8), champion_macro_f1=np.float64(0.7), config=CONFIG)

    assert decision.reason == "better"
    assert type(decision.challenger_macro_f1) is float


@pytest.mark.parametrize(
    ("reason", "challenger", "champion", "fragment"),
    [
        ("better", 0.92, 0.90, "challenger macro-F1 0.9200 beats champion 0.9000"),
        ("within_tolerance", 0.895, 0.90, "is within 0.0100 of champion 0.9000"),
        ("worse", 0.80, 0.90, "more than 0.0100 below champion 0.9000; keeping the champion"),
        ("below_floor", 0.40, 0.90, "below the floor 0.5000"),
        ("no_champion", 0.80, None, "no champion yet"),
    ],
)
def test_decide_message_names_scores(reason, challenger, champion, fragment):
    decision = decide(challenger_macro_f1=challenger, champion_macro_f1=champion, config=CONFIG)

    assert decision.reason == reason
    assert fragment in decision.message


def test_decision_to_dict():
    decision = decide(challenger_macro_f1=0.92, champion_macro_f1=0.90, config=CONFIG)

    assert decision.to_dict() == {
        "promote": True,
        "reason": "better",
        "challenger_macro_f1": 0.92,
        "champion_macro_f1": 0.90,
        "message": decision.message,
    }
    assert GateDecision(**decision.to_dict()) == decision


def test_gate_config_to_dict():
    assert GateConfig().to_dict() == {"tolerance": 0.01, "min_macro_f1": 0.5}


@pytest.mark.parametrize(
    ("challenger", "champion", "message"),
    [
        (float("nan"), 0.9, r"challenger_macro_f1 is nan"),
        (1.2, 0.9, r"challenger_macro_f1 is 1.2"),
        (0.9, -0.1, r"champion_macro_f1 is -0.1"),
        ("0.9", None, r"challenger_macro_f1 is '0.9'"),
    ],
)
def test_decide_rejects_invalid_scores(challenger, champion, message):
    with pytest.raises(ValueError, match=message):
        decide(challenger_macro_f1=challenger, champion_macro_f1=champion, config=CONFIG)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tolerance": -0.01}, r"tolerance is -0.01"),
        ({"tolerance": float("inf")}, r"tolerance is inf"),
        ({"min_macro_f1": 1.5}, r"min_macro_f1 is 1.5"),
    ],
)
def test_gate_config_rejects_invalid_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GateConfig(**kwargs)
