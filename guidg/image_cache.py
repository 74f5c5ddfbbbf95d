"""Decoded-image cache: every image of a split decoded and resized once, kept as uint8 pixels on disk.

Decoding a JPEG and resizing it costs far more than the rest of an evaluation pass or a training step on a
GPU, and the same images are decoded again for every epoch, seed and method. A cache holds, for one image
list and one :class:`DecodeSpec`, each image resized so its shorter side is ``DecodeSpec.short_side``, RGB
uint8, in raw shard files read through ``numpy.memmap`` (no pickle), plus an index (``index.npy``: shard,
offset, height, width, original height, original width, CRC-32 of each image).

- **Key.** A cache is named by a hash of the image list's identity (the manifest content hash when the caller
  has it, every path with its file size and modification time, the labels) and of the decode spec, so a
  changed manifest, a replaced image file or another transform gives another cache; nothing stale is read.
- **Completeness and damage.** ``cache.json`` is written last; it records each shard's size, modification
  time and SHA-256 and the index's SHA-256. Opening checks sizes, times and the index hash; a mismatch means
  the cache is damaged and it is rebuilt. Each image's CRC-32 is checked when it is read, so damage that keeps
  a shard's size is caught too (:class:`DamagedImageCacheError`; the cache is then marked for rebuilding).
  :func:`verify_cache` checks every shard's SHA-256.
- **Atomicity.** A cache is built in a temporary folder beside its final place and renamed into place whole;
  a killed build leaves only a temporary folder, which the next build removes. Files honour the umask.
- **Room.** Before a build its size is estimated from the images' proportions (:func:`estimated_bytes`; about
  10 GB for the 50,000 test images of ImageNet-DG's task i) and refused at once when the disk has less free;
  a disk that fills up anyway is one :class:`~imagenet_dg.errors.WriteError`, the temporary folder removed.
- **Identity.** With the default decoder (Pillow, exactly as :func:`imagenet_dg.images.open_image` and
  torchvision's ``Resize`` do it), a centre crop of a cached image is bit-identical to the evaluation
  transform's crop of the file, so evaluation results are the same with and without the cache.
  ``decoder="nvjpeg"`` decodes JPEGs on the GPU (``torchvision.io.decode_jpeg``) and resizes them there: much
  faster, not bit-identical to Pillow (its key differs, so the two never mix).

Where caches live: :func:`cache_root` puts them next to the built dataset folder, in ``<folder>.decoded-images/``
beside it (not inside: a build folder holds only what its manifest lists, and a rebuild refuses anything
else), or, when that place cannot be written, in ``decoded-images/`` under the runs folder.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from torchvision.io import ImageReadMode, decode_jpeg

from imagenet_dg.disk import reporting_write_faults, require_free_space
from imagenet_dg.errors import ImageNetDGError
from imagenet_dg.images import open_image
from imagenet_dg.loading import LabeledImages

logger = logging.getLogger(__name__)

BUILDING_PREFIX = ".building-"
"""Name prefix of a cache folder being built beside its final place (renamed into it when complete)."""

CACHE_FORMAT = 1
CACHE_DIR_NAME = "decoded-images"
"""Name of the folder holding the caches under a runs folder; beside a dataset folder ``<name>.decoded-images``."""
RECORD_FILE = "cache.json"
INDEX_FILE = "index.npy"
SHARD_PATTERN = "shard-{:05d}.u8"
DEFAULT_SHARD_BYTES = 1 << 30
TRAIN_MARGIN = 8 / 7
"""Shorter side of caches for random crops, relative to the model's input (256 for 224, as ImageNet does)."""
DECODERS = ("pil", "nvjpeg")
INDEX_COLUMNS = ("shard", "offset", "height", "width", "source_height", "source_width", "crc32")


class ImageCacheError(ImageNetDGError):
    """A decoded-image cache cannot be built or used."""


