"""Choosing a hyperparameter on source validation data: candidates in a fixed order, each scored, the best kept.

Every selection of the feature methods is one of two rules over a scoring function (the accuracy on the
sources' validation images, never on the target):

- :func:`grid_search`: score every candidate; the highest score wins, the earliest candidate among equal
  scores, so the choice is a pure function of the candidates' order and their scores (Tip-Adapter's
  (alpha, beta) grid, the linear probe's first sweep).
- :func:`log_bisection`: CoOp's refinement of the linear probe's regularisation (``lpclip/linear_probe.py`` in
  https://github.com/KaiyangZhou/CoOp): a coarse grid, then a few halvings of a decade-wide interval in log
  space around its best value, each a two-candidate :func:`grid_search`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from imagenet_dg.errors import ImageNetDGError

T = TypeVar("T")


class SearchError(ImageNetDGError, ValueError):
    """A search was given no candidates, or no candidate received a comparable score."""


@dataclass(frozen=True)
class SearchResult(Generic[T]):
    """The candidate chosen and every candidate's score, in the order they were tried."""

    chosen: T
    index: int
    """Position of ``chosen`` among the candidates."""
    score: float
    scores: tuple[tuple[T, float], ...]
    """(candidate, score) for every candidate, in candidate order."""

    def to_record(self) -> dict[str, Any]:
        """JSON-able: the chosen candidate, its score and every (candidate, score) pair."""
        return {"chosen": self.chosen, "score": self.score, "scores": [[c, s] for c, s in self.scores]}


def grid_search(candidates: Sequence[T], score: Callable[[T], float]) -> SearchResult[T]:
    """Score each candidate once, in order; the chosen one has the highest score, the first of equal scores.

    A NaN score never wins. No candidates, or only NaN scores, is a :class:`SearchError`.
    """
    if len(candidates) == 0:
        raise SearchError("a search needs at least one candidate, got none")
    scores = tuple((candidate, float(score(candidate))) for candidate in candidates)
    best = None
    for index, (_, value) in enumerate(scores):
        # strictly greater: an equal score later in the order never displaces an earlier one
        if not math.isnan(value) and (best is None or value > scores[best][1]):
            best = index
    if best is None:
        raise SearchError(f"every one of the {len(scores)} candidates scored NaN; nothing can be chosen")
    return SearchResult(scores[best][0], best, scores[best][1], scores)


@dataclass(frozen=True)
class BisectionResult:
    """The value chosen by :func:`log_bisection`, the coarse grid's search and each refinement step's."""

    chosen: float
    grid: SearchResult[float]
    steps: tuple[SearchResult[float], ...]

    def to_record(self) -> dict[str, Any]:
        """JSON-able: the chosen value, the grid's search and each step's two candidates and scores."""
        return {"chosen": self.chosen, "grid": self.grid.to_record(), "steps": [s.to_record() for s in self.steps]}


def log_bisection(grid: Sequence[float], score: Callable[[float], float], steps: int) -> BisectionResult:
    """CoOp's search of a positive scale: the best of ``grid``, then ``steps`` halvings in log10 space.

    With p the grid's choice, the interval starts as [p / 10, 10 p]. Each step scores its two ends (the
    lower end first, so it wins ties) and keeps the better one as the current choice; the interval then
    shrinks to the half, in log10, on the side of the better end. The result is the last step's choice
    (p when ``steps`` is 0), as in the reference, even where an earlier value scored higher. ``score`` is
    called again for a value seen before; a caller whose scores are costly remembers them.
    """
    if steps < 0:
        raise SearchError(f"log_bisection needs steps >= 0, got {steps}")
    if any(not value > 0 for value in grid):
        raise SearchError(f"log_bisection searches positive values; the grid holds {list(grid)}")
    coarse = grid_search(grid, score)
    low, high = coarse.chosen / 10.0, coarse.chosen * 10.0
    chosen = coarse.chosen
    results = []
    for _ in range(steps):
        step = grid_search((low, high), score)
        results.append(step)
        middle = 10.0 ** (0.5 * (math.log10(low) + math.log10(high)))
        if step.index == 1:
            chosen, low = high, middle
        else:
            chosen, high = low, middle
    return BisectionResult(chosen, coarse, tuple(results))
