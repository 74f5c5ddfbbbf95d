"""Render the leaderboard's HTML page to a PNG with headless Chromium, to look at it as a reader would.

    python benchmarks/leaderboard_screenshot.py [leaderboard/board/leaderboard.html] [--out page.png] [--width 1280]

Chromium (Debian package ``chromium``) runs with no network, no GPU, no sync and a fresh profile that is removed
afterwards; the page must render from its own content alone. The page height is measured first (a screenshot of
the whole page, not only the first screen).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--force-device-scale-factor=1")


def chromium() -> str | None:
    """Path of a Chromium executable, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if found := shutil.which(name):
            return found
    return None


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def page_height(browser: str, page: Path, width: int, profile: Path, timeout: float = 60) -> int:
    """Height in CSS pixels of ``page`` laid out at ``width``, read from the DOM Chromium dumps."""
    probe = page.with_name(f".{page.stem}.height.html")
    script = ("<script>window.addEventListener('load',function(){document.title="
              "'H'+document.documentElement.scrollHeight;});</script>")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", script + "</body>"), encoding="utf-8")
    try:
        result = _run([browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},2000",
                       "--virtual-time-budget=2000", "--dump-dom", probe.as_uri()], timeout)
    finally:
        probe.unlink(missing_ok=True)
    found = re.search(r"<title>H(\d+)</title>", result.stdout)
    return int(found.group(1)) if found else 4000


def screenshot(page: Path, out: Path, width: int = 1280, timeout: float = 120) -> Path:
    """Write a PNG of the whole of ``page`` to ``out`` and return it."""
    browser = chromium()
    if browser is None:
        raise SystemExit("error: no Chromium found; install it with 'apt-get install -y chromium'")
    with tempfile.TemporaryDirectory(prefix="leaderboard-chromium-") as profile:
        height = page_height(browser, page.resolve(), width, Path(profile))
        result = _run([browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                       "--virtual-time-budget=2000", f"--screenshot={out.resolve()}", page.resolve().as_uri()], timeout)
    if not out.is_file():
        raise SystemExit(f"error: Chromium wrote no screenshot ({result.returncode}): {result.stderr[-2000:]}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", nargs="?", type=Path, default=Path("leaderboard/board/leaderboard.html"))
    parser.add_argument("--out", type=Path, default=None, help="PNG to write (default: beside the page).")
    parser.add_argument("--width", type=int, default=1280)
    args = parser.parse_args(argv)
    if not args.page.is_file():
        print(f"error: {args.page}: no such page; generate it with 'imagenet-dg leaderboard --out DIR'", file=sys.stderr)
        return 2
    out = args.out or args.page.with_suffix(".png")
    print(screenshot(args.page, out, args.width))
    return 0


if __name__ == "__main__":
    sys.exit(main())
