"""Where a method comes from: its paper and the reference code its defaults were taken from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Citation:
    """A paper, and the code its defaults come from."""

    paper: str
    """Authors, title and venue, e.g. ``Zhou et al., Learning to Prompt for Vision-Language Models, IJCV 2022``."""
    url: str
    """The paper (arXiv or the publisher)."""
    code: str | None
    """The reference code the defaults were taken from; None when there is none."""
