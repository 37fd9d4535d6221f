"""Uncertainty statistics of member rewards against numbers worked out by hand."""

import math

import pytest

from rewardlab.evaluation.uncertainty import (
    accuracy,
    calibration,
    disagreement,
    plot_reliability,
    uncertainty_report,
    uncertainty_vs_error,
)


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


# Two members, four pairs. Margins: member 0 [1, 0, -1, 3], member 1 [2, -1, 1, 0];
# mean margin [1.5, -0.5, 0, 1.5]: right, wrong, tie (wrong), right.
CHOSEN = [[2, 1, 0, 3], [2, 0, 1, 1]]
REJECTED = [[1, 1, 1, 0], [0, 1, 0, 1]]


def test_accuracy_of_the_mean_and_of_each_member():
    """Mean right on pairs 0 and 3 (pair 2 is a tie): 2/4. Member 0 right on 0, 3; member 1 right on 0, 2."""
    a = accuracy(CHOSEN, REJECTED)
    assert a == {"members": 2, "pairs": 4, "accuracy": 0.5, "ties": 1, "member_accuracy": [0.5, 0.5]}


def test_disagreement():
    """std (ddof 0) of two values is half their distance: [0.5, 0.5, 1, 1.5], mean 0.875. Signs (+,+), (0,−),
    (−,+), (+,0): the members disagree on pairs 1, 2, 3."""
    d = disagreement(CHOSEN, REJECTED)
    assert d["margin_std"] == pytest.approx(0.875)
    assert d["winner_disagreement"] == pytest.approx(0.75)


def test_uncertainty_halves_quarters_and_auroc():
    """Uncertainty [0.5, 0.5, 1, 1.5], most uncertain first: pairs 3, 2, 0, 1 (0 before 1: pair order).
    Half: {3, 2} has one error (2), {0, 1} one error (1). Quarter: {3} right, {1} wrong.
    AUROC: wrong pairs' uncertainties [0.5, 1] against right pairs' [0.5, 1.5]: ½ + 0 + 1 + 0 over 4 = 0.375."""
    u = uncertainty_vs_error(CHOSEN, REJECTED)
    assert u["defined"] and u["auroc"] == pytest.approx(0.375)
    half, quarter = u["half"], u["quarter"]
    assert half["pairs"] == 2 and quarter["pairs"] == 1
    assert half["most_uncertain"] == pytest.approx({"accuracy": 0.5, "error_rate": 0.5, "mean_uncertainty": 1.25})
    assert half["least_uncertain"] == pytest.approx({"accuracy": 0.5, "error_rate": 0.5, "mean_uncertainty": 0.5})
    assert quarter["most_uncertain"] == pytest.approx({"accuracy": 1.0, "error_rate": 0.0, "mean_uncertainty": 1.5})
    assert quarter["least_uncertain"] == pytest.approx({"accuracy": 0.0, "error_rate": 1.0, "mean_uncertainty": 0.5})


def test_uncertainty_ranks_errors_first_when_it_should():
    """Three members; the wrong pairs are the ones they disagree on most: the most uncertain half is all errors,
    the least uncertain half all right, AUROC 1."""
    chosen = [[1, 1, 1, 0.5], [1, 1, 2, 2.0], [1, 1, -6, -5.0]]
    rejected = [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    u = uncertainty_vs_error(chosen, rejected)
    assert u["auroc"] == 1.0
    assert u["half"]["most_uncertain"]["error_rate"] == 1.0 and u["half"]["least_uncertain"]["error_rate"] == 0.0


def test_one_member_has_no_uncertainty_to_rank_by():
    """One member: std 0 on every pair, so halves are undefined, said so; disagreement is 0; no crash."""
    chosen, rejected = [1.0, 0.0, 2.0], [0.0, 1.0, 2.0]
    u = uncertainty_vs_error(chosen, rejected)
    assert u == {"defined": False,
                 "reason": "uncertainty cannot rank the pairs (one member: its std across members is 0 on every pair)"}
    assert disagreement(chosen, rejected) == {"margin_std": 0.0, "winner_disagreement": 0.0}
    report = uncertainty_report(chosen, rejected)
    assert report["accuracy"] == pytest.approx(1 / 3) and report["ties"] == 1 and report["members"] == 1
    assert report["uncertainty_vs_error"]["defined"] is False


def test_members_that_agree_up_to_a_constant_shift_are_undefined_too():
    u = uncertainty_vs_error([[1, 2, 3], [2, 3, 4]], [[0, 0, 0], [0, 0, 0]])
    assert u["defined"] is False and "the same on every pair" in u["reason"]


def test_too_few_pairs_for_a_quarter():
    u = uncertainty_vs_error([[1, 2, 0], [3, 2, 0]], [[0, 0, 1], [0, 0, 1]])
    assert u["defined"] and u["half"]["pairs"] == 1 and u["quarter"] is None


def test_expected_calibration_error_by_hand():
    """Mean margins [1.5, −0.5, 0, 1.5]. Confidences σ(1.5) (bin [0.80, 0.85), twice, right), σ(0.5) (bin
    [0.60, 0.65), wrong: it prefers the rejected one) and 0.5 (bin [0.50, 0.55), a tie, wrong).
    ECE = (2·(1 − σ(1.5)) + σ(0.5) + 0.5) / 4."""
    c = calibration(CHOSEN, REJECTED)
    assert c["bins"] == 10 and c["pairs"] == 4 and c["accuracy"] == 0.5
    assert c["ece"] == pytest.approx((2 * (1 - sigmoid(1.5)) + sigmoid(0.5) + 0.5) / 4)
    counts = [row["pairs"] for row in c["table"]]
    assert counts == [1, 0, 1, 0, 0, 0, 2, 0, 0, 0]
    assert c["table"][6]["low"] == pytest.approx(0.8) and c["table"][6]["high"] == pytest.approx(0.85)
    assert c["table"][6]["accuracy"] == 1.0 and c["table"][6]["confidence"] == pytest.approx(sigmoid(1.5))
    assert c["table"][2]["accuracy"] == 0.0 and c["table"][0]["confidence"] == 0.5
    assert c["table"][1] == {"low": pytest.approx(0.55), "high": pytest.approx(0.6), "pairs": 0, "accuracy": None,
                             "confidence": None}


def test_all_pairs_in_one_bin():
    """Every margin huge: every confidence in the top bin (σ(1000) is exactly 1.0 in float64: still the top bin)."""
    c = calibration([10.0, 1000.0, 10.0], [0.0, 0.0, 0.0])
    assert [row["pairs"] for row in c["table"]] == [0] * 9 + [3]
    assert c["ece"] == pytest.approx(1 - (2 * sigmoid(10) + 1) / 3)
    one = calibration([10.0, -10.0], [0.0, 0.0], bins=1)
    assert one["table"][0]["pairs"] == 2 and one["ece"] == pytest.approx(abs(0.5 - sigmoid(10)))


def test_bad_shapes_and_values_are_refused():
    with pytest.raises(ValueError, match="same|both"):
        accuracy([[1, 2]], [[1, 2, 3]])
    with pytest.raises(ValueError, match="finite"):
        calibration([float("nan")], [0.0])
    with pytest.raises(ValueError, match="at least one"):
        accuracy([], [])
    with pytest.raises(ValueError, match="bins"):
        calibration([1.0], [0.0], bins=0)


def test_reliability_plot_is_a_png(tmp_path):
    path = tmp_path / "reliability.png"
    plot_reliability(calibration(CHOSEN, REJECTED), path, title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
