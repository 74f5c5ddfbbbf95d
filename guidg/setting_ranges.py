"""Allowed values of a method's settings, declared next to its configuration and checked when it is made.

A configuration is a frozen dataclass; beside it a mapping from each field to a rule says what the field may
hold: an :class:`Interval` (numbers, ``integer`` for whole numbers), :class:`Words` (a non-empty string), or a
tuple of alternatives, each a choice or a rule. :func:`check_settings`
checks an instance against it and names the setting, what was found and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from imagenet_dg.errors import ImageNetDGError


class SettingError(ImageNetDGError, ValueError):
    """A setting of a method's configuration holds a value outside its declared range or choices."""


@dataclass(frozen=True)
class Interval:
    """Numbers from ``low`` to ``high`` (None: unbounded on that side), each end included unless open;
    with ``integer`` only whole numbers (ints, never bools)."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    integer: bool = False

    def __contains__(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if isinstance(value, float) and math.isnan(value):
            return False
        if self.low is not None and (value < self.low or (self.open_low and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.open_high and value == self.high)))

    def __str__(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.high is None and self.low is None:
            return kind
        if self.high is None:
            return f"{kind} {'>' if self.open_low else '>='} {self.low:g}"
        if self.low is None:
            return f"{kind} {'<' if self.open_high else '<='} {self.high:g}"
        return (f"{kind} in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}"
                f"{')' if self.open_high else ']'}")


@dataclass(frozen=True)
class Words:
    """A string holding at least one non-blank character (e.g. words to initialise a prompt from)."""

    def __contains__(self, value: object) -> bool:
        return isinstance(value, str) and bool(value.strip())

    def __str__(self) -> str:
        return "words (a non-empty string)"


Rule = Interval | Words
Allowed = Rule | tuple[Any, ...]
"""What a setting may hold: a rule, or a tuple of alternatives, each a choice (compared with ``==`` and type)
or a rule, e.g. ``(None, Interval(1, integer=True))``."""


def _matches(value: object, rule: Allowed) -> bool:
    if isinstance(rule, (Interval, Words)):
        return value in rule
    return any(_matches(value, choice) if isinstance(choice, (Interval, Words))
               else value == choice and type(value) is type(choice) for choice in rule)


def describe_allowed(rule: Allowed) -> str:
    """``rule`` in words, as messages show it."""
    if isinstance(rule, (Interval, Words)):
        return str(rule)
    return "one of " + ", ".join(str(c) if isinstance(c, (Interval, Words)) else repr(c) for c in rule)


def check_settings(config: Any, allowed: Mapping[str, Allowed], section: str) -> None:
    """Raise :class:`SettingError` for the first field of the dataclass ``config`` whose value is not allowed.

    Every field must be declared in ``allowed``; a field without a declaration is a programming error
    (TypeError). ``section`` names the configuration in messages, e.g. ``clip-lora`` gives ``clip-lora.rank``.
    """
    for field in fields(config):
        if field.name not in allowed:
            raise TypeError(f"{section}.{field.name} has no declared range or choices")
        value, rule = getattr(config, field.name), allowed[field.name]
        if not _matches(value, rule):
            raise SettingError(f"{section}.{field.name} {value!r}: expected {describe_allowed(rule)}")
