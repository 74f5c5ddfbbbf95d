"""Seeded augmentation on cached uint8 pixels against the Pillow pipeline, and training batches from the cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from guidg.finetune import PoolImages, StepSampler, step_batches
from guidg.image_cache import CacheSettings, DecodeSpec, open_or_build, using_image_cache
from guidg.transforms import (
    SeededTransform,
    finetune_train_transform,
    normalise_pixels,
    prompt_train_transform,
)
from test_image_cache import write_images

SIZES = [(75, 100), (60, 45), (90, 72)]


@pytest.fixture()
def images(tmp_path: Path):
    return write_images(tmp_path / "images", SIZES)


def _pil(path: Path) -> Image.Image:
    return Image.open(path).convert("RGB")


def test_finetune_crop_without_randaugment_is_identical_to_pillow(images, tmp_path):
    transform = finetune_train_transform(32, randaugment=False)
    cache, _ = open_or_build(tmp_path / "cache", images, transform.decode_spec())
    for index, path in enumerate(images.paths):
        cached = normalise_pixels(transform.from_pixels(cache.pixels(index), cache.source_size(index)))
        assert torch.equal(cached, transform(_pil(path)))


def test_randaugment_draws_the_same_operations_and_differs_at_most_by_rounding(images, tmp_path):
    transform = SeededTransform(finetune_train_transform(32, randaugment=True))
    cache, _ = open_or_build(tmp_path / "cache", images, transform.transform.decode_spec())
    one_level = 1 / 255 / min(0.26130258, 0.26862954, 0.27577711)  # one uint8 step, normalised
    exact = 0
    for index, path in enumerate(images.paths):
        for seed in range(4):
            pillow = transform(_pil(path), seed)
            cached = normalise_pixels(transform.from_pixels(cache.pixels(index), cache.source_size(index), seed))
            # Same operations with the same magnitudes: Pillow's and torch's kernels round colour maths
            # differently, by one level here and there, never more than two.
            assert (pillow - cached).abs().max() <= 2 * one_level + 1e-5
            assert (pillow - cached).abs().mean() <= 0.25 * one_level
            exact += int(torch.equal(pillow, cached))
    assert exact > 0  # geometric and identity operations agree bit for bit


def test_random_crop_boxes_and_flips_are_drawn_as_pillow_draws_them(images):
    transform = prompt_train_transform(32, (0.08, 1.0), True)
    for index, path in enumerate(images.paths):
        picture = _pil(path)
        for seed in range(5):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                expected = T.RandomResizedCrop.get_params(picture, [0.08, 1.0], [3 / 4, 4 / 3])
                expected_flip = bool(torch.rand(1) < 0.5)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                assert transform.crop_box(SIZES[index]) == expected
                assert bool(torch.rand(1) < 0.5) == expected_flip


def test_random_crops_from_a_full_resolution_cache_match_pillow_up_to_resampling(images, tmp_path):
    # A cache at the files' own resolution: the same boxes, cut from the same pixels; only the resampling
    # kernel (torch's antialiased bicubic against Pillow's) differs.
    transform = SeededTransform(prompt_train_transform(32, (0.3, 1.0), True))
    for index, path in enumerate(images.paths):
        spec = DecodeSpec(min(SIZES[index]))
        single = images.select([index])
        cache, _ = open_or_build(tmp_path / f"cache{index}", single, spec)
        assert tuple(cache.pixels(0).shape[1:]) == SIZES[index]
        for seed in range(3):
            pillow = transform(_pil(path), seed)
            cached = normalise_pixels(transform.from_pixels(cache.pixels(0), cache.source_size(0), seed))
            assert (pillow - cached).abs().mean() < 0.05


def _batches(images, transform, sampler_args, device=None):
    sampler = StepSampler(*sampler_args)
    return [
        (x.clone(), y.clone(), d.clone())
        for x, y, d in step_batches([images], transform, sampler, num_workers=0, pin_memory=False, device=device)
    ]


def test_training_batches_from_the_cache_equal_the_files_without_randaugment(images, tmp_path):
    transform = finetune_train_transform(32, randaugment=False)
    args = ([len(images)], 2, 7, 3)
    from_files = _batches(images, transform, args)
    with using_image_cache(CacheSettings(tmp_path / "cache")):
        from_cache = _batches(images, transform, args, device=torch.device("cpu"))
    assert len(from_files) == len(from_cache) == 3
    for (x, y, d), (cx, cy, cd) in zip(from_files, from_cache):
        assert cx.dtype == torch.float32
        assert torch.equal(x, cx) and torch.equal(y, cy) and torch.equal(d, cd)


def test_training_batches_from_the_cache_keep_each_images_seeded_randaugment(images, tmp_path):
    transform = finetune_train_transform(32, randaugment=True)
    sampler = StepSampler([len(images)], 2, 7, 2)
    with using_image_cache(CacheSettings(tmp_path / "cache")):
        first = _batches(images, transform, ([len(images)], 2, 7, 2), device=torch.device("cpu"))
        again = _batches(images, transform, ([len(images)], 2, 7, 2), device=torch.device("cpu"))
    files = PoolImages([images], transform)
    for step, (x, _, _) in enumerate(first):
        assert torch.equal(x, again[step][0])
        pillow = torch.stack([files[item][0] for item in sampler.items(step)])
        assert (pillow - x).abs().mean() < 0.01
