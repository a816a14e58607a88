"""Find the alpha whose run reaches a target gap: the search behind matched-gap ablations.

Two training rules can only be compared fairly at the same outcome: a rule that "protects the
contrastive objective" and one that simply aligns less look alike when compared at the same
alpha. :func:`find_alpha_for_target` solves ``measure(alpha) = target`` for a monotone,
expensive ``measure`` (one fine-tune plus one evaluation per call) in few calls:

1. evaluate both ends of ``[lo, hi]`` and check that the target lies between the two values;
2. shrink the bracket by safeguarded regula falsi (the Illinois variant, with a bisection
   step after any interpolation step that did not halve the smallest residual
   ``|value - target|`` seen in the bracket, so a step-like ``measure`` falls back to
   bisection) or by plain bisection;
3. stop when ``|measure(alpha) - target| <= tol`` (converged), when the bracket is narrower
   than ``alpha_tol`` or when ``max_evals`` calls were spent (not converged; the closest
   evaluation is returned).

Every evaluation is memoised by alpha, so ``measure`` is never called twice with one value, and
earlier runs can be passed in through ``cache`` (a grid already trained costs nothing).
A value outside the current bracket's values by more than ``tol`` means ``measure`` is not
monotone (or too noisy for ``tol``); the search stops with :class:`NonMonotoneError` rather
than follow noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "MatchedAlpha",
    "MatchedGapError",
    "NonMonotoneError",
    "SEARCH_METHODS",
    "find_alpha_for_target",
]

SEARCH_METHODS = ("regula_falsi", "bisect")


class MatchedGapError(ValueError):
    """The search cannot proceed; the message says what was wrong and how to fix it."""


class NonMonotoneError(MatchedGapError):
    """``measure`` returned a value outside the current bracket's values."""


@dataclass(frozen=True)
class MatchedAlpha:
    """Outcome of :func:`find_alpha_for_target`.

    ``alpha``/``value``: the evaluation closest to the target (its ``measure`` value).
    ``evaluations``: every call of ``measure`` made by this search, in call order, as
    ``(alpha, value)``; cached points passed in are not listed. ``bracket``: the final
    ``(lo, hi)``. ``reason``: "tolerance", "bracket" (narrower than ``alpha_tol``) or
    "max_evals". ``converged`` is True only for "tolerance".
    """

    alpha: float
    value: float
    target: float
    converged: bool
    reason: str
    evaluations: list[tuple[float, float]]
    bracket: tuple[float, float]

    @property
    def n_evals(self) -> int:
        """Calls of ``measure`` made by the search."""
        return len(self.evaluations)