class DamagedImageCacheError(ImageCacheError):
    """A cache's data differ from what its record says; it has been marked for rebuilding."""


@dataclass(frozen=True)
class DecodeSpec:
    """How images are turned into cached pixels."""

    short_side: int
    """Shorter side after resizing (bicubic, as the evaluation transform resizes)."""
    decoder: str = "pil"
    """``pil`` (bit-identical to the uncached transforms) or ``nvjpeg`` (JPEG decoding and resizing on CUDA)."""

    def __post_init__(self) -> None:
        if not isinstance(self.short_side, int) or self.short_side < 1:
            raise ImageCacheError(f"DecodeSpec.short_side must be a positive integer, got {self.short_side!r}")
        if self.decoder not in DECODERS:
            raise ImageCacheError(f"DecodeSpec.decoder must be one of {', '.join(DECODERS)}, got {self.decoder!r}")

    def describe(self) -> dict[str, Any]:
        """What determines the cached pixels (part of the cache key)."""
        return {"format": CACHE_FORMAT, "resize": "shorter-side bicubic", **asdict(self)}


def eval_spec(image_size: int, decoder: str = "pil") -> DecodeSpec:
    """The spec whose centre crops are the evaluation transform's images (no margin)."""
    return DecodeSpec(image_size, decoder)


def random_crop_spec(image_size: int, decoder: str = "pil") -> DecodeSpec:
    """The spec for random-resized-crop training: shorter side ``image_size * 8/7`` (the margin)."""
    return DecodeSpec(int(round(image_size * TRAIN_MARGIN)), decoder)


