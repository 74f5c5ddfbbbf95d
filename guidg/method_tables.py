"""The method and settings tables of ``README.md`` and ``docs/methods.md``, and ``imagenet-dg settings``,
rendered from the methods' declarations.

README's method table sits between ``<!-- methods:start -->`` and ``<!-- methods:end -->``; every configuration
section has its table in ``docs/methods.md`` between ``<!-- settings:NAME:start -->`` and
``<!-- settings:NAME:end -->``, and the selection rules theirs between ``<!-- rules:start -->`` and
``<!-- rules:end -->``. ``python -m guidg.method_tables`` rewrites those blocks from the declarations; the tests
check that they match.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

from guidg.methods import METHODS, Method, all_sections, get_method
from guidg.model_selection import RULES
from guidg.presets import PRESETS, presets_changing, section_in_preset
from guidg.settings import Section, describe_section, shown_value
from imagenet_dg.atomic import write_text_atomic
from imagenet_dg.errors import ImageNetDGError

REPOSITORY = Path(__file__).resolve().parent.parent
README = REPOSITORY / "README.md"
METHODS_DOC = REPOSITORY / "docs" / "methods.md"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _sections_of(method: Method) -> str:
    return ", ".join(f"`{kind.NAME}`" for kind in method.sections) or "-"


def method_table() -> str:
    """README's table: one row per registered method, in the leaderboard's order."""
    lines = ["| method | what it trains | trainable parameters | model selection | settings | paper | code |",
             "|---|---|---|---|---|---|---|"]
    for method in METHODS.values():
        papers = "; ".join(f"[{_cell(c.paper)}]({c.url})" for c in method.citations)
        code = ", ".join(f"[{c.code.removeprefix('https://github.com/')}]({c.code})"
                         for c in method.citations if c.code) or "-"
        lines.append(f"| `{method.name}` | {_cell(method.trains)} | {_cell(method.trainable_parameters)} | "
                     f"`{method.selection}` | {_sections_of(method)} | {papers} | {code} |")
    return "\n".join(lines)


def summary(kind: type[Section]) -> str:
    """A section's first docstring paragraph, on one line, without its citation of the docs."""
    paragraph = " ".join((kind.__doc__ or kind.NAME).strip().split("\n\n")[0].split())
    return re.sub(r"\s*\(``docs/methods\.md``[^)]*\)", "", paragraph)


def _presets_text(kind: type[Section], key: str) -> str:
    return ", ".join(f"{name}: {shown_value(value)}" for name, value in presets_changing(kind, key)) or "-"


def settings_table(kind: type[Section]) -> str:
    """The table of one section's settings for ``docs/methods.md``."""
    readers = ", ".join(f"`{m.name}`" for m in METHODS.values() if kind in m.all_sections)
    lines = [f"Read by {readers}.", "",
             "| setting | type | default | allowed | other presets | meaning |", "|---|---|---|---|---|---|"]
    for name, kind_text, default, allowed, help_text in describe_section(kind):
        key = name.partition(".")[2]
        lines.append(f"| `{name}` | {kind_text} | `{_cell(default)}` | {_cell(allowed)} | "
                     f"{_cell(_presets_text(kind, key))} | {_cell(help_text)} |")
    return "\n".join(lines)


def rules_table() -> str:
    """The model-selection rules and the methods that use each."""
    lines = ["| rule | what it keeps | used by |", "|---|---|---|"]
    for rule in RULES.values():
        users = ", ".join(f"`{m.name}`" for m in METHODS.values() if m.selection == rule.name) or "-"
        lines.append(f"| `{rule.name}` | {_cell(rule.description)} | {users} |")
    return "\n".join(lines)


def blocks() -> dict[str, tuple[Path, str]]:
    """Marker name -> (file, the text that belongs between its markers)."""
    found = {"methods": (README, method_table()), "rules": (METHODS_DOC, rules_table())}
    for kind in all_sections():
        found[f"settings:{kind.NAME}"] = (METHODS_DOC, settings_table(kind))
    return found


def _pattern(marker: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- {re.escape(marker)}:start -->\n)(.*?)(<!-- {re.escape(marker)}:end -->)", re.DOTALL)


def block_text(text: str, marker: str) -> str | None:
    """What stands between ``marker``'s start and end lines of ``text``; None without them."""
    found = _pattern(marker).search(text)
    return None if found is None else found.group(2).removesuffix("\n")


def update_documents() -> list[Path]:
    """Rewrite every block from the declarations; the files that changed."""
    changed: dict[Path, str] = {}
    for marker, (path, body) in blocks().items():
        text = changed.get(path) or path.read_text(encoding="utf-8")
        if block_text(text, marker) is None:
            raise ImageNetDGError(f"{path}: no <!-- {marker}:start --> ... <!-- {marker}:end --> block; add one "
                                  "where the table belongs")
        changed[path] = _pattern(marker).sub(lambda m, body=body: m.group(1) + body + "\n" + m.group(3), text)
    written = []
    for path, text in changed.items():
        if text != path.read_text(encoding="utf-8"):
            write_text_atomic(path, text)
            written.append(path)
    return written


def settings_listing(method: str | None = None, preset: str | None = None) -> str:
    """``imagenet-dg settings``: every section (or those of ``method``) with each setting's type, value (the
    default, or ``preset``'s), what is allowed and what it means, and the presets that change it."""
    if preset is not None and preset not in PRESETS:
        raise ImageNetDGError(f"--preset {preset}: unknown preset; expected one of {', '.join(PRESETS)}")
    kinds: Sequence[type[Section]] = get_method(method).all_sections if method is not None else all_sections()
    lines = []
    for kind in kinds:
        readers = ", ".join(m.name for m in METHODS.values() if kind in m.all_sections)
        lines.append(f"{kind.NAME}: {summary(kind)}")
        lines.append(f"  read by {readers}")
        values = section_in_preset(kind, preset) if preset is not None else None
        for name, kind_text, default, allowed, help_text in describe_section(kind):
            key = name.partition(".")[2]
            value = default if values is None else shown_value(getattr(values, key))
            others = _presets_text(kind, key)
            lines.append(f"  {name:<28} {kind_text:<32} {value:<14} {allowed}")
            lines.append(f"      {help_text}" + ("" if others == "-" or preset else f" [presets: {others}]"))
        lines.append("")
    shown = f"preset {preset}" if preset else "defaults (the paper's); other presets in brackets"
    lines.append(f"Values: {shown}. Change one with --set SECTION.KEY=VALUE; presets: {', '.join(PRESETS)}.")
    return "\n".join(lines)


if __name__ == "__main__":
    for path in update_documents():
        print(f"wrote {path}", file=sys.stderr)
