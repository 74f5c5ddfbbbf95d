"""Model selection: the named rules by which a method chooses what it keeps, and the data they choose on.

Every rule chooses on source data only: :func:`validation_images` is the one place that says which images
those are (under the ``fewshot`` protocol the guide pool's k-shot sample of each source, under ``full`` the
sources' held-out 20%). The target is scored once, after training, and nothing here ever reads it. A method
declares its rule by name (:data:`RULES`), the run records it (``docs/methods.md``, "Model selection").

- ``none``: nothing is trained, nothing is chosen (zero-shot CLIP).
- ``source-validation-epoch``: the epoch whose state has the best accuracy on the validation images,
  evaluated every ``eval_every`` epochs and after the last; the first such epoch on ties; without
  validation images, the last epoch (CoOp, and every GuiDG step-1 expert on its own source's images).
  :class:`EpochSelection` is this rule for a training loop.
- ``last-step``: the weights after the last step (and the base's weight averaging); nothing is compared
  (ERM, CLIPood, UEO: the paper's step 2 selects nothing).
- ``source-validation-epoch-then-last-step``: GuiDG: ``source-validation-epoch`` for each step-1 expert,
  ``last-step`` for step 2.
- ``source-validation-grid``: the candidate of a grid (e.g. a regularisation strength, or Tip-Adapter's alpha
  and beta) with the best accuracy on the validation images; the first such candidate on ties
  (:func:`grid_search`; the linear probe's regularisation by :func:`log_bisection`, CoOp's refinement of a
  coarse grid by halvings in log space, each a two-candidate :func:`grid_search`).
- ``source-validation-epoch-then-grid``: ``source-validation-epoch`` for the trained state (at fixed
  hyperparameters), then ``source-validation-grid`` for hyperparameters applied to it (Tip-Adapter-F's alpha
  and beta).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from imagenet_dg.errors import ImageNetDGError
from imagenet_dg.loading import LabeledImages, TaskData

T = TypeVar("T")


class SelectionError(ImageNetDGError):
    """A selection rule was asked for that does not exist, or used on data it must not see."""


@dataclass(frozen=True)
class SelectionRule:
    """A named model-selection rule."""

    name: str
    description: str


RULES: Mapping[str, SelectionRule] = MappingProxyType({rule.name: rule for rule in (
    SelectionRule("none", "nothing trained, nothing chosen"),
    SelectionRule("source-validation-epoch",
                  "the epoch with the best accuracy on the sources' validation images, evaluated every eval_every "
                  "epochs and after the last (the first on ties; the last epoch without validation images)"),
    SelectionRule("last-step", "the weights after the last step (and weight averaging); nothing compared"),
    SelectionRule("source-validation-epoch-then-last-step",
                  "each step-1 expert by source-validation-epoch on its own source's validation images; step 2 by "
                  "last-step"),
    SelectionRule("source-validation-grid",
                  "the grid candidate with the best accuracy on the sources' validation images (the first on ties)"),
    SelectionRule("source-validation-epoch-then-grid",
                  "the trained state by source-validation-epoch, then its hyperparameters by source-validation-grid"),
)})
"""Every selection rule, by name."""


def get_rule(name: str) -> SelectionRule:
    """The rule called ``name``; an error listing the rules otherwise."""
    try:
        return RULES[name]
    except KeyError:
        raise SelectionError(f"unknown model-selection rule {name!r}; expected one of {', '.join(RULES)}") from None


SELECTION_SPLITS: Mapping[str, str] = MappingProxyType({"fewshot": "guide", "full": "held_out"})
"""Per protocol, the :class:`~imagenet_dg.loading.TaskData` split a method selects on: the guide pool's k-shot
sample (``fewshot``: the paper selects step-1 experts on it) or the sources' held-out 20% (``full``, DomainBed's
training-domain validation)."""


def validation_images(task: TaskData) -> Mapping[str, LabeledImages]:
    """Source domain -> its model-selection images (see :data:`SELECTION_SPLITS`); never the target's."""
    try:
        split = SELECTION_SPLITS[task.protocol]
    except KeyError:
        raise SelectionError(f"task {task.name}: no selection data defined for protocol {task.protocol!r}") from None
    chosen = getattr(task, split)
    if task.target in chosen or set(chosen) != set(task.sources):
        raise SelectionError(f"task {task.name}: selection images must be those of the sources "
                             f"{', '.join(task.sources)}, found {', '.join(chosen)}")
    return chosen


def pooled_validation_images(task: TaskData) -> LabeledImages:
    """Every source's selection images, in source order."""
    chosen = validation_images(task)
    return LabeledImages.concat([chosen[d] for d in task.sources])


@dataclass
class EpochSelection(Generic[T]):
    """The ``source-validation-epoch`` rule inside a training loop of ``epochs`` epochs (counted from 1).

    The loop asks :meth:`evaluates` after each epoch, then :meth:`offer`\\ s the epoch's accuracy with a
    function that copies its state (called only when that state is kept); a loop without validation images
    calls :meth:`keep_last` after the last epoch instead.
    """

    epochs: int
    eval_every: int
    best_epoch: int = field(init=False)
    best_accuracy: float | None = field(init=False, default=None)
    best_state: T | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.eval_every < 1:
            raise SelectionError(f"epoch selection needs epochs >= 1 and eval_every >= 1, got {self.epochs}, "
                                 f"{self.eval_every}")
        self.best_epoch = self.epochs

    def evaluates(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` is evaluated: every ``eval_every`` epochs, and the last."""
        return epoch % self.eval_every == 0 or epoch == self.epochs

    def offer(self, epoch: int, accuracy: float, state: Callable[[], T]) -> bool:
        """Keep epoch ``epoch`` (``state()``) if its ``accuracy`` beats every earlier one; whether it was kept."""
        if self.best_accuracy is not None and not accuracy > self.best_accuracy:
            return False
        self.best_epoch, self.best_accuracy, self.best_state = epoch, accuracy, state()
        return True

    def keep_last(self, epoch: int, state: T) -> None:
        """Without validation images: the last epoch's state is kept."""
        self.best_epoch, self.best_state = epoch, state


@dataclass(frozen=True)
class SearchResult(Generic[T]):
    """What :func:`grid_search` chose, and every candidate's score in the order they were tried."""

    chosen: T
    index: int
    """Position of :attr:`chosen` among the candidates."""
    score: float
    scores: tuple[tuple[T, float], ...]

    def to_record(self) -> dict[str, Any]:
        """JSON-able: the chosen candidate, its score and every (candidate, score) pair."""
        return {"chosen": self.chosen, "score": self.score, "scores": [[c, v] for c, v in self.scores]}


def grid_search(candidates: Sequence[T], score: Callable[[T], float]) -> SearchResult[T]:
    """The ``source-validation-grid`` rule: ``score(candidate)`` (the accuracy on the sources' validation
    images) of every candidate, once, in order; the highest wins, the first of equal scores; NaN never wins."""
    if not candidates:
        raise SelectionError("a grid search needs at least one candidate")
    scores = tuple((candidate, float(score(candidate))) for candidate in candidates)
    best: int | None = None
    for index, (_, value) in enumerate(scores):
        if not math.isnan(value) and (best is None or value > scores[best][1]):
            best = index
    if best is None:
        raise SelectionError(f"all {len(scores)} candidates scored NaN; nothing can be chosen")
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
        raise SelectionError(f"log_bisection needs steps >= 0, got {steps}")
    if any(not value > 0 for value in grid):
        raise SelectionError(f"log_bisection searches positive values; the grid holds {list(grid)}")
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
