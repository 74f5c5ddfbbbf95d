"""The miniature world: every concept in every style, deterministic pictures, styles that really differ."""

from __future__ import annotations

import numpy as np
import pytest

from imagenet_dg.mini import MINI_WNIDS
from imagenet_dg.suites import SUITES
from imagenet_dg.taxonomy import load_taxonomy
from imagenet_dg.world import (
    CONCEPTS,
    RENDITIONS,
    SOURCE_STYLES,
    STYLE_ALIASES,
    STYLES,
    WorldError,
    draw,
    resolve_style,
)

PACS_CLASSES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
SUITE_DOMAINS = {
    "pacs": ("art_painting", "cartoon", "photo", "sketch"),
    "domainnet": ("clipart", "infograph", "painting", "quickdraw", "real", "sketch"),
    "officehome": ("Art", "Clipart", "Product", "Real_World"),
    "vlcs": ("Caltech101", "LabelMe", "SUN09", "VOC2007"),
    "terraincognita": ("location_100", "location_38", "location_43", "location_46"),
}


def as_array(image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64) / 255.0


def saturation(image: np.ndarray) -> float:
    high, low = image.max(axis=2), image.min(axis=2)
    return float(np.mean(np.where(high > 0, (high - low) / np.maximum(high, 1e-9), 0.0)))


def test_the_concepts_are_the_miniature_imagenet_classes_and_every_miniature_suite_class_by_its_prompt_name():
    names = load_taxonomy().names
    suite_classes = {name for s in SUITES.values() if s.miniature_of for name in s.prompt_names()}

    assert set(PACS_CLASSES) <= suite_classes and {"Alarm Clock", "The Eiffel Tower", "teddy-bear"} <= suite_classes
    assert set(CONCEPTS) == {names[w] for w in MINI_WNIDS} | suite_classes


@pytest.mark.parametrize("suite", list(SUITE_DOMAINS))
def test_every_domain_of_the_standard_suites_is_a_style(suite):
    for domain in SUITE_DOMAINS[suite]:
        assert domain in STYLES
        assert resolve_style(domain) in STYLES


@pytest.mark.parametrize("style", STYLES)
def test_every_style_draws_every_concept_at_the_requested_size(style):
    for concept in CONCEPTS:
        image = draw(concept, style, 3, size=40)
        assert image.mode == "RGB" and image.size == (40, 40)


def test_the_same_arguments_give_the_same_pixels_and_another_seed_another_picture():
    first = draw("giraffe", "photo", (0, 1, 2)).tobytes()

    assert draw("giraffe", "photo", (0, 1, 2)).tobytes() == first
    assert draw("giraffe", "photo", (0, 1, 3)).tobytes() != first
    assert draw("horse", "photo", (0, 1, 2)).tobytes() != first


def test_an_alias_draws_exactly_its_style():
    for alias, style in STYLE_ALIASES.items():
        assert draw("house", alias, 5).tobytes() == draw("house", style, 5).tobytes()


@pytest.mark.parametrize("call, match", [
    (lambda: draw("unicorn", "photo", 0), "unknown concept 'unicorn'.*goldfish"),
    (lambda: draw("dog", "oil", 0), "unknown style 'oil'.*sketch"),
    (lambda: draw("dog", "photo", -1), "seed"),
    (lambda: draw("dog", "photo", (1, True)), "seed"),
    (lambda: draw("dog", "photo", 0, size=8), "size"),
])
def test_bad_arguments_are_refused_with_what_is_expected(call, match):
    with pytest.raises(WorldError, match=match):
        call()


def test_sketches_and_quick_drawings_are_grey_lines_on_white():
    for style in ("sketch", "quickdraw"):
        images = [as_array(draw(c, style, i)) for i, c in enumerate(CONCEPTS)]
        assert max(saturation(i) for i in images) < 0.05
        assert min(i.mean() for i in images) > 0.75  # mostly paper


def test_photos_are_coloured_and_textured_renditions_are_flatter():
    def flat_share(image: np.ndarray) -> float:
        return float((np.abs(np.diff(image, axis=1)).max(axis=2) <= 4 / 255).mean())

    photos = [as_array(draw(c, "photo", i)) for i, c in enumerate(CONCEPTS)]
    renditions = [as_array(draw(c, RENDITIONS[i % len(RENDITIONS)], i)) for i, c in enumerate(CONCEPTS)]

    assert np.mean([saturation(i) for i in photos]) > 0.2
    assert np.mean([flat_share(i) for i in renditions]) > np.mean([flat_share(i) for i in photos]) + 0.15


def test_the_adversarial_style_is_much_noisier_than_photos():
    def roughness(image: np.ndarray) -> float:
        return float(np.abs(np.diff(image, axis=1)).mean())

    photos = [roughness(as_array(draw(c, "photo", i))) for i, c in enumerate(CONCEPTS)]
    hard = [roughness(as_array(draw(c, "adversarial", i))) for i, c in enumerate(CONCEPTS)]

    assert min(hard) > 2 * np.median(photos)


def test_a_camera_trap_location_keeps_its_scene_across_frames_and_differs_from_another():
    def edges(style: str, seed: int) -> np.ndarray:
        return as_array(draw("dog", style, seed))[:12].mean(axis=2)  # the top rows: scene, rarely the animal

    same = np.abs(edges("location_38", 1) - edges("location_38", 2)).mean()
    other = np.abs(edges("location_38", 1) - edges("location_100", 1)).mean()
    assert same < other


def test_a_trail_camera_frame_has_a_scene_of_its_own_unlike_a_fixed_location():
    def agreement(style: str) -> float:
        # how alike the average frames of two sets of seeds are, each row less its mean (the sky's brightening)
        averages = [np.mean([as_array(draw("coyote", style, s)).mean(axis=2) for s in seeds], axis=0)
                    for seeds in (range(12), range(12, 24))]
        first, second = (a - a.mean(axis=1, keepdims=True) for a in averages)
        return float(np.corrcoef(first.ravel(), second.ravel())[0, 1])

    assert agreement("location_43") > 0.8 and agreement("trail-camera") < 0.5


def test_the_source_styles_are_those_of_the_imagenet_dg_sources():
    assert set(SOURCE_STYLES) == {"photo", "photo-v2", "sketch"}
    assert not set(SOURCE_STYLES) & set(RENDITIONS) and "adversarial" not in SOURCE_STYLES
