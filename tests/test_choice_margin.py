"""The loop's choice margin: after a round the device measured slower than predicted, the next student
is searched first among those predicted that far under the budget (edgekd.deploy.rounds.choice_margin)."""
from __future__ import annotations

import pytest

from edgekd.deploy.config import Round
from edgekd.deploy.rounds import MAX_MARGIN, choice_margin


def _round(predicted: float | None, measured: float | None, source: str = "predicted") -> Round:
    return Round(spec="cnn:depth=3,width=8", params=6000, host_val_accuracy=0.97, host_test_accuracy=0.98,
                 predicted_ms=predicted, latency_source=source, artifact="a", measured_ms=measured)


def test_no_round_no_margin():
    assert choice_margin([]) == 0.0


def test_margin_is_the_largest_under_prediction():
    rounds = [_round(0.0485, 0.0624), _round(0.0516, 0.0565)]  # -22 %, then -9 %
    assert choice_margin(rounds) == pytest.approx(0.0624 / 0.0485 - 1)


def test_over_predictions_and_measured_figures_give_no_margin():
    # a student measured faster than predicted, and one whose figure was already a measurement
    assert choice_margin([_round(0.04, 0.02), _round(0.01, 0.05, source="measured")]) == 0.0


def test_margin_is_capped_and_ignores_rounds_without_figures():
    assert choice_margin([_round(0.01, 0.05), _round(None, 0.05), _round(0.02, None)]) == MAX_MARGIN
