"""The six image domains ImageNet-DG is assembled from, and the class set each one covers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from imagenet_dg.errors import ImageNetDGError
from imagenet_dg.taxonomy import Taxonomy


@dataclass(frozen=True)
class Domain:
    """One image domain: an official release (or one split of it)."""

    id: str
    """Domain id used everywhere: in manifests, on the command line, in results."""
    release: str
    """Human name of the official release."""
    class_set: str
    """Which classes the release covers: ``"imagenet-1k"``, ``"imagenet-a"`` or ``"imagenet-r"``."""
    folder: str
    """The folder name the official release extracts to (its root: the paths are relative to it)."""

    def wnids(self, taxonomy: Taxonomy) -> tuple[str, ...]:
        """Sorted wnids this domain covers."""
        return CLASS_SETS[self.class_set](taxonomy)


CLASS_SETS = MappingProxyType(
    {
        "imagenet-1k": lambda t: t.wnids,
        "imagenet-a": lambda t: t.imagenet_a,
        "imagenet-r": lambda t: t.imagenet_r,
    }
)

DOMAINS: Mapping[str, Domain] = MappingProxyType(
    {
        d.id: d
        for d in (
            Domain("imagenet", "ILSVRC-2012 train", "imagenet-1k", "train"),
            Domain("imagenet-val", "ILSVRC-2012 val", "imagenet-1k", "val"),
            Domain("imagenet-a", "ImageNet-A", "imagenet-a", "imagenet-a"),
            Domain("imagenet-r", "ImageNet-R", "imagenet-r", "imagenet-r"),
            Domain("imagenet-sketch", "ImageNet-Sketch", "imagenet-1k", "sketch"),
            Domain("imagenetv2", "ImageNetV2 MatchedFrequency", "imagenet-1k", "imagenetv2-matched-frequency-format-val"),
        )
    }
)


def get_domain(domain_id: str) -> Domain:
    """The domain called ``domain_id``; a clear error listing the known ids otherwise."""
    try:
        return DOMAINS[domain_id]
    except KeyError:
        raise ImageNetDGError(f"unknown domain {domain_id!r}; expected one of {', '.join(DOMAINS)}") from None
