"""Zero-shot classification (docs/methods.md, "Zero-shot CLIP"): text classifiers from templates, logits = 100 x cosine."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

from guidg.backbone import TINY_SPEC, Backbone, load_backbone
from guidg.methods.text_heads import head_logits
from guidg.losses import LOGIT_SCALE
from guidg.zeroshot import TEMPLATE_SETS, TemplateSetError, zeroshot_classifier

CLASS_NAMES = ["goldfish", "great white shark", "missile", "missile"]


@pytest.fixture(scope="module")
def tiny() -> Backbone:
    return load_backbone(TINY_SPEC)


def encode(tiny: Backbone, texts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return F.normalize(tiny.model.encode_text(tiny.tokenizer(texts)), dim=-1)


def test_single_template_set_is_a_photo_of_a_name() -> None:
    assert [template("dog") for template in TEMPLATE_SETS["single"]] == ["a photo of a dog."]


def test_ensemble_is_the_80_openai_imagenet_templates() -> None:
    ensemble = TEMPLATE_SETS["ensemble"]
    assert len(ensemble) == 80
    assert [t("dog") for t in ensemble] == [t("dog") for t in OPENAI_IMAGENET_TEMPLATES]


def test_single_template_classifier_is_the_normalised_prompt_encoding(tiny: Backbone) -> None:
    classifier = zeroshot_classifier(tiny, CLASS_NAMES, templates="single")
    expected = encode(tiny, [f"a photo of a {name}." for name in CLASS_NAMES])
    assert classifier.shape == (len(CLASS_NAMES), 64) and classifier.dtype == torch.float32
    torch.testing.assert_close(classifier, expected, atol=1e-5, rtol=0)


def test_ensemble_classifier_is_the_renormalised_mean_of_normalised_template_features(tiny: Backbone) -> None:
    classifier = zeroshot_classifier(tiny, CLASS_NAMES[:2], templates="ensemble", batch_size=37)
    rows = []
    for name in CLASS_NAMES[:2]:
        per_template = encode(tiny, [template(name) for template in OPENAI_IMAGENET_TEMPLATES])
        mean = per_template.mean(dim=0)
        rows.append(mean / mean.norm())
    torch.testing.assert_close(classifier, torch.stack(rows), atol=1e-5, rtol=0)
    torch.testing.assert_close(classifier.norm(dim=-1), torch.ones(2))


def test_classifier_rows_follow_the_class_name_order(tiny: Backbone) -> None:
    forward = zeroshot_classifier(tiny, CLASS_NAMES)
    backward = zeroshot_classifier(tiny, CLASS_NAMES[::-1])
    torch.testing.assert_close(forward, backward.flip(0), atol=1e-5, rtol=0)


def test_classifier_does_not_depend_on_the_batch_size(tiny: Backbone) -> None:
    torch.testing.assert_close(
        zeroshot_classifier(tiny, CLASS_NAMES, batch_size=1),
        zeroshot_classifier(tiny, CLASS_NAMES, batch_size=256),
        atol=1e-5,
        rtol=0,
    )


def test_unknown_template_set_is_refused(tiny: Backbone) -> None:
    with pytest.raises(TemplateSetError, match="single, ensemble"):
        zeroshot_classifier(tiny, CLASS_NAMES, templates="simple")


def test_logits_are_100_times_the_cosine_similarity() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(6, 64, generator=generator) * 3.0
    classifier = torch.randn(5, 64, generator=generator)
    expected = 100.0 * F.cosine_similarity(images[:, None, :], classifier[None, :, :], dim=-1)
    assert LOGIT_SCALE == 100.0
    # the zero-shot predictor's logits, of normalised image features against the normalised classifier's rows
    logits = head_logits(F.normalize(images, dim=-1), F.normalize(classifier, dim=-1)[None], None, batch_size=4)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-5)
