"""How a setting is declared: its type, default and allowed values in one place, as data.

A configuration *section* is a frozen dataclass derived from :class:`Section` whose fields are declared with
:func:`setting`: the annotation is the type, then the default, what is allowed, and one line of help::

    @dataclass(frozen=True)
    class WiseFTConfig(Section):
        NAME: ClassVar[str] = "wise_ft"
        alpha: float = setting(0.5, Range(0.0, 1.0), "weight of the fine-tuned weights")
        mode: str = setting("end", OneOf(WISE_FT_MODES), "when the interpolation is applied")

Building a section checks every value against its declaration (and :meth:`Section.relations`, for rules that
tie several values together), so no configuration with a value outside its range exists. The command line's
``--set section.key=value`` is read by :func:`parse_setting`, which turns the text into the setting's type and
checks it; ``imagenet-dg settings`` lists every declaration (:func:`describe_section`). A run's configuration
is a :class:`MethodConfig`: one instance of each section it reads. Which sections exist, and the presets'
values of each, are declared where each section is defined (see ``docs/methods.md``, "Settings").
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import yaml

from imagenet_dg.errors import ImageNetDGError

SETTING = "setting"
"""Key of a field's metadata that holds its :class:`Declared`."""


class SettingError(ImageNetDGError, ValueError):
    """A setting's value is not allowed, or a setting or section does not exist."""


# --- what is allowed ------------------------------------------------------------------------------------------


class Allowed:
    """A rule on a setting's value, besides its type: :meth:`problem` says what is wrong with a value."""

    def problem(self, value: Any) -> str | None:
        """None when ``value`` is allowed, else what is expected (e.g. ``"a number > 0"``)."""
        raise NotImplementedError

    def describe(self) -> str:
        """The allowed values in a few words, for help texts and tables."""
        raise NotImplementedError