def list_fingerprint(images: LabeledImages, content_hash: str | None = None) -> str:
    """SHA-256 of the identity of ``images``: paths, file sizes and modification times, labels, and the
    manifest content hash when given. A replaced or touched image file changes it."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"content_hash": content_hash, "count": len(images)}).encode())
    for path, label in zip(images.paths, images.labels):
        try:
            stat = os.stat(path)
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:
            size, mtime = -1, -1  # a missing file fails the build with its own error, naming it
        digest.update(f"\x1f{path}\x1e{size}\x1e{mtime}\x1e{label}".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def cache_key(images: LabeledImages, spec: DecodeSpec, content_hash: str | None = None) -> str:
    """The folder name of the cache of ``images`` under ``spec``."""
    payload = json.dumps({"images": list_fingerprint(images, content_hash), "spec": spec.describe()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def cache_root(dataset_dir: str | os.PathLike[str], runs_dir: str | os.PathLike[str]) -> tuple[Path, str]:
    """Where the caches of a dataset's images go, and which place it is (``"dataset"`` or ``"runs"``).

    Beside the dataset folder (``<folder>.decoded-images``, next to its manifests) when that can be written,
    else under the runs folder.
    """
    dataset = Path(dataset_dir).absolute()
    target = dataset.parent / f"{dataset.name}.{CACHE_DIR_NAME}"
    if (target.is_dir() and os.access(target, os.W_OK | os.X_OK)) or (
        not target.exists() and os.access(dataset.parent, os.W_OK | os.X_OK)
    ):
        return target, "dataset"
    return Path(runs_dir).absolute() / CACHE_DIR_NAME, "runs"


def run_cache_settings(
    dataset_dir: str | os.PathLike[str], runs_dir: str | os.PathLike[str], content_hash: str | None, workers: int,
    *, decoder: str = "pil", augment_on: str = "workers",
) -> CacheSettings:
    """The cache settings of a run over a built dataset: :func:`cache_root`, keyed by its content hash,
    decoded with ``decoder`` (Pillow in ``workers`` processes, or nvjpeg on the run's GPU), step-2
    augmentation where ``augment_on`` says."""
    root, place = cache_root(dataset_dir, runs_dir)
    return CacheSettings(root, place, content_hash, decoder, workers, augment_on)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _resize_pil(image: Image.Image, short_side: int) -> Image.Image:
    return T.Resize(short_side, interpolation=T.InterpolationMode.BICUBIC)(image)


class _DecodePil(Dataset):
    """Item n: image n decoded with Pillow and resized, as an (H, W, 3) uint8 tensor and its original size."""

    def __init__(self, paths: Sequence[Path], short_side: int) -> None:
        self.paths = paths
        self.short_side = short_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int, int]:
        image = open_image(self.paths[index])
        width, height = image.size
        pixels = np.ascontiguousarray(np.asarray(_resize_pil(image, self.short_side), dtype=np.uint8))
        # The checksum is taken here, in the worker, so the writing process only writes.
        return torch.from_numpy(pixels.copy()), height, width, zlib.crc32(pixels)


def _as_list(batch: list) -> list:
    return batch


def _decode_pil(paths: Sequence[Path], short_side: int, workers: int) -> Iterator[tuple[np.ndarray, int, int, int]]:
    """(pixels (H, W, 3), source height, source width, CRC-32 of the pixels) of each image, in order."""
    loader = DataLoader(
        _DecodePil(paths, short_side), batch_size=32, num_workers=workers, collate_fn=_as_list,
        prefetch_factor=4 if workers > 0 else None,
    )
    for batch in loader:
        for pixels, height, width, crc in batch:
            yield pixels.numpy(), height, width, crc


def _shorter_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """Output (height, width) of torchvision's ``Resize(short_side)`` for an image of (height, width)."""
    if height <= width:
        return short_side, int(short_side * width / height)
    return int(short_side * height / width), short_side


JPEG_MARKER = b"\xff\xd8"
EXIF_ORIENTATION = 0x0112


def _nvjpeg_can_take(data: bytes) -> bool:
    """Whether nvjpeg decodes ``data`` as Pillow would: a JPEG without an EXIF rotation (nvjpeg on the GPU does
    not apply EXIF orientation, which :func:`~imagenet_dg.images.open_image` does)."""
    if not data.startswith(JPEG_MARKER):
        return False
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            return image.getexif().get(EXIF_ORIENTATION) in (None, 1)
    except Exception:  # noqa: BLE001 - a header Pillow cannot parse: Pillow decides (and names the file)
        return False


class _ReadBytes(Dataset):
    """Item n: the bytes of file n and whether nvjpeg can decode them (:func:`_nvjpeg_can_take`)."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[bytes, bool]:
        data = Path(self.paths[index]).read_bytes()
        return data, _nvjpeg_can_take(data)


def _check_nvjpeg(device: torch.device) -> None:
    """Decode a small JPEG on ``device``; an nvjpeg that cannot start is an error, not a silent fallback."""
    sample = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 90)).save(sample, format="JPEG")
    try:
        decode_jpeg(torch.frombuffer(bytearray(sample.getvalue()), dtype=torch.uint8), mode=ImageReadMode.RGB,
                    device=device)
    except (RuntimeError, ValueError) as error:
        raise ImageCacheError(
            f"the nvjpeg decoder cannot decode on {device} ({error}); use the Pillow decoder "
            "(pipeline.decoder=pil)"
        ) from None


def _decode_nvjpeg(
    paths: Sequence[Path], short_side: int, workers: int, device: torch.device, counts: dict[str, int]
) -> Iterator[tuple[np.ndarray, int, int, int]]:
    """JPEGs decoded in batches by nvjpeg and resized on the GPU; other files (PNG, CMYK, EXIF-rotated, any
    JPEG nvjpeg refuses) through Pillow, counted in ``counts["pil"]`` (``counts["nvjpeg"]`` the others)."""
    _check_nvjpeg(device)
    counts.setdefault("nvjpeg", 0)
    counts.setdefault("pil", 0)
    loader = DataLoader(_ReadBytes(paths), batch_size=64, num_workers=workers, collate_fn=_as_list)
    position = 0
    for batch in loader:
        decoded: list[torch.Tensor | None] = [None] * len(batch)
        chosen = [i for i, (_, ok) in enumerate(batch) if ok]
        datas = [torch.frombuffer(bytearray(batch[i][0]), dtype=torch.uint8) for i in chosen]
        try:
            for i, image in zip(chosen, decode_jpeg(datas, mode=ImageReadMode.RGB, device=device) if datas else []):
                decoded[i] = image
        except RuntimeError:
            for i, data in zip(chosen, datas):
                try:
                    decoded[i] = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
                except RuntimeError:
                    pass  # a JPEG nvjpeg does not read (progressive on some GPUs, CMYK): Pillow decodes it below
        for offset, image in enumerate(decoded):
            path = paths[position + offset]
            if image is None:
                counts["pil"] += 1
                pil = open_image(path)
                width, height = pil.size
                pixels = np.ascontiguousarray(np.asarray(_resize_pil(pil, short_side), dtype=np.uint8))
                yield pixels, height, width, zlib.crc32(pixels)
                continue
            counts["nvjpeg"] += 1
            height, width = int(image.shape[1]), int(image.shape[2])
            size = _shorter_side_size(height, width, short_side)
            resized = T.functional.resize(image, list(size), T.InterpolationMode.BICUBIC, antialias=True)
            # A blocking copy per image: nvjpeg writes on its own stream, so nothing is batched across it.
            pixels = resized.permute(1, 2, 0).contiguous().cpu().numpy()
            yield pixels, height, width, zlib.crc32(pixels)
        position += len(batch)


@dataclass(frozen=True)
class BuildStats:
    """How a cache was obtained: built (with the seconds it took) or opened."""

    built: bool
    seconds: float
    images: int
    place: str


class DecodedImageCache:
    """An opened, checked cache: random access to each image's uint8 (3, H, W) pixels."""

    def __init__(self, folder: Path, record: dict[str, Any], index: np.ndarray) -> None:
        self.folder = folder
        self.record = record
        self.index = index
        self.spec = DecodeSpec(**record["spec_fields"])
        self._shards: list[np.memmap] | None = None

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_shards"] = None  # each loader worker maps the shards itself
        return state

    def _shard(self, number: int) -> np.memmap:
        if self._shards is None:
            self._shards = [
                np.memmap(self.folder / SHARD_PATTERN.format(i), dtype=np.uint8, mode="r")
                if size > 0 else np.zeros(0, np.uint8)
                for i, size in enumerate(s["bytes"] for s in self.record["shards"])
            ]
        return self._shards[number]

    def source_size(self, index: int) -> tuple[int, int]:
        """(height, width) of image ``index`` in its file, before resizing."""
        row = self.index[index]
        return int(row[4]), int(row[5])

    def pixels(self, index: int) -> torch.Tensor:
        """Image ``index`` as a (3, H, W) uint8 tensor (a copy), checked against its recorded CRC-32."""
        shard, offset, height, width, _, _, crc = (int(v) for v in self.index[index])
        flat = self._shard(shard)[offset : offset + height * width * 3]
        data = np.array(flat)  # one copy out of the mapping; the tensor owns its memory
        if zlib.crc32(data) != crc:
            self.mark_damaged()
            raise DamagedImageCacheError(
                f"{self.folder}: image {index} differs from its recorded checksum; the cache is damaged and has "
                "been marked for rebuilding. Run again: the next use rebuilds it."
            )
        return torch.from_numpy(data).view(height, width, 3).permute(2, 0, 1)

    def mark_damaged(self) -> None:
        """Remove the completion record, so the next :func:`open_or_build` rebuilds this cache."""
        with contextlib.suppress(OSError):
            (self.folder / RECORD_FILE).unlink()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _open_checked(folder: Path, key: str) -> DecodedImageCache | None:
    """The cache in ``folder`` when complete and consistent with its record; None when there is none.

    Raises nothing for damage: a cache whose files differ from the record is reported (logged) and None is
    returned, so the caller rebuilds it.
    """
    record_file = folder / RECORD_FILE
    if not record_file.is_file():
        return None
    try:
        record = json.loads(record_file.read_text(encoding="utf-8"))
        problems = []
        if record.get("format") != CACHE_FORMAT or record.get("key") != key:
            problems.append("its record is of another format or key")
        for number, shard in enumerate(record["shards"]):
            stat = (folder / SHARD_PATTERN.format(number)).stat()
            if stat.st_size != shard["bytes"] or stat.st_mtime_ns != shard["mtime_ns"]:
                problems.append(f"shard {number} has {stat.st_size} bytes, modified at {stat.st_mtime_ns}; "
                                f"recorded {shard['bytes']} bytes at {shard['mtime_ns']}")
        index_file = folder / INDEX_FILE
        if _sha256(index_file) != record["index_sha256"]:
            problems.append("its index differs from the recorded hash")
        if problems:
            logger.warning("decoded-image cache %s is damaged (%s); rebuilding it", folder, "; ".join(problems))
            return None
        index = np.load(index_file, allow_pickle=False)
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning("decoded-image cache %s is unreadable (%s); rebuilding it", folder, error)
        return None
    return DecodedImageCache(folder, record, index)


def open_cache(root: str | os.PathLike[str], images: LabeledImages, spec: DecodeSpec,
               content_hash: str | None = None) -> DecodedImageCache | None:
    """The complete, consistent cache of ``images`` under ``spec`` in ``root``, or None (never builds)."""
    key = cache_key(images, spec, content_hash)
    return _open_checked(Path(root) / key, key)


def open_or_build(
    root: str | os.PathLike[str],
    images: LabeledImages,
    spec: DecodeSpec,
    *,
    content_hash: str | None = None,
    workers: int = 0,
    device: torch.device | str | None = None,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    place: str = "",
) -> tuple[DecodedImageCache, BuildStats]:
    """The cache of ``images`` under ``spec`` in ``root``: opened when complete and intact, else built.

    Building decodes with ``workers`` processes (Pillow) or on ``device`` (nvjpeg), writes the shards, the
    index and last the record into a temporary folder, and renames it into place; a damaged cache in that
    place is replaced. Unreadable images raise their :class:`~imagenet_dg.images.UnreadableImageError`.
    """
    root = Path(root)
    key = cache_key(images, spec, content_hash)
    folder = root / key
    found = _open_checked(folder, key)
    if found is not None:
        return found, BuildStats(False, 0.0, len(images), place)
    started = time.perf_counter()
    what = f"the decoded-image cache of {len(images)} images"
    needed = estimated_bytes(images, spec)
    with reporting_write_faults(root, what, needed):
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(f"{BUILDING_PREFIX}{key}-*"):
            _remove_if_dead(stale)
        require_free_space(root, needed, what)
        work = Path(tempfile.mkdtemp(prefix=f"{BUILDING_PREFIX}{key}-{os.getpid()}-", dir=root))
        try:
            os.chmod(work, 0o777 & ~_umask())  # mkdtemp makes it private; the cache is shared like any output
            record = _write_cache(work, images, spec, key, content_hash, workers, device, shard_bytes)
            _move_into_place(work, folder)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    cache = _open_checked(folder, key)
    if cache is None:
        raise ImageCacheError(f"{folder}: the cache just built does not match its record; is the disk full?")
    seconds = time.perf_counter() - started
    logger.info("decoded %d images into %s in %.1f s (%s)", len(images), folder, seconds, record["decoder"])
    if record.get("decoded_by", {}).get("pil"):
        logger.info("%d of the %d images were not baseline JPEGs nvjpeg reads as Pillow does (PNG, CMYK, "
                    "EXIF-rotated): Pillow decoded them", record["decoded_by"]["pil"], len(images))
    return cache, BuildStats(True, seconds, len(images), place)


SIZE_SAMPLE = 64
"""Images whose proportions :func:`estimated_bytes` reads (their headers only)."""


def estimated_bytes(images: LabeledImages, spec: DecodeSpec) -> int:
    """About the bytes of the cache of ``images`` under ``spec``: each image's shorter side becomes
    ``spec.short_side``, the longer one keeps its proportion, read from the headers of an evenly spread sample
    (a square image when none can be read)."""
    count = len(images)
    if count == 0:
        return 0
    sample = min(count, SIZE_SAMPLE)
    picks = sorted({round(i * (count - 1) / max(1, sample - 1)) for i in range(sample)})
    ratios = []
    for index in picks:
        try:
            with Image.open(images.paths[index]) as image:  # the header only: nothing is decoded
                width, height = image.size
        except (OSError, ValueError):
            continue
        if width > 0 and height > 0:
            ratios.append(max(width, height) / min(width, height))
    ratio = sum(ratios) / len(ratios) if ratios else 1.0
    side = spec.short_side
    return int(count * (side * side * ratio * 3 + 8 * len(INDEX_COLUMNS)))


def _remove_if_dead(folder: Path) -> None:
    """Remove a temporary build folder whose building process is gone (a killed build)."""
    try:
        pid = int(folder.name.split("-")[-2])
    except (ValueError, IndexError):
        return
    try:
        os.kill(pid, 0)
        return  # still building
    except ProcessLookupError:
        shutil.rmtree(folder, ignore_errors=True)
    except PermissionError:
        return


def _move_into_place(work: Path, folder: Path) -> None:
    """Rename the built ``work`` folder to ``folder``, replacing a damaged cache (ours) there."""
    if folder.exists():
        if not (folder / INDEX_FILE).exists() and any(folder.iterdir()):
            raise ImageCacheError(f"{folder} exists and is not a decoded-image cache; move it away")
        old = folder.with_name(f".replaced-{folder.name}-{os.getpid()}")
        try:
            os.rename(folder, old)
        except FileNotFoundError:
            pass  # another process replaced it meanwhile
        else:
            shutil.rmtree(old, ignore_errors=True)
    try:
        os.rename(work, folder)
    except OSError:
        if _open_checked(folder, folder.name) is None:
            raise
        shutil.rmtree(work, ignore_errors=True)  # another process finished the same cache first


def _write_cache(
    work: Path, images: LabeledImages, spec: DecodeSpec, key: str, content_hash: str | None, workers: int,
    device: torch.device | str | None, shard_bytes: int,
) -> dict[str, Any]:
    decoded_by: dict[str, int] = {}
    if spec.decoder == "nvjpeg":
        target = torch.device(device or "cuda")
        stream = _decode_nvjpeg(images.paths, spec.short_side, workers, target, decoded_by)
    else:
        stream = _decode_pil(images.paths, spec.short_side, workers)
    index = np.zeros((len(images), len(INDEX_COLUMNS)), dtype=np.int64)
    shards: list[dict[str, Any]] = []
    handle = None
    written = 0
    count = 0
    try:
        for number, (pixels, height, width, crc) in enumerate(stream):
            data = np.ascontiguousarray(pixels)
            if handle is None or (written > 0 and written + data.nbytes > shard_bytes):
                if handle is not None:
                    handle.close()
                    shards.append({"bytes": written})
                handle = open(work / SHARD_PATTERN.format(len(shards)), "wb")
                written = 0
            handle.write(memoryview(data).cast("B"))
            index[number] = (len(shards), written, data.shape[0], data.shape[1], height, width, crc)
            written += data.nbytes
            count += 1
        if handle is None:
            handle = open(work / SHARD_PATTERN.format(0), "wb")
        handle.flush()
        os.fsync(handle.fileno())
    finally:
        if handle is not None:
            handle.close()
    shards.append({"bytes": written})
    if count != len(images):
        raise ImageCacheError(f"decoding gave {count} images for a list of {len(images)}")
    for number, shard in enumerate(shards):
        path = work / SHARD_PATTERN.format(number)
        stat = path.stat()
        shard.update(name=path.name, mtime_ns=stat.st_mtime_ns, sha256=_sha256(path))
    encoded = io.BytesIO()  # np.save into a file writes through C, and a full disk loses its errno there
    np.save(encoded, index, allow_pickle=False)
    with open(work / INDEX_FILE, "wb") as out:
        out.write(encoded.getbuffer())
        out.flush()
        os.fsync(out.fileno())
    record = {
        "format": CACHE_FORMAT,
        "key": key,
        "spec": spec.describe(),
        "spec_fields": asdict(spec),
        "decoder": spec.decoder,
        "images": len(images),
        "content_hash": content_hash,
        "list_fingerprint": list_fingerprint(images, content_hash),
        "index_columns": list(INDEX_COLUMNS),
        "index_sha256": _sha256(work / INDEX_FILE),
        "shards": shards,
        "total_bytes": sum(s["bytes"] for s in shards),
    }
    if decoded_by:
        record["decoded_by"] = dict(decoded_by)  # how many images nvjpeg decoded, how many went to Pillow
    with open(work / RECORD_FILE, "w", encoding="utf-8") as out:
        out.write(json.dumps(record, indent=1, sort_keys=True) + "\n")
        out.flush()
        os.fsync(out.fileno())
    return record


def verify_cache(cache: DecodedImageCache) -> list[str]:
    """Problems found when checking every shard of ``cache`` against its recorded SHA-256 (empty: intact)."""
    problems = []
    for number, shard in enumerate(cache.record["shards"]):
        path = cache.folder / SHARD_PATTERN.format(number)
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif _sha256(path) != shard["sha256"]:
            problems.append(f"{path}: content differs from the hash in {RECORD_FILE}")
    return problems


# ---------------------------------------------------------------------------------------------------------
# The cache a run uses: set once around a run, read by the image pipelines.


@dataclass(frozen=True)
class CacheSettings:
    """Where the image pipelines find and build decoded-image caches during a run."""

    root: Path
    place: str = ""
    """``dataset`` or ``runs`` (see :func:`cache_root`), for the record."""
    content_hash: str | None = None
    decoder: str = "pil"
    workers: int = 0
    """Decoding processes when a cache is built."""
    augment_on: str = "workers"
    """Where step 2 augments cached pixels: ``workers`` (the loader processes) or ``device`` (the run's device,
    per image under its own seed; see :func:`guidg.image_pipeline.cached_step_batches`)."""


_ACTIVE: contextvars.ContextVar[CacheSettings | None] = contextvars.ContextVar("decoded_image_cache", default=None)


@contextlib.contextmanager
def using_image_cache(settings: CacheSettings | None) -> Iterator[CacheSettings | None]:
    """Within the block, evaluation and training read images through caches under ``settings.root``."""
    token = _ACTIVE.set(settings)
    try:
        yield settings
    finally:
        _ACTIVE.reset(token)


def active_cache_settings() -> CacheSettings | None:
    """The settings of the innermost :func:`using_image_cache` block, or None (images decoded each time)."""
    return _ACTIVE.get()


def cache_for(images: LabeledImages, spec: DecodeSpec, settings: CacheSettings,
              device: torch.device | None = None) -> DecodedImageCache:
    """The cache of ``images`` under ``spec`` with ``settings``, built on first use."""
    spec = DecodeSpec(spec.short_side, settings.decoder) if settings.decoder != spec.decoder else spec
    cache, _ = open_or_build(
        settings.root, images, spec, content_hash=settings.content_hash, workers=settings.workers,
        device=device if spec.decoder == "nvjpeg" else None, place=settings.place,
    )
    return cache
