"""The decoded-image cache: same results as decoding the files, reused, never used stale or damaged, atomic."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import guidg.image_cache as image_cache
from guidg.backbone import TINY_SPEC, load_backbone
from guidg.evaluation import image_features
from guidg.features import encode_views
from guidg.image_cache import (
    CacheSettings,
    DamagedImageCacheError,
    ImageCacheError,
    DecodeSpec,
    cache_root,
    open_cache,
    open_or_build,
    using_image_cache,
    verify_cache,
)
from guidg.transforms import eval_transform, prompt_train_transform
from imagenet_dg.loading import LabeledImages

SIZES = [(40, 52), (61, 37), (33, 33), (48, 90), (75, 44), (36, 50)]


def write_images(folder: Path, sizes=SIZES, seed: int = 0) -> LabeledImages:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, (height, width) in enumerate(sizes):
        # Smooth content, so resampling differences stay small and comparable.
        base = rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)
        picture = Image.fromarray(base).resize((width, height), Image.Resampling.BILINEAR)
        path = folder / f"{index:03d}.jpg"
        picture.save(path, quality=92)
        paths.append(path)
    return LabeledImages(tuple(paths), tuple(i % 3 for i in range(len(paths))), ("d",) * len(paths))


@pytest.fixture(scope="module")
def backbone():
    return load_backbone(TINY_SPEC)


@pytest.fixture()
def images(tmp_path: Path) -> LabeledImages:
    return write_images(tmp_path / "images")


def test_evaluation_features_are_identical_with_and_without_the_cache(backbone, images, tmp_path):
    plain = image_features(backbone, images)
    with using_image_cache(CacheSettings(tmp_path / "cache")):
        cached = image_features(backbone, images)
    assert torch.equal(plain, cached)
    assert open_cache(tmp_path / "cache", images, eval_transform(backbone.image_size).decode_spec()) is not None


def test_centre_crops_from_the_cache_equal_the_evaluation_transform(images, tmp_path):
    transform = eval_transform(32)
    cache, _ = open_or_build(tmp_path / "cache", images, transform.decode_spec())
    for index, path in enumerate(images.paths):
        expected = transform(Image.open(path).convert("RGB"))
        from guidg.transforms import normalise_pixels

        got = normalise_pixels(transform.from_pixels(cache.pixels(index), cache.source_size(index)))
        assert torch.equal(got, expected)
        assert cache.source_size(index) == SIZES[index]


def test_a_second_open_reads_without_decoding(images, tmp_path, monkeypatch):
    spec = DecodeSpec(32)
    _, first = open_or_build(tmp_path / "cache", images, spec)
    assert first.built

    def refuse(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(image_cache, "_decode_pil", refuse)
    cache, second = open_or_build(tmp_path / "cache", images, spec)
    assert not second.built
    assert len(cache) == len(images)


def test_a_changed_manifest_or_image_file_gives_a_new_cache(images, tmp_path):
    spec = DecodeSpec(32)
    root = tmp_path / "cache"
    cache, _ = open_or_build(root, images, spec, content_hash="a" * 64)
    assert open_cache(root, images, spec, content_hash="b" * 64) is None
    # Rewriting an image (new content, new modification time) makes the old cache unreachable.
    picture = Image.new("RGB", (52, 40), (200, 10, 10))
    os.utime(images.paths[0], ns=(1, 1))
    picture.save(images.paths[0], quality=92)
    assert open_cache(root, images, spec, content_hash="a" * 64) is None
    rebuilt, stats = open_or_build(root, images, spec, content_hash="a" * 64)
    assert stats.built and rebuilt.folder != cache.folder
    assert rebuilt.pixels(0)[0].float().mean() > 150  # the new red picture, not the old pixels


def test_a_truncated_shard_is_detected_and_rebuilt(images, tmp_path):
    spec = DecodeSpec(32)
    cache, _ = open_or_build(tmp_path / "cache", images, spec)
    expected = cache.pixels(3).clone()
    shard = cache.folder / "shard-00000.u8"
    with open(shard, "r+b") as handle:
        handle.truncate(shard.stat().st_size - 10)
    assert open_cache(tmp_path / "cache", images, spec) is None
    rebuilt, stats = open_or_build(tmp_path / "cache", images, spec)
    assert stats.built
    assert torch.equal(rebuilt.pixels(3), expected)
    assert verify_cache(rebuilt) == []


def test_damage_that_keeps_size_and_time_is_caught_when_read_and_rebuilt_next_time(images, tmp_path):
    spec = DecodeSpec(32)
    cache, _ = open_or_build(tmp_path / "cache", images, spec)
    shard = cache.folder / "shard-00000.u8"
    before = shard.stat()
    offset = int(cache.index[2][1])
    with open(shard, "r+b") as handle:
        handle.seek(offset + 5)
        value = handle.read(1)[0]
        handle.seek(offset + 5)
        handle.write(bytes([value ^ 0xFF]))
    os.utime(shard, ns=(before.st_atime_ns, before.st_mtime_ns))
    reopened, stats = open_or_build(tmp_path / "cache", images, spec)
    assert not stats.built  # size and time agree: only the per-image checksum can tell
    assert verify_cache(reopened) != []
    reopened.pixels(1)  # undamaged images still read
    with pytest.raises(DamagedImageCacheError, match="rebuild"):
        reopened.pixels(2)
    _, again = open_or_build(tmp_path / "cache", images, spec)
    assert again.built


def test_an_interrupted_build_leaves_no_cache_and_the_next_build_completes(images, tmp_path, monkeypatch):
    spec = DecodeSpec(32)
    real = image_cache._decode_pil

    def interrupted(paths, short_side, workers):
        for number, item in enumerate(real(paths, short_side, workers)):
            if number == 3:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(image_cache, "_decode_pil", interrupted)
    with pytest.raises(KeyboardInterrupt):
        open_or_build(tmp_path / "cache", images, spec)
    assert open_cache(tmp_path / "cache", images, spec) is None
    assert list((tmp_path / "cache").iterdir()) == []  # nothing half-written stays behind
    monkeypatch.setattr(image_cache, "_decode_pil", real)
    cache, stats = open_or_build(tmp_path / "cache", images, spec)
    assert stats.built and len(cache) == len(images)


def test_cache_files_honour_the_umask(images, tmp_path):
    old = os.umask(0o027)
    try:
        cache, _ = open_or_build(tmp_path / "cache", images, DecodeSpec(32))
    finally:
        os.umask(old)
    assert stat.S_IMODE(cache.folder.stat().st_mode) == 0o750
    for file in cache.folder.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o640


def test_small_shards_split_the_images_and_read_back_the_same(images, tmp_path):
    whole, _ = open_or_build(tmp_path / "one", images, DecodeSpec(32))
    split, _ = open_or_build(tmp_path / "many", images, DecodeSpec(32), shard_bytes=8000)
    assert len(split.record["shards"]) > 1
    for index in range(len(images)):
        assert torch.equal(whole.pixels(index), split.pixels(index))


def test_caches_go_next_to_the_manifests_unless_that_folder_is_read_only(tmp_path, monkeypatch):
    dataset, runs = tmp_path / "dataset", tmp_path / "runs"
    dataset.mkdir()
    # Beside the build folder, never inside it: a build folder holds only what its manifest lists.
    assert cache_root(dataset, runs) == (tmp_path / "dataset.decoded-images", "dataset")
    writable = os.access
    monkeypatch.setattr(image_cache.os, "access", lambda path, mode: False if Path(path) == tmp_path else writable(path, mode))
    assert cache_root(dataset, runs) == (runs / "decoded-images", "runs")


def test_seeded_views_from_the_cache_repeat_and_follow_their_seeds(backbone, images, tmp_path):
    transform = prompt_train_transform(backbone.image_size, (0.5, 1.0), True)
    with using_image_cache(CacheSettings(tmp_path / "cache")):
        first = encode_views(backbone, images, transform, views=2, seed=3, batch_size=4)
        again = encode_views(backbone, images, transform, views=2, seed=3, batch_size=5)
        other = encode_views(backbone, images, transform, views=2, seed=4, batch_size=4)
    assert torch.allclose(first, again, atol=1e-6)
    assert not torch.allclose(first, other, atol=1e-3)


def test_the_jpeg_decoder_option_keeps_its_own_cache_close_to_pillow(images, tmp_path):
    # decode_jpeg runs on the CPU here (libjpeg-turbo); on a GPU the same code decodes with nvjpeg.
    pillow, _ = open_or_build(tmp_path / "cache", images, DecodeSpec(32))
    decoded, stats = open_or_build(tmp_path / "cache", images, DecodeSpec(32, "nvjpeg"), device="cpu")
    assert stats.built and decoded.folder != pillow.folder
    for index in range(len(images)):
        a, b = pillow.pixels(index), decoded.pixels(index)
        assert a.shape == b.shape
        assert (a.float() - b.float()).abs().mean() < 4.0
    assert decoded.record["decoded_by"] == {"nvjpeg": len(images), "pil": 0}


def test_the_jpeg_decoder_leaves_rotated_jpegs_and_other_formats_to_pillow(images, tmp_path):
    # nvjpeg on a GPU ignores EXIF orientation: a rotated photo must come out as Pillow shows it, upright.
    folder = tmp_path / "more"
    folder.mkdir()
    picture = Image.open(images.paths[0]).convert("RGB")
    assert picture.width != picture.height
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    picture.save(folder / "rotated.jpg", exif=exif.tobytes(), quality=92)
    picture.save(folder / "drawing.png")
    mixed = LabeledImages((*images.paths, folder / "rotated.jpg", folder / "drawing.png"),
                          (*images.labels, 0, 1), (*images.domains, "d", "d"))
    pillow, _ = open_or_build(tmp_path / "cache", mixed, DecodeSpec(32))
    decoded, _ = open_or_build(tmp_path / "cache", mixed, DecodeSpec(32, "nvjpeg"), device="cpu")
    assert decoded.record["decoded_by"] == {"nvjpeg": len(images), "pil": 2}
    rotated = len(images)
    upright = (picture.width, picture.height)  # (height, width) once turned by a quarter
    assert decoded.source_size(rotated) == pillow.source_size(rotated) == upright
    assert torch.equal(decoded.pixels(rotated), pillow.pixels(rotated))
    assert torch.equal(decoded.pixels(rotated + 1), pillow.pixels(rotated + 1))


def test_a_jpeg_decoder_that_cannot_start_is_an_error_not_a_fallback(images, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("Failed to initialize nvjpeg with hardware backend")

    monkeypatch.setattr(image_cache, "decode_jpeg", broken)
    with pytest.raises(ImageCacheError, match="pipeline.decoder=pil"):
        open_or_build(tmp_path / "cache", images, DecodeSpec(32, "nvjpeg"), device="cpu")
    assert not any((tmp_path / "cache").glob("*/cache.json"))
