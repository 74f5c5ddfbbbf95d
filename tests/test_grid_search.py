"""Selection rules on validation scores: the grid's argmax with deterministic ties, and CoOp's log bisection."""

from __future__ import annotations

import math

import pytest

from guidg.model_selection import SelectionError, grid_search, log_bisection


def test_grid_search_chooses_the_highest_score() -> None:
    scores = {"a": 0.2, "b": 0.9, "c": 0.5}
    result = grid_search(list(scores), scores.__getitem__)
    assert (result.chosen, result.index, result.score) == ("b", 1, 0.9)


def test_grid_search_reports_every_candidate_with_its_score_in_order() -> None:
    seen = []

    def score(candidate: int) -> float:
        seen.append(candidate)
        return -abs(candidate - 3)

    result = grid_search([5, 1, 3, 4], score)
    assert seen == [5, 1, 3, 4]
    assert result.scores == ((5, -2.0), (1, -2.0), (3, 0.0), (4, -1.0))


def test_equal_scores_go_to_the_earliest_candidate_whatever_the_values() -> None:
    assert grid_search([(2.0, 1.0), (0.5, 3.0), (1.0, 1.0)], lambda c: 7.0).chosen == (2.0, 1.0)
    assert grid_search([3, 1, 2], lambda c: 1.0 if c != 3 else 0.0).chosen == 1


def test_a_nan_score_never_wins() -> None:
    result = grid_search(["nan", "low"], lambda c: math.nan if c == "nan" else -5.0)
    assert result.chosen == "low"


def test_only_nan_scores_or_no_candidates_are_errors() -> None:
    with pytest.raises(SelectionError, match="NaN"):
        grid_search([1, 2], lambda c: math.nan)
    with pytest.raises(SelectionError, match="at least one candidate"):
        grid_search([], lambda c: 0.0)


def test_log_bisection_halves_the_decade_towards_the_better_end() -> None:
    # Score peaks at C = 37 in log space; the trace is worked out by hand from the rule.
    def score(c: float) -> float:
        return -abs(math.log10(c) - math.log10(37.0))

    result = log_bisection([1e4, 1e2, 1.0], score, steps=3)
    assert result.grid.chosen == 1e2
    pairs = [tuple(c for c, _ in step.scores) for step in result.steps]
    # [10, 1000]: 10 is nearer 37 -> [10, 100]; 100 is nearer -> [10^1.5, 100]; 10^1.5 is nearer.
    assert pairs[0] == pytest.approx((10.0, 1000.0))
    assert pairs[1] == pytest.approx((10.0, 100.0))
    assert pairs[2] == pytest.approx((10**1.5, 100.0))
    assert [step.chosen for step in result.steps] == pytest.approx([10.0, 100.0, 10**1.5])
    assert result.chosen == pytest.approx(10**1.5)


def test_log_bisection_keeps_the_lower_end_on_ties_and_the_last_step_s_choice() -> None:
    result = log_bisection([1e6, 1e-6], lambda c: 1.0, steps=4)
    assert result.grid.chosen == 1e6
    assert result.chosen == pytest.approx(1e5)
    assert all(step.index == 0 for step in result.steps)


def test_log_bisection_returns_the_last_step_even_when_an_earlier_value_scored_higher() -> None:
    # The grid's 1.0 scores best of all, but the rule only compares the two ends of each step.
    def score(c: float) -> float:
        return 10.0 if c == 1.0 else -abs(math.log10(c))

    result = log_bisection([1.0, 1e3], score, steps=1)
    assert result.grid.chosen == 1.0 and result.chosen == pytest.approx(0.1)


def test_log_bisection_without_steps_is_the_grid_search() -> None:
    result = log_bisection([1e2, 1.0, 1e-2], lambda c: -abs(math.log10(c)), steps=0)
    assert result.chosen == 1.0 and result.steps == ()


def test_log_bisection_refuses_values_that_are_not_positive() -> None:
    with pytest.raises(SelectionError, match="positive"):
        log_bisection([1.0, 0.0], lambda c: 0.0, steps=1)