def _finite(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MatchedGapError(f"{name} must be a finite number, got {value!r}.")
    return float(value)


def find_alpha_for_target(
    measure: Callable[[float], float],
    target: float,
    lo: float = 0.0,
    hi: float = 1.0,
    tol: float = 1e-3,
    max_evals: int = 12,
    increasing: bool = False,
    *,
    alpha_tol: float = 1e-3,
    method: Literal["regula_falsi", "bisect"] = "regula_falsi",
    cache: Mapping[float, float] | None = None,
) -> MatchedAlpha:
    """Alpha in ``[lo, hi]`` with ``|measure(alpha) - target| <= tol``.

    Args:
        measure: alpha -> metric (e.g. the distribution gap after a fine-tune at that alpha);
            monotone in alpha, expensive; must return a finite number.
        target: the metric value to reach (same units as ``measure``).
        lo, hi: the alpha bracket, ``lo < hi``.
        tol: tolerance on the metric value (> 0), same units.
        max_evals: most calls of ``measure`` (>= 2: the two ends), cached points excluded.
        increasing: False when the metric falls as alpha grows (a gap), True when it rises.
        alpha_tol: stop (not converged) when the bracket is narrower than this (> 0).
        method: "regula_falsi" (safeguarded, see the module docstring) or "bisect".
        cache: known ``{alpha: value}`` from earlier runs; used instead of calling ``measure``.
    Raises:
        MatchedGapError: bad arguments, ends in the wrong order for ``increasing``, or the
            target outside ``[measure(lo), measure(hi)]`` (both values in the message).
        NonMonotoneError: a value outside the current bracket's values by more than ``tol``.
    """
    target, lo, hi = _check_arguments(target, lo, hi, tol, max_evals, alpha_tol, method)
    evaluate = _Evaluations(measure, max_evals, cache, target, lo, hi)
    sign = 1.0 if increasing else -1.0  # sign * (value - target) < 0 left of the root
    a, b = lo, hi
    try:
        fa = evaluate(lo)
        if abs(fa - target) <= tol:
            return evaluate.result("tolerance", a, b)
        fb = evaluate(hi)
        if abs(fb - target) <= tol:
            return evaluate.result("tolerance", a, b)
        _check_ends(fa, fb, target, lo, hi, increasing)
        for x in sorted(k for k in evaluate.known if lo < k < hi):  # narrow with cached runs
            if a < x < b:
                fx = _check_inside(x, evaluate.known[x], a, fa, b, fb, tol)
                if abs(fx - target) <= tol:
                    return evaluate.result("tolerance", a, b)
                if sign * (fx - target) < 0:
                    a, fa = x, fx
                else:
                    b, fb = x, fx
        bisect_next = method == "bisect"
        side = 0  # Illinois: +1 when the last step moved a (b kept), -1 when it moved b
        wa, wb = 1.0, 1.0  # Illinois weights on fa - target, fb - target
        best = min(abs(fa - target), abs(fb - target))  # smallest residual in the bracket
        while b - a > alpha_tol:
            x = 0.5 * (a + b)
            if not bisect_next:
                x = _false_position(a, wa * (fa - target), b, wb * (fb - target))
            fx = _check_inside(x, evaluate(x), a, fa, b, fb, tol)
            if abs(fx - target) <= tol:
                return evaluate.result("tolerance", a, b)
            if sign * (fx - target) < 0:  # the root is right of x
                a, fa = x, fx
                wa, wb = 1.0, (0.5 * wb if side == 1 else 1.0)
                side = 1
            else:
                b, fb = x, fx
                wa, wb = (0.5 * wa if side == -1 else 1.0), 1.0
                side = -1
            if method == "regula_falsi":  # safeguard: bisect after a step that did not halve
                bisect_next = not bisect_next and abs(fx - target) > 0.5 * best
            best = min(best, abs(fx - target))
        return evaluate.result("bracket", a, b)
    except _Exhausted:
        return evaluate.result("max_evals", a, b)


def _check_arguments(
    target: float,
    lo: float,
    hi: float,
    tol: float,
    max_evals: int,
    alpha_tol: float,
    method: str,
) -> tuple[float, float, float]:
    """(target, lo, hi) as floats, after checking every argument of the search."""
    target = _finite(target, "target")
    lo, hi = _finite(lo, "lo"), _finite(hi, "hi")
    if not lo < hi:
        raise MatchedGapError(f"need lo < hi, got lo={lo}, hi={hi}.")
    if not _finite(tol, "tol") > 0:
        raise MatchedGapError(f"tol must be > 0 (a tolerance on the metric), got {tol}.")
    if not _finite(alpha_tol, "alpha_tol") > 0:
        raise MatchedGapError(f"alpha_tol must be > 0, got {alpha_tol}.")
    if isinstance(max_evals, bool) or not isinstance(max_evals, int) or max_evals < 2:
        raise MatchedGapError(f"max_evals must be an int >= 2 (the two ends), got {max_evals!r}.")
    if method not in SEARCH_METHODS:
        raise MatchedGapError(f"method must be one of {SEARCH_METHODS}, got {method!r}.")
    return target, lo, hi


class _Evaluations:
    """``measure`` memoised, within a budget of ``max_evals`` new calls; the search's result."""

    def __init__(
        self,
        measure: Callable[[float], float],
        max_evals: int,
        cache: Mapping[float, float] | None,
        target: float,
        lo: float,
        hi: float,
    ) -> None:
        self.measure, self.max_evals = measure, max_evals
        self.target, self.lo, self.hi = target, lo, hi
        self.known = {float(a): _finite(v, f"cache[{a}]") for a, v in (cache or {}).items()}
        self.evaluations: list[tuple[float, float]] = []

    def __call__(self, alpha: float) -> float:
        if alpha not in self.known:
            if len(self.evaluations) >= self.max_evals:
                raise _Exhausted
            value = self.measure(alpha)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise MatchedGapError(
                    f"measure({alpha}) returned {value!r}; it must return a float."
                )
            if not math.isfinite(value):
                raise MatchedGapError(
                    f"measure({alpha}) returned {value}; a run that diverged cannot be matched. "
                    "Narrow [lo, hi] to alphas whose runs finish."
                )
            self.known[alpha] = float(value)
            self.evaluations.append((alpha, float(value)))
        return self.known[alpha]

    def result(self, reason: str, a: float, b: float) -> MatchedAlpha:
        """The evaluated alpha closest to the target (ties: the smaller alpha)."""
        pool = [(x, v) for x, v in self.known.items() if self.lo <= x <= self.hi]
        alpha, value = min(pool, key=lambda p: (abs(p[1] - self.target), p[0]))
        return MatchedAlpha(
            alpha=alpha,
            value=value,
            target=self.target,
            converged=reason == "tolerance",
            reason=reason,
            evaluations=self.evaluations,
            bracket=(a, b),
        )


def _check_ends(
    fa: float, fb: float, target: float, lo: float, hi: float, increasing: bool
) -> None:
    """The ends must run the way ``increasing`` says and enclose the target."""
    if (1.0 if increasing else -1.0) * (fb - fa) < 0:
        direction = "falls" if increasing else "rises"
        raise MatchedGapError(
            f"measure {direction} from alpha={lo} ({fa:.6g}) to alpha={hi} ({fb:.6g}), "
            f"but increasing={increasing} says otherwise; pass increasing={not increasing}."
        )
    if not min(fa, fb) <= target <= max(fa, fb):
        raise MatchedGapError(
            f"target {target:.6g} is outside [measure(lo), measure(hi)] = "
            f"[{fa:.6g}, {fb:.6g}] (lo={lo}, hi={hi}); widen the alpha bracket or pick a "
            "reachable target."
        )


def _false_position(a: float, ga: float, b: float, gb: float) -> float:
    """Where the line through (a, ga) and (b, gb) crosses 0; the midpoint if not inside (a, b)."""
    x = 0.5 * (a + b)
    if gb != ga:
        x = a - ga * (b - a) / (gb - ga)
    return x if a < x < b else 0.5 * (a + b)


class _Exhausted(Exception):
    """Internal: the evaluation budget is spent."""


def _check_inside(
    x: float, fx: float, a: float, fa: float, b: float, fb: float, tol: float
) -> float:
    """``fx`` if it lies within the bracket values (slack ``tol``), else NonMonotoneError."""
    if not min(fa, fb) - tol <= fx <= max(fa, fb) + tol:
        raise NonMonotoneError(
            f"measure({x:.6g}) = {fx:.6g} lies outside the bracket values "
            f"measure({a:.6g}) = {fa:.6g}, measure({b:.6g}) = {fb:.6g} by more than tol={tol:g}: "
            "measure is not monotone in alpha, or noisier than tol. Average over seeds or "
            "raise tol."
        )
    return fx
