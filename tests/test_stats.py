"""What a study can detect at its spread and number of folds, and the verdicts in one word.

(The files ``convbench aggregate`` writes from these, results/ablations.json and scores.json, are
tested with the report, in test_report.py.)"""

from __future__ import annotations

import math

import pytest

from convbench import stats

# ------------------------------------------------------------------ what it would take, by hand


def test_detectable_difference_on_a_hand_worked_case() -> None:
    """s = 2 points between 5 folds of 5-fold cross-validation (n_test/n_train = 1/4).

    From a t table with 4 degrees of freedom: t_0.975 = 2.7764, t_0.80 = 0.9410, sum 3.7174.
    Corrected standard error factor: sqrt(1/5 + 1/4) = sqrt(0.45) = 0.67082. Smallest detectable
    difference: 3.7174 x 0.67082 x 2 = 4.9874 points.
    """
    assert stats.detectable_difference(2.0, 5, 1 / 4) == pytest.approx(4.9874, abs=5e-4)
    # the plain paired test (no correction) would claim 3.7174 x sqrt(1/5) x 2 = 3.3249
    assert stats.detectable_difference(2.0, 5, 0.0) == pytest.approx(3.3249, abs=5e-4)
    assert math.isnan(stats.detectable_difference(2.0, 1, 1 / 4))  # one fold: no test at all


def test_repeats_needed_on_a_hand_worked_case() -> None:
    """A true difference of 3 points at s = 2, K = 5. With R repeats, J = 5R resamples:

    R = 8: df 39, t_0.975 + t_0.80 = 2.0227 + 0.8510 = 2.8737; sqrt(1/40 + 1/4) = 0.52440;
           2.8737 x 0.52440 x 2 = 3.0140 > 3, not enough;
    R = 9: df 44, 2.0154 + 0.8501 = 2.8655; sqrt(1/45 + 1/4) = 0.52175; 2.8655 x 0.52175 x 2
           = 2.9901 <= 3: nine repeats (45 runs).
    The floor at any R is (1.9600 + 0.8416) x sqrt(1/4) x 2 = 2.8016 points: 2.7 is never reached.
    """
    assert stats.detectable_difference(2.0, 40, 1 / 4) == pytest.approx(3.0140, abs=5e-4)
    assert stats.detectable_difference(2.0, 45, 1 / 4) == pytest.approx(2.9901, abs=5e-4)
    assert stats.repeats_needed(3.0, 2.0, 5) == 9
    assert stats.repeats_needed(-3.0, 2.0, 5) == 9  # the direction does not matter
    assert stats.repeats_needed(2.7, 2.0, 5, max_repeats=10_000) is None
    assert stats.repeats_needed(0.0, 2.0, 5) is None


def test_what_it_would_take_says_the_smallest_difference_and_the_runs() -> None:
    # differences +3, +1, +4, +1, +3 points: mean 2.4, sd 1.3416; K = 5, one repeat: the interval
    # (half-width 1.862 sd) includes zero, the floor of repeats (1.401 sd) is below the mean
    c = stats.paired_comparison([0.80] * 5, [0.83, 0.81, 0.84, 0.81, 0.83], test_train_ratio=1 / 4)
    assert stats.verdict_code(c) == "no clear difference"
    line = stats.what_it_would_take(c, folds=5, repeats=1)
    smallest = stats.detectable_difference(c.std, 5, 1 / 4)
    assert f"detects a difference of {smallest:.2f} points or more (5% level, 80% power)" in line
    needed = stats.repeats_needed(c.mean, c.std, 5)
    assert needed is not None and needed > 1
    assert f"{needed} repeats of 5-fold ({5 * needed} runs per experiment)" in line


def test_what_it_would_take_says_when_repeats_cannot_help() -> None:
    c = stats.paired_comparison([0.80] * 5, [0.81, 0.78, 0.83, 0.80, 0.83], test_train_ratio=1 / 4)
    line = stats.what_it_would_take(c, folds=5, repeats=1)
    assert "no number of repeats of 5-fold cross-validation would detect the observed +1.00 points" in line


@pytest.mark.parametrize(("baseline", "treatment", "adjusted", "code"), [
    ([0.80, 0.81, 0.82, 0.80, 0.81], [0.90, 0.92, 0.91, 0.93, 0.90], None, "better"),
    ([0.90, 0.92, 0.91, 0.93, 0.90], [0.80, 0.81, 0.82, 0.80, 0.81], None, "worse"),
    ([0.80, 0.81, 0.82, 0.80, 0.81], [0.90, 0.92, 0.91, 0.93, 0.90], 0.2, "no clear difference"),
    ([0.80, 0.82, 0.81], [0.82, 0.80, 0.825], None, "no clear difference"),
    ([0.8, 0.9, 0.7], [0.8, 0.9, 0.7], None, "no difference"),
    ([0.8], [0.9], None, "cannot tell"),
])
def test_the_verdict_in_one_word_agrees_with_the_sentence(
    baseline: list[float], treatment: list[float], adjusted: float | None, code: str
) -> None:
    c = stats.paired_comparison(baseline, treatment, test_train_ratio=1 / (len(baseline) - 1 or 1))
    assert stats.verdict_code(c, adjusted) == code
    assert stats.verdict(c, "base", "treat", adjusted).split(":")[0].replace("treat ", "").startswith(
        {"better": "better", "worse": "worse", "no clear difference": "no clear difference",
         "no difference": "no difference", "cannot tell": "cannot tell"}[code])
