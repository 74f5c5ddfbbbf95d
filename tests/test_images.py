"""Opening image files: every known defect of the raw releases gives an RGB picture or a clear error."""

from __future__ import annotations

import os
import pickle
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagenet_dg.errors import BadImageError
from imagenet_dg.images import UnreadableImageError, decode_image, open_image

RNG = np.random.default_rng(7)


def blocks(height: int = 48, width: int = 64) -> np.ndarray:
    """An RGB picture of flat 16x16 colour blocks: JPEG keeps flat blocks close to their colour."""
    small = RNG.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
    return np.kron(small, np.ones((16, 16, 1), dtype=np.uint8))


def broken_exif(orientation: int | None = None) -> bytes:
    """An EXIF block whose Make tag claims 1000 bytes at an offset past the end of the block."""
    entries = [struct.pack(">HHLL", 0x010F, 2, 1000, 0xFFF0)]
    if orientation is not None:
        entries.append(struct.pack(">HHLHH", 0x0112, 3, 1, orientation, 0))
    return b"Exif\x00\x00MM\x00*\x00\x00\x00\x08" + struct.pack(">H", len(entries)) + b"".join(entries) + bytes(4)


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_rgb_png_opens_with_exactly_its_pixels(tmp_path: Path) -> None:
    pixels = blocks()
    Image.fromarray(pixels).save(tmp_path / "x.png")
    image = open_image(tmp_path / "x.png")
    assert image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image), pixels)


def test_cmyk_jpeg_opens_as_rgb_with_its_colours(tmp_path: Path) -> None:
    pixels = blocks()
    Image.fromarray(pixels).convert("CMYK").save(tmp_path / "x.JPEG", quality=95)
    assert Image.open(tmp_path / "x.JPEG").mode == "CMYK"
    image = open_image(tmp_path / "x.JPEG")
    assert image.mode == "RGB"
    assert np.abs(np.asarray(image, dtype=int) - pixels).mean() < 4


def test_png_named_jpeg_opens_by_its_content(tmp_path: Path) -> None:
    pixels = blocks()
    Image.fromarray(pixels).save(tmp_path / "x.JPEG", format="PNG")
    decoded = decode_image(tmp_path / "x.JPEG")
    assert decoded.format == "PNG"
    np.testing.assert_array_equal(np.asarray(decoded.image), pixels)


def test_broken_exif_opens_silently(tmp_path: Path) -> None:
    pixels = blocks()
    Image.fromarray(pixels).save(tmp_path / "x.JPEG", quality=95, exif=broken_exif())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decoded = decode_image(tmp_path / "x.JPEG")
    assert decoded.image.size == (pixels.shape[1], pixels.shape[0])
    assert decoded.exif_problem is not None


def test_exif_without_a_tiff_header_is_ignored(tmp_path: Path) -> None:
    Image.fromarray(blocks()).save(tmp_path / "x.JPEG", exif=b"Exif\x00\x00" + bytes(range(40)))
    decoded = decode_image(tmp_path / "x.JPEG")
    assert decoded.image.size == (64, 48)
    assert "TIFF header" in (decoded.exif_problem or "")


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    pixels = blocks()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(pixels).save(tmp_path / "x.png", exif=exif)
    decoded = decode_image(tmp_path / "x.png")
    np.testing.assert_array_equal(np.asarray(decoded.image), np.rot90(pixels, k=-1))
    assert decoded.exif_problem is None


def test_readable_orientation_in_an_otherwise_broken_exif_is_applied(tmp_path: Path) -> None:
    pixels = blocks()
    Image.fromarray(pixels).save(tmp_path / "x.png", exif=broken_exif(orientation=3))
    decoded = decode_image(tmp_path / "x.png")
    np.testing.assert_array_equal(np.asarray(decoded.image), np.rot90(pixels, k=2))
    assert decoded.exif_problem is not None


def test_grayscale_opens_as_rgb_with_equal_channels(tmp_path: Path) -> None:
    gray = blocks()[:, :, 0]
    Image.fromarray(gray, mode="L").save(tmp_path / "x.png")
    np.testing.assert_array_equal(np.asarray(open_image(tmp_path / "x.png")), np.stack([gray] * 3, axis=-1))


