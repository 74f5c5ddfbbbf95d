"""What a leaderboard table can show of each record: accuracy (the default), worst-class accuracy, ECE or NLL.

Every table, overview, caption and plot of the leaderboard is drawn for one metric; the captions say what the
number is and which way is better. A record that did not measure the metric (``null``, e.g. the calibration of a
run made before it was recorded) leaves its cell out rather than counting as zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from imagenet_dg.records import Record


@dataclass(frozen=True)
class Metric:
    """One number of a record, with how the leaderboard names, orders and writes it."""

    name: str
    """As ``--metric`` takes it."""
    title: str
    """As a caption starts: ``Accuracy``."""
    unit: str
    """``%`` or ``nats``."""
    value: Callable[[Record], float | None]
    lower_is_better: bool
    decimals: int
    about: str
    """What the number is, said in every caption (empty for accuracy, which needs no words)."""
    is_accuracy: bool = False
    """Whether it is the accuracy itself: published numbers and chance levels are accuracies."""

    @property
    def noun(self) -> str:
        """``accuracy (%)``, ``negative log-likelihood (nats)``: in axis labels and running text."""
        return f"{self.title[0].lower()}{self.title[1:]} ({self.unit})"

    @property
    def heading(self) -> str:
        """``Accuracy (%)``: how a caption names the number."""
        return f"{self.title} ({self.unit})"


ACCURACY = Metric("accuracy", "Accuracy", "%", lambda r: r.accuracy, False, 1, "", is_accuracy=True)
METRICS: dict[str, Metric] = {m.name: m for m in (
    ACCURACY,
    Metric("worst-class", "Worst-class accuracy", "%", lambda r: r.worst_class_accuracy, False, 1,
           "Worst-class accuracy: the lowest accuracy of any of the target's classes; higher is better."),
    Metric("ece", "Expected calibration error", "%", lambda r: r.ece, True, 1,
           "Expected calibration error: over 15 equal-width bins of confidence (the maximum softmax probability), "
           "the sum of |bin| / N × |accuracy − mean confidence| of each bin; lower is better."),
    Metric("nll", "Negative log-likelihood", "nats", lambda r: r.nll, True, 3,
           "Negative log-likelihood: the mean over the target's images of −log softmax at the true class (natural "
           "log); lower is better."),
)}
"""Every metric by name; ``accuracy`` is the default."""

