"""The leaderboard's four outputs, each parsed back: Markdown, tidy CSV (pandas), LaTeX, the HTML page."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from imagenet_dg.cli import main
from imagenet_dg.records import RUN_FILE
from leaderboard.aggregation import LeaderboardError
from leaderboard.latex import escape
from leaderboard.publish import CSV_FILE, HTML_FILE, LATEX_FILE, MARKDOWN_FILE, publish
from leaderboard.reported import Reported
from test_leaderboard import record, write_all

PUBLISHED = [
    Reported("pacs", "fewshot", "ViT-B-16", "openai", 16, "guidg", "clipood", "batch", t, a, "GuiDG (AAAI 2026)",
             "Table 8", "paper_table8.tsv")
    for t, a in (("photo", 61.0), ("sketch", 75.0))
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two suites; pacs with three rows (one with a missing seed), vlcs with one; an unfinished run."""
    items = [record(t, s, a) for t, values in (("photo", (60, 62, 64)), ("sketch", (70, 71, 75)))
             for s, a in zip((1, 2, 3), values)]
    items += [record(t, s, 50.0 + s + (t == "sketch"), method="clipood", base=None, routing=None, n_trainable=1000,
                     phase_seconds={"fit": 7200.0, "evaluate": 1.0}) for t in ("photo", "sketch") for s in (1, 2)]
    items += [record(t, s, 40.0, method="zeroshot", base=None, routing=None, n_trainable=0,
                     phase_seconds={"evaluate": 1.0}) for t in ("photo", "sketch") for s in (1, 2, 3)]
    items += [record("caltech", s, 90.0 + s, suite="vlcs", num_classes=5, sources=("labelme",)) for s in (1, 2, 3)]
    folder = write_all(tmp_path_factory.mktemp("leaderboard") / "runs", items)
    (folder / "killed").mkdir()
    (folder / "killed" / RUN_FILE).write_text("{}")
    return folder


@pytest.fixture(scope="module")
def out(runs: Path) -> Path:
    """The outputs, made once for every test that only reads them."""
    publish([runs], runs.parent / "board", reported=PUBLISHED)
    return runs.parent / "board"


def test_the_command_writes_the_four_outputs(runs: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["leaderboard", "--runs", str(runs), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "o").iterdir() if not p.name.startswith(".")) == sorted(
        [MARKDOWN_FILE, CSV_FILE, LATEX_FILE, HTML_FILE])
    assert "1 unfinished run folder(s) not counted" in result.output


def test_the_command_takes_several_runs_folders(runs: Path, tmp_path: Path) -> None:
    other = write_all(tmp_path / "more", [record("photo", s, 30.0, method="coop", base=None, routing=None)
                                          for s in (1, 2, 3)])
    result = CliRunner().invoke(main, ["leaderboard", "--runs", str(runs), str(other)])
    assert result.exit_code == 0, result.output
    assert "| coop |" in result.output and "| guidg+clipood |" in result.output


def test_the_command_refuses_a_mixed_cell_with_one_error_line(runs: Path, tmp_path: Path) -> None:
    other = write_all(tmp_path / "cpu", [record("photo", 4, 61.0, precision="fp32")])
    result = CliRunner().invoke(main, ["leaderboard", "--runs", str(runs), "--runs", str(other)])
    assert result.exit_code == 2
    assert result.output.startswith("error: cannot put into one cell") and "Traceback" not in result.output


