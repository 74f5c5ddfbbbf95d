"""Model selection across a sweep, computed from the records, as DomainBed selects hyperparameters.

Each run chooses its own model (its record's ``model_selection``); a sweep of one method over several
configurations on one task and seed leaves one record per configuration. Without a rule (``none``, the default)
every configuration is a row of its own. Under a rule the records of one (method, base, routing; target; seed) that
differ only in their configuration are reduced to one:

- ``training-domain``: the highest mean accuracy on the sources' validation images (``validation_accuracy``): what
  a practitioner can do, the target unseen.
- ``oracle``: the highest accuracy on the target itself: an upper bound that looks at the target, never a result
  of domain generalisation, and labelled so wherever it is shown.

Ties go to the configuration that sorts first (the preset's own before changed settings), so the choice is the same
on every machine.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

from imagenet_dg.records import Record

NO_SELECTION = "none"


@dataclass(frozen=True)
class SelectionRule:
    """How one configuration is chosen among a sweep's, and how tables made under it are labelled."""

    name: str
    """As ``--selection`` takes it."""
    title: str
    """Said in every title of a table made under the rule."""
    caption: str
    """Said first in every caption."""
    score: Callable[[Record], float | None]
    """Higher is chosen; None when the record cannot be scored (the sweep is then refused)."""
    needs: str
    """What a record must hold to be scored, for the error that says it lacks it."""


def _mean_validation(record: Record) -> float | None:
    return statistics.fmean(record.validation_accuracy.values()) if record.validation_accuracy else None


RULES: dict[str, SelectionRule] = {rule.name: rule for rule in (
    SelectionRule(
        "training-domain", "selected by training-domain validation",
        "Model selection across configurations: training-domain validation (for each method, target and seed, the "
        "configuration with the highest mean accuracy on the sources' validation images).",
        _mean_validation, "source validation accuracies (validation_accuracy)"),
    SelectionRule(
        "oracle", "ORACLE selection on the target (upper bound)",
        "Model selection across configurations: ORACLE, an upper bound that looks at the target (for each method, "
        "target and seed, the configuration with the highest target accuracy); not a domain-generalisation result.",
        lambda record: record.accuracy, "a target accuracy"),
)}
"""The rules by name; ``none`` (no rule: every configuration its own row) is not one of them."""
SELECTIONS = (NO_SELECTION, *RULES)
