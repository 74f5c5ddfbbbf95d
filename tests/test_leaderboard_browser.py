"""The leaderboard page in a real headless browser: it renders offline, and its tables sort."""

from __future__ import annotations

import importlib.util
import re
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest

from leaderboard.publish import HTML_FILE, publish
from test_leaderboard import record, write_all

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "leaderboard_screenshot.py"


def _screenshot_module():
    spec = importlib.util.spec_from_file_location("leaderboard_screenshot", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


shot = _screenshot_module()
pytestmark = pytest.mark.skipif(shot.chromium() is None, reason="Chromium is not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("browser")
    items = [record(t, s, a, method=m, base=None, routing=None) for m, a in (("zeroshot", 40.0), ("coop", 70.0),
                                                                             ("erm", 55.0))
             for t in ("photo", "sketch") for s in (1, 2)]
    publish([write_all(folder / "runs", items)], folder / "board", reported=[])
    return folder / "board" / HTML_FILE


def test_the_page_renders_to_a_full_length_png(page: Path) -> None:
    out = shot.screenshot(page, page.with_suffix(".png"), width=1000)
    header = out.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    assert width == 1000 and height > 1200  # the whole page, not only the first screen


def test_a_click_on_a_header_sorts_the_rows(page: Path) -> None:
    probe = page.with_name("probe.html")
    clicks = ("<script>window.addEventListener('load', function () {"
              "var table = document.querySelectorAll('h2 ~ table.sortable')[1];"
              "var header = table.tHead.rows[0].cells[1]; var order = function () {"
              "return Array.prototype.map.call(table.tBodies[0].rows, function (r) { return r.cells[0].textContent; })"
              ".join(','); }; var before = order(); header.click(); var down = order(); header.click();"
              "document.title = 'ORDER ' + before + ' | ' + down + ' | ' + order(); });</script>")
    probe.write_text(page.read_text().replace("</body>", clicks + "</body>"))
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run([shot.chromium(), *shot.FLAGS, f"--user-data-dir={profile}", "--dump-dom",
                                 "--virtual-time-budget=2000", probe.as_uri()], capture_output=True, text=True,
                                timeout=120)
    found = re.search(r"<title>ORDER ([^<]*)</title>", result.stdout)
    assert found, result.stderr[-2000:]
    before, descending, ascending = found.group(1).split(" | ")
    assert before == "zeroshot,coop,erm"  # the paper's order
    assert descending == "coop,erm,zeroshot" and ascending == "zeroshot,erm,coop"  # by the photo column


def test_a_link_to_the_records_of_a_number_opens_their_list(page: Path) -> None:
    anchor = re.search(r'<td data-v="[0-9.]+"[^>]*><a href="#(records-\d+)"', page.read_text()).group(1)
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run([shot.chromium(), *shot.FLAGS, f"--user-data-dir={profile}", "--dump-dom",
                                 "--virtual-time-budget=2000", f"{page.as_uri()}#{anchor}"], capture_output=True,
                                text=True, timeout=120)
    assert f'<details id="{anchor}" open="">' in result.stdout
    assert result.stdout.count(' open="">') == 1  # only that one