def test_the_command_names_a_missing_runs_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["leaderboard", "--runs", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and f"error: {tmp_path / 'nowhere'}: no such runs folder" in result.output


def test_outputs_are_the_same_bytes_every_time(runs: Path, out: Path, tmp_path: Path, monkeypatch) -> None:
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    again = runs.parent / "again"
    monkeypatch.chdir(tmp_path)
    publish([runs], again, reported=PUBLISHED)
    assert {p.name: p.read_bytes() for p in again.iterdir()} == first


def test_files_not_written_by_the_command_are_never_replaced(runs: Path, tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / MARKDOWN_FILE).write_text("my notes\n")
    with pytest.raises(LeaderboardError, match=f"already holds {MARKDOWN_FILE}, not written by"):
        publish([runs], tmp_path / "mine")
    assert (tmp_path / "mine" / MARKDOWN_FILE).read_text() == "my notes\n"


# --- CSV -----------------------------------------------------------------------------------------------------

def test_csv_has_one_row_per_cell_with_its_runs(out: Path) -> None:
    frame = pd.read_csv(out / CSV_FILE, dtype={"base": str, "routing": str})
    reproduced = frame[frame["kind"] == "reproduced"]
    # pacs: 3 rows x (2 targets + average); vlcs: 1 row x (1 target + average)
    assert len(reproduced) == 3 * 3 + 2
    guidg = reproduced[(reproduced["suite"] == "pacs") & (reproduced["row"] == "guidg+clipood")].set_index("target")
    assert guidg.loc["photo", "mean"] == pytest.approx(62.0) and guidg.loc["photo", "spread"] == pytest.approx(2.0)
    assert guidg.loc["average", "mean"] == pytest.approx(67.0) and guidg.loc["photo", "n_seeds"] == 3
    assert guidg.loc["photo", "chance"] == pytest.approx(100 / 7, abs=1e-4) and guidg.loc["photo", "spread_kind"] == "sd"
    for runs in reproduced["runs"]:
        for folder in runs.split(";"):
            assert (out / folder / "results.jsonl").is_file()  # relative to the CSV's folder
    clipood = reproduced[reproduced["row"] == "clipood"].set_index("target")
    assert bool(clipood.loc["photo", "fewer_seeds"]) and clipood.loc["photo", "n_seeds"] == 2


def test_csv_reported_rows_carry_the_difference_and_source(out: Path) -> None:
    frame = pd.read_csv(out / CSV_FILE)
    reported = frame[frame["kind"] == "reported"].set_index("target")
    assert reported.loc["photo", "reported"] == pytest.approx(61.0)
    assert reported.loc["photo", "difference"] == pytest.approx(1.0)
    assert reported.loc["average", "difference"] == pytest.approx(67.0 - 68.0)
    assert reported.loc["photo", "source"] == "GuiDG (AAAI 2026), Table 8 (paper_table8.tsv)"


# --- Markdown ------------------------------------------------------------------------------------------------

def test_markdown_tables_are_rectangular_and_captioned(out: Path) -> None:
    text = (out / MARKDOWN_FILE).read_text()
    blocks = [b for b in text.split("\n\n") if b.startswith("|")]
    assert len(blocks) == 3  # the overview and one table per suite
    for block in blocks:
        widths = {len(re.split(r"(?<!\\)\|", line)) for line in block.splitlines()}
        assert len(widths) == 1
    assert text.count("mean ± standard deviation over seeds") == 3  # the overview and each table
    assert "| guidg+clipood | 62.0 ± 2.0 (3) | 72.0 ± 2.6 (3) | 67.0 ± 2.3 (3) |" in text
    assert "| clipood | 51.5 ± 0.7 (2†) |" in text
    assert "photo<br>7 classes, chance 14.3" in text
    assert "61.0 (Δ +1.0) | 75.0 (Δ −3.0) | 68.0 (Δ −1.0)" in text
    assert "1 unfinished run folder not counted: `../runs/killed`" in text
    assert "## Suite averages" in text and "| guidg+clipood | 67.0 ± 2.3 (3) | 92.0 ± 1.0 (3) | 79.5 |" in text
    assert "| clipood | 52.0 ± 0.7 (2†) | – | – |" in text  # marked in the overview as in its table


# --- LaTeX ---------------------------------------------------------------------------------------------------

def _balanced(text: str) -> bool:
    depth = 0
    for match in re.finditer(r"\\[{}]|[{}]", text):
        token = match.group()
        if token in ("\\{", "\\}"):
            continue
        depth += 1 if token == "{" else -1
        if depth < 0:
            return False
    return depth == 0


def test_latex_is_well_formed_booktabs_with_best_bold_and_second_underlined(out: Path) -> None:
    text = (out / LATEX_FILE).read_text()
    assert _balanced(text)
    environments = re.findall(r"\\(begin|end)\{(\w+)\}", text)
    stack = []
    for kind, name in environments:
        if kind == "begin":
            stack.append(name)
        else:
            assert stack.pop() == name
    assert not stack and text.count("\\begin{table}") == 2
    assert text.count("\\toprule") == text.count("\\bottomrule") == 2
    pacs = text.split("\\end{table}")[0]
    rows = {line.split(" & ")[0]: line for line in pacs.splitlines() if " & " in line}
    # photo column: guidg+clipood 62.0 best, clipood 51.5 second, zeroshot 40.0 plain
    assert "$\\mathbf{62.0 \\pm 2.0}$" in rows["guidg+clipood"]
    assert "\\underline{$51.5 \\pm 0.7$}" in rows["clipood"]
    assert "\\mathbf" not in rows["zeroshot"] and "\\underline" not in rows["zeroshot"]
    assert "\\textsuperscript{\\dag2}" in rows["clipood"] and "\\dag" not in rows["zeroshot"]  # 2 of 3 seeds
    assert "n = 3 unless marked" in pacs
    assert "guidg+clipood (reported)" in text and "Reported: GuiDG (AAAI 2026), Table 8." in text
    for line in pacs.splitlines():
        if line.endswith("\\\\") and "multicolumn" not in line:
            assert line.count(" & ") == 3  # method, two targets, average
    assert "standard deviation" in pacs and "\\_" not in "".join(rows)  # labels escaped only where needed


def _compile_latex(fragment: Path, folder: Path) -> str:
    """pdflatex of an article that inputs ``fragment``; the log."""
    document = folder / "doc.tex"
    document.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage{graphicx}\n"
                        "\\usepackage[utf8]{inputenc}\n"
                        f"\\begin{{document}}\n\\input{{{fragment.as_posix()}}}\n\\end{{document}}\n")
    result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", document.name], cwd=folder,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
    return (folder / "doc.log").read_text(errors="replace")


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no TeX engine installed")
def test_latex_compiles(out: Path, tmp_path: Path) -> None:
    log = _compile_latex(out / LATEX_FILE, tmp_path)
    assert "Overfull \\hbox" not in log


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no TeX engine installed")
def test_a_six_target_table_fits_the_column_and_a_narrow_one_keeps_its_size(tmp_path: Path) -> None:
    domains = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
    items = [record(t, s, 40.0 + i + s, suite="domainnet", num_classes=345,
                    sources=tuple(d for d in domains if d != t), method=m, base=b, routing=r)
             for i, t in enumerate(domains) for s in (1, 2, 3)
             for m, b, r in (("guidg", "clipood", "batch"), ("clipood", None, None))]
    runs = write_all(tmp_path / "runs", items)
    publish([runs], tmp_path / "board", reported=[])
    text = (tmp_path / "board" / LATEX_FILE).read_text()
    assert "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%" in text
    log = _compile_latex(tmp_path / "board" / LATEX_FILE, tmp_path)
    assert "Overfull \\hbox" not in log  # without the scaling the seven number columns overflow the page


