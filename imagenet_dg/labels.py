"""How a record's suite and weights are named to a reader: in the leaderboard's titles and in a sweep's summary.

Kept beside the record's schema so that the producer of records (``guidg``) and their consumer
(``leaderboard``) say the same words without either importing the other.
"""

from __future__ import annotations

SYNTHETIC_SUITE = "synthetic miniature"
"""Said after the suite's name wherever a table of synthetic data is named."""
SYNTHETIC_CAPTION = ("Synthetic miniature data: generated pictures in the suite's layout, not its real images; the "
                     "numbers show the machinery and are never comparable with results on the real benchmark.")


def weights_label(pretrained: str, synthetic_weights: bool) -> str:
    """The weights as a reader should read them: random, synthetic-world, or the pretrained tag."""
    if pretrained == "none":
        return "random weights"
    if synthetic_weights:
        return f"{pretrained} (synthetic-world weights)"
    return f"{pretrained} weights"


def suite_label(suite: str, synthetic_data: bool) -> str:
    """The suite as named in titles: ``imagenet-dg (synthetic miniature)`` for synthetic data."""
    return f"{suite} ({SYNTHETIC_SUITE})" if synthetic_data else suite