def test_palette_image_opens_as_its_palette_colours(tmp_path: Path) -> None:
    palette = RNG.integers(0, 256, (256, 3), dtype=np.uint8)
    indices = RNG.integers(0, 256, (20, 30), dtype=np.uint8)
    picture = Image.fromarray(indices, mode="P")
    picture.putpalette(palette.tobytes())
    picture.save(tmp_path / "x.png", transparency=bytes([0] * 5 + [255] * 251))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = open_image(tmp_path / "x.png")
    np.testing.assert_array_equal(np.asarray(image), palette[indices])


@pytest.mark.parametrize("colour_channels", [3, 1], ids=["RGBA", "LA"])
def test_alpha_is_dropped(tmp_path: Path, colour_channels: int) -> None:
    colour = blocks()[:, :, :colour_channels]
    alpha = RNG.integers(0, 256, (48, 64, 1), dtype=np.uint8)
    Image.fromarray(np.concatenate([colour, alpha], axis=-1), mode="RGBA" if colour_channels == 3 else "LA").save(
        tmp_path / "x.png"
    )
    expected = np.broadcast_to(colour, (48, 64, 3))
    np.testing.assert_array_equal(np.asarray(open_image(tmp_path / "x.png")), expected)


def test_sixteen_bit_grayscale_is_rescaled_not_clipped(tmp_path: Path) -> None:
    samples = RNG.integers(0, 65536, (20, 30), dtype=np.uint16)
    Image.fromarray(samples).save(tmp_path / "x.png")
    assert Image.open(tmp_path / "x.png").mode.startswith("I")
    expected = np.rint(samples / 257).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(open_image(tmp_path / "x.png"))[:, :, 1], expected)


def test_zero_byte_file_raises_bad_image_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "empty.JPEG").write_bytes(b"")
    with pytest.raises(BadImageError, match=r"empty\.JPEG.*empty") as caught:
        open_image(tmp_path / "empty.JPEG")
    assert isinstance(caught.value, UnreadableImageError) and caught.value.kind == "zero-byte"


def test_truncated_jpeg_raises_bad_image_error_naming_it(tmp_path: Path) -> None:
    Image.fromarray(RNG.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(tmp_path / "whole.JPEG")
    data = (tmp_path / "whole.JPEG").read_bytes()
    (tmp_path / "half.JPEG").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImageError, match=r"half\.JPEG.*truncated") as caught:
        open_image(tmp_path / "half.JPEG")
    assert caught.value.kind == "truncated"


def test_random_bytes_raise_bad_image_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "noise.JPEG").write_bytes(RNG.integers(0, 256, 2000, dtype=np.uint8).tobytes())
    with pytest.raises(BadImageError, match=r"noise\.JPEG.*not a recognised image format") as caught:
        open_image(tmp_path / "noise.JPEG")
    assert caught.value.kind == "undecodable"


def test_missing_file_raises_bad_image_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(BadImageError, match=r"absent\.JPEG.*no such file") as caught:
        open_image(tmp_path / "absent.JPEG")
    assert caught.value.kind == "missing"


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to count open files")
def test_no_file_handle_is_left_open(tmp_path: Path) -> None:
    Image.fromarray(blocks()).save(tmp_path / "good.JPEG")
    (tmp_path / "bad.JPEG").write_bytes(b"\xff\xd8\xff" + bytes(100))
    before = open_descriptors()
    images = [open_image(tmp_path / "good.JPEG") for _ in range(20)]
    for _ in range(20):
        with pytest.raises(BadImageError):
            open_image(tmp_path / "bad.JPEG")
    assert open_descriptors() == before
    assert all(image.mode == "RGB" for image in images)


def test_bad_image_error_survives_pickling_across_processes(tmp_path: Path) -> None:
    (tmp_path / "empty.JPEG").write_bytes(b"")
    with pytest.raises(UnreadableImageError) as caught:
        open_image(tmp_path / "empty.JPEG")
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (copy.path, copy.kind, copy.reason, str(copy)) == (
        caught.value.path, caught.value.kind, caught.value.reason, str(caught.value)
    )
