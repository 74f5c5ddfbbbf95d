"""The ImageNet class taxonomy, keyed by WordNet id (wnid).

The 1000 ILSVRC-2012 classes in sorted-wnid order (the class index), their CLIP-style readable names, and
the 200-class subsets of ImageNet-A and ImageNet-R. Readable names repeat ("missile", "sunglasses"), so
everything here is keyed by wnid and a name is only ever a label for prompts.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType

from imagenet_dg.errors import ImageNetDGError

_PACKAGE = "imagenet_dg"


def _reference_lines(name: str) -> list[str]:
    text = resources.files(_PACKAGE).joinpath("reference", name).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


@dataclass(frozen=True)
class Taxonomy:
    """Class facts of ImageNet and its variants."""

    wnids: tuple[str, ...]
    """The 1000 ILSVRC-2012 wnids, sorted; position = class index."""
    names: Mapping[str, str]
    """wnid -> CLIP-style readable name."""
    imagenet_a: tuple[str, ...]
    """The 200 wnids of ImageNet-A, sorted."""
    imagenet_r: tuple[str, ...]
    """The 200 wnids of ImageNet-R, sorted."""

    @functools.cached_property
    def _index(self) -> Mapping[str, int]:
        return MappingProxyType({wnid: i for i, wnid in enumerate(self.wnids)})

    def index(self, wnid: str) -> int:
        """Sorted-wnid index of ``wnid`` among the 1000 classes."""
        try:
            return self._index[wnid]
        except KeyError:
            raise ImageNetDGError(f"{wnid!r} is not one of the 1000 ILSVRC-2012 wnids") from None

    def __contains__(self, wnid: object) -> bool:
        return wnid in self._index

    def name(self, wnid: str) -> str:
        """Readable name of ``wnid`` for prompts (not unique across classes)."""
        self.index(wnid)
        return self.names[wnid]


def _parse_taxonomy() -> Taxonomy:
    wnids = tuple(_reference_lines("wnids.txt"))
    if list(wnids) != sorted(set(wnids)) or len(wnids) != 1000:
        raise ImageNetDGError("package data reference/wnids.txt must hold 1000 distinct sorted wnids")
    names: dict[str, str] = {}
    for line in _reference_lines("classnames.tsv"):
        wnid, name = line.split("\t", 1)
        names[wnid] = name
    if set(names) != set(wnids):
        raise ImageNetDGError("package data reference/classnames.tsv must name exactly the 1000 wnids")
    subsets = []
    for file in ("imagenet_a_wnids.txt", "imagenet_r_wnids.txt"):
        subset = tuple(_reference_lines(file))
        if list(subset) != sorted(set(subset)) or not set(subset) <= set(wnids):
            raise ImageNetDGError(f"package data reference/{file} must hold sorted ILSVRC-2012 wnids")
        subsets.append(subset)
    return Taxonomy(wnids=wnids, names=MappingProxyType(names), imagenet_a=subsets[0], imagenet_r=subsets[1])


@functools.cache
def load_taxonomy() -> Taxonomy:
    """The taxonomy shipped with the package (parsed once per process)."""
    return _parse_taxonomy()


@functools.cache
def val_labels() -> Mapping[str, str]:
    """ILSVRC-2012 validation file name (``ILSVRC2012_val_00000001.JPEG``) -> wnid."""
    table = {}
    for line in _reference_lines("val_labels.tsv"):
        file_name, wnid, _index = line.split("\t")
        table[file_name] = wnid
    return MappingProxyType(table)


@functools.cache
def imagenetv2_labels() -> Mapping[str, str]:
    """ImageNetV2 MatchedFrequency image id (file stem) -> wnid."""
    table = {}
    for line in _reference_lines("imagenetv2_matched_frequency.tsv"):
        image_id, wnid, _index = line.split("\t")
        table[image_id] = wnid
    return MappingProxyType(table)
