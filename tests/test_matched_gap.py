"""The matched-gap alpha search (tpccma_lib.training.matched_gap)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

import pytest

from tpccma_lib.training.matched_gap import (
    MatchedGapError,
    NonMonotoneError,
    find_alpha_for_target,
)


class Counting:
    """A measure that records every call (alpha -> number of calls)."""

    def __init__(self, fn: Callable[[float], float]) -> None:
        self.fn = fn
        self.calls: Counter[float] = Counter()

    def __call__(self, alpha: float) -> float:
        self.calls[alpha] += 1
        return self.fn(alpha)


def linear(a: float) -> float:
    return 1.0 - 0.8 * a


def exp_decay(a: float) -> float:
    return 0.6 * math.exp(-4.0 * a) + 0.05


def logistic(a: float) -> float:
    """Step-like: falls from ~1 to ~0 within +-0.05 of alpha = 0.37."""
    return 1.0 / (1.0 + math.exp(60.0 * (a - 0.37)))


# (measure, target, exact root, most evaluations allowed for regula falsi / bisection);
# bisection needs about 2 + log2(1 / (2 tol / |f'(root)|)) calls (logistic: |f'| = 11.25)
CASES = {
    "linear": (linear, 0.3, 0.875, 3, 12),
    "exp_decay": (exp_decay, 0.2, math.log(0.6 / 0.15) / 4.0, 8, 12),
    "logistic": (logistic, 0.25, 0.37 + math.log(3.0) / 60.0, 12, 16),
}


@pytest.mark.parametrize("method", ["regula_falsi", "bisect"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_target_found_within_tolerance_in_few_evaluations(name, method):
    fn, target, root, max_rf, max_bisect = CASES[name]
    measure = Counting(fn)
    tol = 1e-3
    result = find_alpha_for_target(
        measure, target, tol=tol, max_evals=30, method=method, alpha_tol=1e-6
    )
    assert result.converged and result.reason == "tolerance"
    assert abs(result.value - target) <= tol
    assert result.value == fn(result.alpha)
    # |f'| is bounded below near the root, so alpha is close to the exact root as well
    assert result.alpha == pytest.approx(root, abs=0.01)
    assert result.n_evals == sum(measure.calls.values())
    assert result.n_evals <= (max_rf if method == "regula_falsi" else max_bisect)
    assert result.evaluations[:2] == [(0.0, fn(0.0)), (1.0, fn(1.0))]
    low, high = result.bracket
    assert 0.0 <= low <= result.alpha <= high <= 1.0


def test_bisection_obeys_its_worst_case_bound():
    # a target never met within tol: bisection stops when the bracket is below alpha_tol,
    # after exactly 2 + ceil(log2((hi - lo) / alpha_tol)) evaluations
    result = find_alpha_for_target(
        logistic, 0.5, tol=1e-12, alpha_tol=1e-3, method="bisect", max_evals=50
    )
    assert result.reason == "bracket" and not result.converged
    assert result.n_evals == 2 + math.ceil(math.log2(1.0 / 1e-3))
    low, high = result.bracket
    assert high - low <= 1e-3
    assert low <= 0.37 <= high
    assert result.alpha == pytest.approx(0.37, abs=1e-3)


def test_max_evals_is_respected_and_reported():
    measure = Counting(exp_decay)
    result = find_alpha_for_target(measure, 0.2, tol=1e-9, max_evals=4, method="bisect")
    assert sum(measure.calls.values()) == 4
    assert result.reason == "max_evals" and not result.converged
    # the closest of the four evaluations is returned, and the bracket holds the root
    assert abs(result.value - 0.2) == min(abs(v - 0.2) for _, v in result.evaluations)
    low, high = result.bracket
    assert exp_decay(low) >= 0.2 >= exp_decay(high)


def test_increasing_measure():
    result = find_alpha_for_target(lambda a: a**2, 0.25, tol=1e-4, increasing=True)
    assert result.converged and result.alpha == pytest.approx(0.5, abs=1e-3)
    with pytest.raises(MatchedGapError, match="pass increasing=True"):
        find_alpha_for_target(lambda a: a**2, 0.25)
    with pytest.raises(MatchedGapError, match="pass increasing=False"):
        find_alpha_for_target(linear, 0.5, increasing=True)


def test_out_of_bracket_target_names_both_values():
    with pytest.raises(MatchedGapError, match=r"outside \[measure\(lo\), measure\(hi\)\]") as info:
        find_alpha_for_target(linear, 0.1)
    assert "[1, 0.2]" in str(info.value) and "widen the alpha bracket" in str(info.value)
    with pytest.raises(MatchedGapError, match="outside"):
        find_alpha_for_target(linear, 1.5, lo=0.0, hi=0.5)


def test_end_point_within_tolerance_returns_without_more_calls():
    measure = Counting(linear)
    result = find_alpha_for_target(measure, 1.0005, tol=1e-3)
    assert result.converged and result.alpha == 0.0 and result.n_evals == 1


def test_non_monotone_measure_is_detected():
    def bump(a: float) -> float:  # falls overall, but rises far above f(0) mid-bracket
        return 1.0 - 0.8 * a + 3.0 * math.exp(-((a - 0.5) ** 2) / 0.01)

    for method in ("regula_falsi", "bisect"):
        with pytest.raises(NonMonotoneError, match="not monotone") as info:
            find_alpha_for_target(bump, 0.5, method=method)
        assert "measure(0.5)" in str(info.value) or "measure(0." in str(info.value)
    assert issubclass(NonMonotoneError, MatchedGapError)
    assert issubclass(MatchedGapError, ValueError)


def test_memoised_and_cache_is_used():
    measure = Counting(exp_decay)
    find_alpha_for_target(measure, 0.2, tol=1e-6, max_evals=30, alpha_tol=1e-9)
    assert max(measure.calls.values()) == 1  # never called twice with one alpha
    # a grid already trained: its points are not re-run and they narrow the bracket
    grid = {a: exp_decay(a) for a in (0.0, 0.25, 0.5, 0.75, 1.0)}
    measure = Counting(exp_decay)
    result = find_alpha_for_target(measure, 0.2, tol=1e-3, cache=grid)
    assert not set(measure.calls) & set(grid)
    assert all(0.25 < a < 0.5 for a in measure.calls)
    assert result.converged and result.n_evals == len(measure.calls) <= 4


def test_bad_arguments_and_bad_measure_values():
    with pytest.raises(MatchedGapError, match="need lo < hi"):
        find_alpha_for_target(linear, 0.5, lo=1.0, hi=0.0)
    with pytest.raises(MatchedGapError, match="tol must be > 0"):
        find_alpha_for_target(linear, 0.5, tol=0.0)
    with pytest.raises(MatchedGapError, match="max_evals must be an int >= 2"):
        find_alpha_for_target(linear, 0.5, max_evals=1)
    with pytest.raises(MatchedGapError, match="target must be a finite number"):
        find_alpha_for_target(linear, math.nan)
    with pytest.raises(MatchedGapError, match="method must be one of"):
        find_alpha_for_target(linear, 0.5, method="newton")  # type: ignore[arg-type]
    with pytest.raises(MatchedGapError, match="diverged"):
        find_alpha_for_target(lambda a: math.nan if a > 0.5 else 1.0 - a, 0.2)
    with pytest.raises(MatchedGapError, match="must return a float"):
        find_alpha_for_target(lambda a: "0.3", 0.2)  # type: ignore[arg-type, return-value]
