"""Model selection: the named rules, and the source-only data they choose on."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

import pytest

from guidg.model_selection import EpochSelection, SelectionError, grid_search, validation_images


def test_epochs_are_evaluated_every_eval_every_and_after_the_last() -> None:
    selection = EpochSelection(epochs=7, eval_every=3)
    assert [e for e in range(1, 8) if selection.evaluates(e)] == [3, 6, 7]


def test_the_first_best_epoch_is_kept_and_its_state_copied_only_then() -> None:
    selection = EpochSelection(epochs=6, eval_every=2)
    copied = []
    for epoch, accuracy in ((2, 50.0), (4, 60.0), (6, 60.0)):
        selection.offer(epoch, accuracy, lambda epoch=epoch: copied.append(epoch) or f"state {epoch}")
    assert (selection.best_epoch, selection.best_accuracy, selection.best_state) == (4, 60.0, "state 4")
    assert copied == [2, 4]


def test_without_validation_images_the_last_epoch_is_kept() -> None:
    selection = EpochSelection(epochs=3, eval_every=5)
    selection.keep_last(3, "last")
    assert (selection.best_epoch, selection.best_accuracy, selection.best_state) == (3, None, "last")


def test_a_grid_search_keeps_the_first_best_candidate_and_never_a_nan() -> None:
    scores = {0.1: float("nan"), 1.0: 70.0, 10.0: 80.0, 100.0: 80.0}
    result = grid_search(list(scores), scores.__getitem__)
    assert (result.chosen, result.index, result.score) == (10.0, 2, 80.0)
    assert [c for c, _ in result.scores] == list(scores)
    with pytest.raises(SelectionError, match="NaN"):
        grid_search([1, 2], lambda c: float("nan"))
    with pytest.raises(SelectionError, match="at least one"):
        grid_search([], lambda c: 1.0)


def test_fewshot_selects_on_the_guide_samples_and_full_on_the_held_out_part(mini_task) -> None:
    assert validation_images(mini_task) == mini_task.guide
    full = dataclasses.replace(mini_task, protocol="full", held_out=mini_task.expert)
    assert validation_images(full) == mini_task.expert


def test_selection_images_of_the_target_are_refused(mini_task) -> None:
    leaking = dataclasses.replace(mini_task, guide=MappingProxyType({**mini_task.guide, mini_task.target: mini_task.test}))
    with pytest.raises(SelectionError, match="must be those of the sources"):
        validation_images(leaking)