# --- HTML ----------------------------------------------------------------------------------------------------

class PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.cell_links: list[str] = []
        self.links: list[str] = []
        self.external: list[str] = []
        self.tags: dict[str, int] = {}
        self.stack: list[str] = []
        self.in_td = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if "svg" not in self.stack:  # count the page's own elements, not those inside the plots
            self.tags[tag] = self.tags.get(tag, 0) + 1
        if "id" in values:
            assert values["id"] not in self.ids, f"duplicate id {values['id']}"
            self.ids.add(values["id"])
        for name in ("src", "href", "xlink:href"):
            value = values.get(name) or ""
            if re.match(r"(https?:)?//", value):
                self.external.append(value)
        if tag == "link" or (tag == "script" and "src" in values):
            self.external.append(str(values))
        if tag == "a":
            self.links.append(values["href"] or "")
            if self.stack and self.stack[-1] == "td":
                self.cell_links.append(values["href"] or "")
        if tag not in ("meta", "br", "path", "use", "rect", "circle", "line", "polyline", "stop"):
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("meta", "br", "path", "use", "rect", "circle", "line", "polyline", "stop"):
            return
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()


def parse(path: Path) -> PageParser:
    parser = PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    assert not parser.stack, f"unclosed {parser.stack}"
    return parser


def test_the_page_is_self_contained(out: Path) -> None:
    page = parse(out / HTML_FILE)
    assert page.external == []
    assert page.tags["svg"] == 3  # one cost plot for the overview, one plot per suite table
    assert page.tags["style"] == 1 and page.tags["script"] == 1


