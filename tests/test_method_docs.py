"""README's method table and the settings and selection tables of docs/methods.md match the declarations."""

from __future__ import annotations

import re
from pathlib import Path

from guidg.method_tables import METHODS_DOC, README, block_text, blocks, method_table, rules_table, settings_table
from guidg.methods import all_sections

GUIDG = Path(__file__).resolve().parent.parent / "guidg"


def test_readmes_method_table_is_the_declarations() -> None:
    assert block_text(README.read_text(encoding="utf-8"), "methods") == method_table(), (
        "README's method table is out of date: run python -m guidg.method_tables")


def test_every_section_has_its_settings_table_in_the_methods_document() -> None:
    text = METHODS_DOC.read_text(encoding="utf-8")
    for kind in all_sections():
        assert block_text(text, f"settings:{kind.NAME}") == settings_table(kind), (
            f"docs/methods.md's {kind.NAME} table is out of date: run python -m guidg.method_tables")
    assert block_text(text, "rules") == rules_table()


def test_the_tables_say_what_each_declaration_says() -> None:
    table = method_table()
    assert "| `coop` | the M context vectors of one prompt | M x W (context vectors x text width) | " \
           "`source-validation-epoch` | `prompt` |" in table
    assert "| `wise_ft.mode` | a text | `end` | one of end, per-epoch | - |" in blocks()["settings:wise_ft"][1]
    assert "smoke: 4, mini: 4" in blocks()["settings:prompt"][1]  # the presets that change prompt.n_ctx


def test_every_citation_of_the_methods_document_names_one_of_its_headings() -> None:
    headings = set(re.findall(r"^#+ (.+)$", METHODS_DOC.read_text(encoding="utf-8"), re.MULTILINE))
    cited = {}
    for source in GUIDG.rglob("*.py"):
        for found in re.finditer(r"docs/methods\.md``?,\s+\"([^\"]+)\"", source.read_text(encoding="utf-8")):
            cited.setdefault(found.group(1), source.name)
    assert cited and not {name: where for name, where in cited.items() if name not in headings}
