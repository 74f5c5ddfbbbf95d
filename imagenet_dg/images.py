"""Opening image files of the releases as RGB pictures, whatever defects the raw files carry.

The releases hold CMYK JPEGs, PNG files named ``.JPEG``, files with damaged EXIF blocks, grayscale, palette
and 16-bit pictures. :func:`decode_image` turns any of them into a fully loaded RGB image and says what it
had to work around; files that cannot give a picture (missing, empty, truncated, not an image) raise
:class:`UnreadableImageError`, a :class:`~imagenet_dg.errors.BadImageError` naming the file and the reason.
"""

from __future__ import annotations

import io
import json
import os
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image

from imagenet_dg.errors import BadImageError

# EXIF orientation value -> the transposition that shows the picture upright.
_ORIENTATION_FIX = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_PREFIX = b"Exif\x00\x00"
_TIFF_HEADERS = (b"II*\x00", b"MM\x00*")

# Pillow reports damaged EXIF only through ``warnings``, whose capture swaps process-global state on
# Python < 3.14; the lock keeps concurrent calls in one process from restoring each other's state. It covers
# only header and metadata parsing, never pixel decoding, so threads still decode in parallel.
_METADATA_LOCK = threading.Lock()


_CARRIED_FIELDS = "unreadable image fields: "


def _in_loader_worker() -> bool:
    """Whether this process is a PyTorch DataLoader worker (torch is not imported here for this)."""
    data = sys.modules.get("torch.utils.data")
    worker_info = getattr(data, "get_worker_info", None)
    return worker_info is not None and worker_info() is not None


def _carried_fields(text: str) -> tuple[str, str, str] | None:
    """The (path, kind, reason) a DataLoader worker wrote into the text of an UnreadableImageError."""
    at = text.rfind(_CARRIED_FIELDS)
    if at < 0:
        return None
    try:
        path, kind, reason = json.loads(text[at + len(_CARRIED_FIELDS) :].splitlines()[0])
    except (ValueError, IndexError):
        return None
    return str(path), str(kind), str(reason)


class UnreadableImageError(BadImageError):
    """An image file that gives no picture. ``kind`` is one of the "bad" kinds of :mod:`imagenet_dg.health`.

    The error reads the same whether the image was opened in this process or in a DataLoader worker.
    PyTorch passes a worker's exception on as its type and the text of its traceback only, and rebuilds it
    as ``type(text)``; so in a worker the text carries the fields as one JSON line, and the one-argument form
    of the constructor finds them there again.
    """

    def __init__(self, path: str | os.PathLike[str], kind: str | None = None, reason: str | None = None) -> None:
        if kind is None or reason is None:
            fields = _carried_fields(os.fspath(path))
            if fields is None:
                # PyTorch then raises its own RuntimeError with the worker's traceback text.
                raise TypeError("UnreadableImageError needs the path, the kind and the reason")
            path, kind, reason = fields
        self.path = os.fspath(path)
        self.kind = kind
        self.reason = reason
        self._carry_fields = _in_loader_worker()
        super().__init__(
            f"cannot use image {self.path}: {reason}. If the release folder is the right one, replace the file "
            "with the one from the official release, or leave it out (build with --verify --on-bad-image skip)"
        )

    def __str__(self) -> str:
        text = super().__str__()
        if self._carry_fields:
            return f"{text}\n{_CARRIED_FIELDS}{json.dumps([self.path, self.kind, self.reason])}"
        return text

    def __reduce__(self) -> tuple[type[UnreadableImageError], tuple[str, str, str]]:
        # Rebuilt from its fields when it crosses a process boundary (loader workers, process pools).
        return type(self), (self.path, self.kind, self.reason)


@dataclass(frozen=True)
class DecodedImage:
    """An image file turned into an RGB picture, with what the file itself was like."""

    image: Image.Image
    """Fully loaded, mode RGB, EXIF orientation applied when readable."""
    format: str | None
    """Format found from the content (``"JPEG"``, ``"PNG"``, ...), whatever the file name says."""
    mode: str
    """Pillow mode of the file's own pixels before conversion (``"CMYK"``, ``"L"``, ``"I;16"``, ...)."""
    exif_problem: str | None
    """What is wrong with the file's EXIF block, or None. Its orientation is still applied when readable."""


def open_image(path: str | os.PathLike[str]) -> Image.Image:
    """The image at ``path`` as a fully loaded RGB picture, with no file handle left open.

    Raises :class:`UnreadableImageError` (a :class:`~imagenet_dg.errors.BadImageError`) for a missing,
    unreadable, empty, truncated or undecodable file.
    """
    return decode_image(path).image