def test_every_number_of_the_page_links_to_the_records_behind_it(out: Path) -> None:
    page = parse(out / HTML_FILE)
    text = (out / HTML_FILE).read_text()
    numbers = re.findall(r'<td data-v="[0-9.]+"[^>]*><a href="(#records-\d+)"', text)
    # table cells (pacs 3 rows x 3, vlcs 1 x 2), the overview's suite averages (guidg 2, clipood 1, zeroshot 1)
    # and its mean over suites (guidg only: the others miss a suite)
    assert len(numbers) == 3 * 3 + 2 + 4 + 1
    for anchor in numbers:
        assert anchor.lstrip("#") in page.ids
    assert {a for a in page.cell_links if a.startswith("#")} == set(numbers)
    record_files = [link for link in page.links if link.endswith("results.jsonl")]
    assert record_files and all((out / link).is_file() for link in record_files)
    guidg_photo = re.search(r'guidg\+clipood; target photo \(3 runs\)</summary>(.*?)</details>', text).group(1)
    assert [float(a) for a in re.findall(r"<td>(\d+\.\d\d)</td>", guidg_photo)] == [60.0, 62.0, 64.0]


def test_the_page_shows_classes_chance_spread_and_reported_rows(out: Path) -> None:
    text = (out / HTML_FILE).read_text()
    assert "7 classes, chance 14.3" in text and "5 classes, chance 20.0" in text
    assert text.count("mean ± standard deviation over seeds") >= 2
    assert "guidg+clipood, reported: GuiDG (AAAI 2026), Table 8" in text and "(Δ −3.0)" in text
    assert "training GPU-hours per run" in text and "CPU-hours" not in text  # every run of the fixture ran on cuda
    assert re.search(r'<td data-v="[0-9.]+" class="[^"]*\bfewer\b', text)


def test_the_cost_plot_says_gpu_or_cpu_hours() -> None:
    from leaderboard.plots import hours_unit

    assert hours_unit(["cuda"]) == "GPU-hours" and hours_unit(["cpu"]) == "CPU-hours"
    assert "hollow" in hours_unit(["cpu", "cuda"])


# --- synthetic data ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def synthetic_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same suite on real data (openai weights) and on synthetic miniature data (synthetic-world weights)."""
    items = [record("photo", s, 40.0 + s, synthetic_data=True, model="imagenet-dg-tiny", pretrained="mini",
                    synthetic_weights=True) for s in (1, 2, 3)]
    items += [record("photo", s, 60.0 + s) for s in (1, 2, 3)]
    folder = write_all(tmp_path_factory.mktemp("synthetic") / "runs", items)
    publish([folder], folder.parent / "board", reported=PUBLISHED)
    return folder.parent / "board"


def test_every_output_says_a_table_is_of_synthetic_data(synthetic_out: Path) -> None:
    title = "pacs (synthetic miniature), fewshot protocol, imagenet-dg-tiny, mini (synthetic-world weights), 16 shots"
    markdown = (synthetic_out / MARKDOWN_FILE).read_text()
    assert f"### {title}" in markdown and "\n## pacs (synthetic miniature)\n" in markdown and "\n## pacs\n" in markdown
    assert markdown.count("Synthetic miniature data:") == 2  # its overview and its table; none for the real one
    assert "pacs (synthetic miniature)<br>7 classes, chance 14.3" in markdown  # the overview's column
    latex = (synthetic_out / LATEX_FILE).read_text()
    assert escape(title) in latex and "Synthetic miniature data:" in latex
    page = (synthetic_out / HTML_FILE).read_text()
    assert f"<h3 id=\"table-1\">{title}</h3>" in page and '<h2 id="suite-pacs-synthetic">' in page
    assert "Synthetic miniature data:" in page
    table = pd.read_csv(synthetic_out / CSV_FILE, keep_default_na=False)
    synthetic = table[table["synthetic_data"].astype(str).str.lower() == "true"]
    assert set(synthetic["mean"]) == {"42.0000"} and set(synthetic["weights"]) == {"mini (synthetic-world weights)"}
    assert set(synthetic["kind"]) == {"reproduced"}  # the published numbers sit beside the real row only
    real = table[table["synthetic_data"].astype(str).str.lower() == "false"]
    assert "reported" in set(real["kind"]) and set(real["weights"]) == {"openai weights"}