@dataclass(frozen=True)
class Range(Allowed):
    """Numbers from ``low`` to ``high`` (None: unbounded), each end included unless it is open."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a number inside the range (NaN never is)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return False
        if self.low is not None and (value < self.low or (self.open_low and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.open_high and value == self.high)))

    def problem(self, value: Any) -> str | None:
        return None if self.contains(value) else self.describe()

    def describe(self) -> str:
        if self.high is None and self.low is None:
            return "any number"
        if self.high is None:
            return f"{'>' if self.open_low else '>='} {_number(self.low)}"
        if self.low is None:
            return f"{'<' if self.open_high else '<='} {_number(self.high)}"
        return (f"{'(' if self.open_low else '['}{_number(self.low)}, {_number(self.high)}"
                f"{')' if self.open_high else ']'}")


def positive() -> Range:
    """Numbers > 0."""
    return Range(0, open_low=True)


def at_least(low: float) -> Range:
    """Numbers >= ``low``."""
    return Range(low)


@dataclass(frozen=True)
class OneOf(Allowed):
    """One of the named ``choices`` (each choice list is defined once, where its meaning is implemented)."""

    choices: tuple[Any, ...]

    def problem(self, value: Any) -> str | None:
        return None if value in self.choices else self.describe()

    def describe(self) -> str:
        return "one of " + ", ".join(str(c) for c in self.choices)


@dataclass(frozen=True)
class Words(Allowed):
    """A non-empty text (the type decides whether None is allowed too)."""

    def problem(self, value: Any) -> str | None:
        return None if value is None or (isinstance(value, str) and value.strip()) else self.describe()

    def describe(self) -> str:
        return "words (a non-empty text)"


@dataclass(frozen=True)
class Ordered(Allowed):
    """A tuple whose every element is allowed by ``each`` and which never decreases (e.g. low <= high)."""

    each: Allowed

    def problem(self, value: Any) -> str | None:
        if any(self.each.problem(v) is not None for v in value) or list(value) != sorted(value):
            return self.describe()
        return None

    def describe(self) -> str:
        return f"in {self.each.describe()}, low <= high"


@dataclass(frozen=True)
class Each(Allowed):
    """A non-empty tuple of any length whose every element is allowed by ``each`` (e.g. a grid of candidates)."""

    each: Allowed

    def problem(self, value: Any) -> str | None:
        if not value or any(self.each.problem(v) is not None for v in value):
            return self.describe()
        return None

    def describe(self) -> str:
        return f"one or more, each {self.each.describe()}"


def _number(value: float | None) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# --- declaring settings and sections --------------------------------------------------------------------------


@dataclass(frozen=True)
class Declared:
    """What :func:`setting` records about a field beside its default."""

    allowed: Allowed | None
    help: str


def setting(default: Any, allowed: Allowed | None = None, help: str = "") -> Any:
    """A section field: its ``default``, what is ``allowed`` besides its type (None: every value of the type)
    and one line of ``help``. Use it as ``name: type = setting(...)`` in a :class:`Section`."""
    metadata = {SETTING: Declared(allowed, help)}
    if isinstance(default, (list, dict, set)):
        raise TypeError("a setting's default must be immutable (a tuple, not a list)")
    return field(default=default, metadata=metadata)


S = TypeVar("S", bound="Section")


@dataclass(frozen=True)
class Section:
    """A configuration section: a frozen dataclass of settings, named :attr:`NAME` (``--set NAME.key=value``).

    Subclasses declare ``NAME``, optionally ``PRESETS`` (preset name -> the values that preset changes,
    e.g. ``{"mini": {"epochs": 2}}``; a preset based on another inherits its values, see
    :mod:`guidg.presets`), and their fields with :func:`setting`. Building one checks every value; override
    :meth:`relations` for rules between several values.
    """

    NAME: ClassVar[str] = ""
    PRESETS: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    def __post_init__(self) -> None:
        for declared in dataclasses.fields(self):
            value = _checked(type(self), declared.name, getattr(self, declared.name))
            object.__setattr__(self, declared.name, value)
        problems = list(self.relations())
        if problems:
            raise SettingError(f"{self.NAME}: {'; '.join(problems)}")

    def relations(self) -> Iterator[str]:
        """What is wrong between several values (each problem names the settings); nothing by default."""
        return iter(())

    def to_dict(self) -> dict[str, Any]:
        """Every value, JSON-able (tuples as lists once dumped)."""
        return dataclasses.asdict(self)


def section_settings(kind: type[Section]) -> dict[str, tuple[Any, Any, Declared]]:
    """Setting name -> (type, default, declaration) of a section, in declaration order."""
    hints = typing.get_type_hints(kind)
    result = {}
    for declared in dataclasses.fields(kind):
        if SETTING not in declared.metadata:
            raise TypeError(f"{kind.__name__}.{declared.name} is not declared with setting()")
        result[declared.name] = (hints[declared.name], declared.default, declared.metadata[SETTING])
    return result


def _checked(kind: type[Section], key: str, value: Any) -> Any:
    """``value`` in the canonical form of ``kind.key``'s type (an int for a float setting becomes a float, a list
    a tuple), or a :class:`SettingError` naming the setting, the value and what is allowed."""
    annotation, _, declared = section_settings(kind)[key]
    converted = _of_type(annotation, value)
    if converted is _WRONG:
        raise SettingError(f"{kind.NAME}.{key} = {value!r}: expected {expected_text(annotation, declared)}")
    allowed = declared.allowed
    if converted is not None and allowed is not None and allowed.problem(converted) is not None:
        raise SettingError(
            f"{kind.NAME}.{key} = {shown_value(converted)}: expected {expected_text(annotation, declared)}")
    return converted


_WRONG = object()


def _of_type(annotation: Any, value: Any) -> Any:
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in arguments:
            return None
        kinds = [a for a in arguments if a is not type(None)]
        return _of_type(kinds[0], value)
    if origin is tuple and arguments[-1:] == (Ellipsis,):
        if not isinstance(value, (tuple, list)):
            return _WRONG
        parts = tuple(_of_type(arguments[0], v) for v in value)
        return _WRONG if any(p is _WRONG for p in parts) else parts
    if origin is tuple:
        if not isinstance(value, (tuple, list)) or len(value) != len(arguments):
            return _WRONG
        parts = tuple(_of_type(a, v) for a, v in zip(arguments, value))
        return _WRONG if any(p is _WRONG for p in parts) else parts
    if annotation is bool:
        return value if isinstance(value, bool) else _WRONG
    if annotation is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _WRONG
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return _WRONG
        return float(value)
    if annotation is str:
        return value if isinstance(value, str) else _WRONG
    raise TypeError(f"settings of type {annotation!r} are not supported")


def type_text(annotation: Any) -> str:
    """A type as a reader of ``--set`` needs it: ``an integer``, ``true or false``, ``two numbers a,b`` ..."""
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        kinds = [a for a in arguments if a is not type(None)]
        return f"{type_text(kinds[0])} or null"
    if origin is tuple:
        count = "" if arguments[-1:] == (Ellipsis,) else f"{len(arguments)} "
        return f"{count}comma-separated numbers"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a text"}[annotation]


def _allowed_text(declared: Declared) -> str:
    return f" ({declared.allowed.describe()})" if declared.allowed is not None else ""


def shown_value(value: Any) -> str:
    """A value as it is written after ``--set section.key=`` (``true``, ``null``, ``0.7,1``)."""
    if isinstance(value, tuple):
        return ",".join(shown_value(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def parse_setting(kind: type[Section], key: str, text: str) -> Any:
    """The value of ``kind.key`` written as ``text`` on the command line, checked against its declaration.

    Texts are read as YAML scalars (``1e-5``, ``true``, ``null``; an empty text is null); a tuple is
    comma-separated. Raises :class:`SettingError` naming the setting, the text and what is allowed.
    """
    settings = section_settings(kind)
    if key not in settings:
        raise SettingError(f"{kind.NAME} has no setting {key!r}; it has {', '.join(settings)}")
    annotation, _, declared = settings[key]
    try:
        value = _read(annotation, text)
        return _checked(kind, key, value)
    except SettingError:
        raise SettingError(f"{kind.NAME}.{key}={text}: expected {expected_text(annotation, declared)}") from None


def expected_text(annotation: Any, declared: Declared) -> str:
    """What a setting takes, in words: ``one of end, per-epoch``, ``an integer (>= 1)`` ..."""
    allowed = declared.allowed
    if isinstance(allowed, OneOf):
        optional = " or null" if type_text(annotation).endswith(" or null") else ""
        return allowed.describe() + optional
    if isinstance(allowed, Range):
        bounds = allowed.describe()
        return f"{type_text(annotation)} {'in ' if bounds.startswith(('[', '(')) else ''}{bounds}"
    if isinstance(allowed, (Ordered, Each)):
        return f"{type_text(annotation)} {allowed.describe()}"
    return f"{type_text(annotation)}{_allowed_text(declared)}"


def _read(annotation: Any, text: str) -> Any:
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if not text.strip() or _yaml(text) is None:
            return None
        return _read(next(a for a in arguments if a is not type(None)), text)
    if origin is tuple:
        return tuple(_read(arguments[0], part.strip()) for part in text.split(",") if part.strip())
    if annotation is str:
        return text
    if annotation is int:
        try:
            return int(text)
        except ValueError:
            return text
    if annotation is float:
        try:
            return float(text)
        except ValueError:
            return text
    return _yaml(text)


def _yaml(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def describe_section(kind: type[Section]) -> list[tuple[str, str, str, str, str]]:
    """One row per setting: (``section.key``, type, default, allowed, help), for listings and tables."""
    rows = []
    for key, (annotation, default, declared) in section_settings(kind).items():
        allowed = declared.allowed.describe() if declared.allowed is not None else "-"
        rows.append((f"{kind.NAME}.{key}", type_text(annotation), shown_value(default), allowed, declared.help))
    return rows


# --- a run's configuration ------------------------------------------------------------------------------------


class MethodConfig:
    """The configuration of a run: one instance of every section it reads, by section name.

    ``config.prompt`` (or ``config.section(PromptConfig)``) is the ``prompt`` section. Immutable; equal
    configurations compare equal.
    """

    __slots__ = ("_sections",)

    def __init__(self, sections: Iterable[Section]) -> None:
        chosen: dict[str, Section] = {}
        for one in sections:
            if one.NAME in chosen and chosen[one.NAME] != one:
                raise SettingError(f"two different {one.NAME} sections in one configuration")
            chosen[one.NAME] = one
        object.__setattr__(self, "_sections", chosen)  # never changed after this

    def __reduce__(self) -> tuple[Any, ...]:
        return (MethodConfig, (tuple(self._sections.values()),))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a MethodConfig is immutable; use replace()")

    def __getattr__(self, name: str) -> Section:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._sections[name]
        except KeyError:
            raise AttributeError(
                f"this configuration has no section {name!r}; it has {', '.join(self._sections)}"
            ) from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MethodConfig) and dict(self._sections) == dict(other._sections)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._sections.items(), key=lambda item: item[0])))

    def __repr__(self) -> str:
        return f"MethodConfig({', '.join(repr(s) for s in self._sections.values())})"

    @property
    def names(self) -> tuple[str, ...]:
        """The section names, in order."""
        return tuple(self._sections)

    def sections(self) -> tuple[Section, ...]:
        """The sections, in order."""
        return tuple(self._sections.values())

    def section(self, kind: type[S]) -> S:
        """The section of type ``kind``; an error naming it when this configuration lacks it."""
        found = self._sections.get(kind.NAME)
        if not isinstance(found, kind):
            raise SettingError(
                f"this configuration has no {kind.NAME} section (it has {', '.join(self._sections)}); "
                "a method reads only the sections it declares"
            )
        return found

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record of every value, by section."""
        return {name: one.to_dict() for name, one in self._sections.items()}

    def replace(self, **changes: Mapping[str, Any]) -> MethodConfig:
        """A copy with some values changed, e.g. ``replace(finetune={"lr": 1e-5})``; each value is checked."""
        updated = dict(self._sections)
        for name, values in changes.items():
            if name not in updated:
                raise SettingError(
                    f"unknown configuration section {name!r}; expected one of {', '.join(updated)}"
                )
            current = updated[name]
            known = {f.name for f in dataclasses.fields(current)}
            unknown = sorted(set(values) - known)
            if unknown:
                raise SettingError(f"{name} has no setting {unknown[0]!r}; it has {', '.join(sorted(known))}")
            updated[name] = dataclasses.replace(current, **values)
        return MethodConfig(updated.values())

    def only(self, kinds: Sequence[type[Section]]) -> MethodConfig:
        """The configuration restricted to the sections of ``kinds`` (each must be present)."""
        return MethodConfig(self.section(kind) for kind in kinds)


def suggest(name: str, known: Iterable[str]) -> str:
    """`` (did you mean x?)`` when a known ``section.key`` is likely meant by ``name``, else an empty text: the
    same key in another section (``finetune.heads``: ``guidg.heads``), a key that starts with another section's
    name (``finetune.wise_alpha``: ``wise_ft.alpha``), or a close spelling."""
    known = list(known)
    section, _, key = name.partition(".")
    for candidate in known:
        other_section, _, other_key = candidate.partition(".")
        if other_section != section and (other_key == key or (
                key.startswith(other_section.split("_")[0] + "_") and key.endswith("_" + other_key))):
            return f" (did you mean {candidate}?)"
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
    return f" (did you mean {close[0]}?)" if close else ""