def decode_image(path: str | os.PathLike[str]) -> DecodedImage:
    """Decode the image at ``path`` fully and convert it to RGB, recording what the file was like.

    The format is recognised from the content, so a PNG named ``.JPEG`` opens. A readable EXIF orientation
    is applied; damage to the EXIF block never fails the call and is described in ``exif_problem``. Raises
    :class:`UnreadableImageError` with ``kind`` "missing", "unreadable", "zero-byte", "truncated" or
    "undecodable".
    """
    try:
        # One read into memory: no handle outlives this call, whatever Pillow's lazy loading would keep.
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise UnreadableImageError(path, "missing", "no such file") from None
    except OSError as exc:
        raise UnreadableImageError(path, "unreadable", f"the file cannot be read ({exc.strerror or exc})") from None
    if not data:
        raise UnreadableImageError(path, "zero-byte", "the file is empty (0 bytes)")

    # Pillow's format plugins raise many exception types on corrupt input; every one means "no picture".
    try:
        with _METADATA_LOCK, warnings.catch_warnings(record=True) as opening:
            warnings.simplefilter("always")
            picture = Image.open(io.BytesIO(data))
        with picture:
            picture.load()
            decoded = _to_rgb(picture)
            file_format, file_mode = picture.format, picture.mode
            orientation, exif_problem = _read_orientation(picture, opening)
    except Image.UnidentifiedImageError:
        raise UnreadableImageError(path, "undecodable", "the content is not a recognised image format") from None
    except Exception as exc:  # noqa: BLE001 - see the comment above the try
        found = f"{type(exc).__name__}: {exc}"
        if "truncat" in str(exc).lower():
            raise UnreadableImageError(path, "truncated", f"the file ends before the image does ({found})") from None
        raise UnreadableImageError(path, "undecodable", f"decoding failed ({found})") from None

    if orientation in _ORIENTATION_FIX:
        decoded = decoded.transpose(_ORIENTATION_FIX[orientation])
    return DecodedImage(image=decoded, format=file_format, mode=file_mode, exif_problem=exif_problem)


def _to_rgb(picture: Image.Image) -> Image.Image:
    """A new RGB image (never ``picture`` itself) with ``picture``'s loaded pixels."""
    mode = picture.mode
    if mode.startswith("I;16") or mode == "I":
        # Pillow's own conversion clips 16-bit samples at 255 instead of rescaling them.
        samples = np.asarray(picture, dtype=np.float64)
        eight_bit = np.clip(np.rint(samples / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(eight_bit, mode="L").convert("RGB")
    if mode in ("P", "PA"):
        # Through RGBA, so transparency given as palette bytes converts without Pillow's warning.
        return picture.convert("RGBA").convert("RGB")
    # CMYK (Adobe's inverted form included: the JPEG reader undoes it), L, LA, RGBA, 1, F; RGB is copied.
    return picture.convert("RGB")


def _read_orientation(picture: Image.Image, opening: list[warnings.WarningMessage]) -> tuple[int, str | None]:
    """EXIF orientation of ``picture`` (1 when unknown) and what was wrong with its EXIF block, if anything.

    ``opening`` holds the warnings Pillow gave while opening the file (it parses EXIF there for the dpi).
    """
    raw = picture.info.get("exif")
    if not raw:
        return 1, None
    header = raw[len(_EXIF_PREFIX) :] if raw.startswith(_EXIF_PREFIX) else raw
    if header[:4] not in _TIFF_HEADERS:
        return 1, "the EXIF block does not start with a TIFF header"
    with _METADATA_LOCK, warnings.catch_warnings(record=True) as parsing:
        warnings.simplefilter("always")
        try:
            exif = picture.getexif()
            orientation = exif.get(ExifTags.Base.Orientation, 1)
        except Exception as exc:  # noqa: BLE001 - any failure to parse EXIF means: ignore the EXIF
            return 1, f"the EXIF block cannot be parsed ({type(exc).__name__}: {exc})"
    complaints = [str(w.message).strip() for w in (*opening, *parsing) if issubclass(w.category, UserWarning)]
    if not isinstance(orientation, int) or not 1 <= orientation <= 8:
        complaints.append(f"the EXIF orientation {orientation!r} is not one of 1..8")
        orientation = 1
    # A damaged block can still hold a readable orientation (the damage is usually in other tags).
    return orientation, "; ".join(complaints) or None
