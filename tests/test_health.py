"""Image health checks: each defect is reported under its kind and path, healthy files are not."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagenet_dg.health import (
    BAD_IMAGE_POLICIES,
    NEAR_BLACK_LUMINANCE,
    PROBLEM_KINDS,
    HealthReport,
    ImageProblem,
    check_images,
    inspect_image,
)

RNG = np.random.default_rng(11)

HEALTHY = ("classA/healthy_1.JPEG", "classA/healthy_2.jpg", "classB/dark_but_visible.JPEG")
EXPECTED_KIND = {
    "classA/zero.JPEG": "zero-byte",
    "classA/truncated.JPEG": "truncated",
    "classB/garbage.JPEG": "undecodable",
    "classB/missing.JPEG": "missing",
    "classB/cmyk.JPEG": "cmyk",
    "classB/png.JPEG": "png-as-jpeg",
    "classC/black.JPEG": "near-black",
    "classC/exif.JPEG": "broken-exif",
    "classC/gray.JPEG": "non-rgb-mode",
}


def picture(height: int = 64, width: int = 80) -> Image.Image:
    """A bright RGB picture of flat colour blocks."""
    small = RNG.integers(60, 256, (height // 16, width // 16, 3), dtype=np.uint8)
    return Image.fromarray(np.kron(small, np.ones((16, 16, 1), dtype=np.uint8)))


def broken_exif() -> bytes:
    """An EXIF block whose one tag claims 1000 bytes at an offset past its end."""
    return b"Exif\x00\x00MM\x00*\x00\x00\x00\x08" + struct.pack(">HHHLL", 1, 0x010F, 2, 1000, 0xFFF0) + bytes(4)


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A release folder holding healthy files and one file of each defect (the missing one is absent)."""
    root = tmp_path_factory.mktemp("release")
    for folder in ("classA", "classB", "classC"):
        (root / folder).mkdir()
    for name in HEALTHY[:2]:
        picture().save(root / name, quality=90)
    dim = np.full((64, 80, 3), 10, dtype=np.uint8)  # dark, but well above the near-black line
    Image.fromarray(dim).save(root / "classB/dark_but_visible.JPEG")
    (root / "classA/zero.JPEG").write_bytes(b"")
    whole = root / "classA/healthy_1.JPEG"
    (root / "classA/truncated.JPEG").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    (root / "classB/garbage.JPEG").write_bytes(RNG.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    picture().convert("CMYK").save(root / "classB/cmyk.JPEG")
    picture().save(root / "classB/png.JPEG", format="PNG")
    Image.fromarray(np.full((64, 80, 3), 1, dtype=np.uint8)).save(root / "classC/black.JPEG")
    picture().save(root / "classC/exif.JPEG", exif=broken_exif())
    picture().convert("L").save(root / "classC/gray.JPEG")
    return root


ALL_PATHS = sorted([*HEALTHY, *EXPECTED_KIND])


@pytest.fixture(scope="module")
def report(release: Path) -> HealthReport:
    return check_images(release, ALL_PATHS, workers=1)


@pytest.mark.parametrize(("path", "kind"), sorted(EXPECTED_KIND.items()))
def test_each_defect_is_reported_with_its_kind_and_path(report: HealthReport, path: str, kind: str) -> None:
    assert [p.kind for p in report.problems if p.path == path] == [kind]


def test_healthy_files_are_not_reported(report: HealthReport) -> None:
    assert {p.path for p in report.problems}.isdisjoint(HEALTHY)


def test_every_file_is_counted_as_checked(report: HealthReport) -> None:
    assert report.checked == len(ALL_PATHS)


def test_bad_and_quirks_are_split_by_usability(report: HealthReport) -> None:
    bad = {"zero-byte", "truncated", "undecodable", "missing"}
    assert {p.kind for p in report.bad} == bad
    assert {p.kind for p in report.quirks} == set(EXPECTED_KIND.values()) - bad
    assert report.bad_paths == tuple(sorted(p for p, k in EXPECTED_KIND.items() if k in bad))


def test_problem_kinds_are_each_bad_or_quirk() -> None:
    assert set(PROBLEM_KINDS.values()) == {"bad", "quirk"}
    assert set(EXPECTED_KIND.values()) <= set(PROBLEM_KINDS)
    assert BAD_IMAGE_POLICIES == ("stop", "skip")


def test_report_is_sorted_by_path_whatever_the_input_order(release: Path, report: HealthReport) -> None:
    shuffled = list(ALL_PATHS)
    random.Random(3).shuffle(shuffled)
    again = check_images(release, shuffled, workers=1)
    assert again == report
    assert [p.path for p in report.problems] == sorted(p.path for p in report.problems)


def test_parallel_result_equals_serial_result(release: Path, report: HealthReport) -> None:
    # Many more paths than workers, so the work is cut into several chunks finishing in any order.
    paths = ALL_PATHS * 5
    parallel = check_images(release, paths, workers=2)
    serial = check_images(release, paths, workers=1)
    assert parallel == serial
    assert parallel.checked == len(paths)


def test_progress_counts_up_to_the_total(release: Path) -> None:
    calls: list[tuple[int, int]] = []
    check_images(release, ALL_PATHS, workers=1, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (len(ALL_PATHS), len(ALL_PATHS))
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_near_black_detail_gives_the_mean_luminance(report: HealthReport) -> None:
    (problem,) = [p for p in report.problems if p.kind == "near-black"]
    mean = float(problem.detail.split()[2])
    assert 0 <= mean < NEAR_BLACK_LUMINANCE
    assert mean == pytest.approx(1.0, abs=0.6)


def test_inspect_image_reports_under_the_path_as_given(release: Path) -> None:
    given = release / "classB/png.JPEG"
    assert inspect_image(given) == [ImageProblem(str(given), "png-as-jpeg", "PNG content in a .JPEG file")]
    assert inspect_image(release / HEALTHY[0]) == []


def test_format_groups_problems_by_kind_with_paths(report: HealthReport) -> None:
    groups: dict[str, list[str]] = {}
    for line in report.format().splitlines()[1:]:
        if line.startswith("  "):
            groups[current].append(line.strip().split(": ")[0])
        else:
            current = line.split(" ")[0]
            groups[current] = []
    expected: dict[str, list[str]] = {}
    for path, kind in sorted(EXPECTED_KIND.items()):
        expected.setdefault(kind, []).append(path)
    assert groups == expected
    kinds = list(groups)
    assert max(kinds.index(k) for k in groups if PROBLEM_KINDS[k] == "bad") < min(
        kinds.index(k) for k in groups if PROBLEM_KINDS[k] == "quirk"
    )


def test_format_limit_counts_what_it_leaves_out() -> None:
    problems = tuple(ImageProblem(f"x/{i}.JPEG", "missing", "no such file") for i in range(5))
    text = HealthReport(checked=5, problems=problems).format(limit=2)
    assert "x/0.JPEG" in text and "x/1.JPEG" in text and "x/2.JPEG" not in text
    assert "... and 3 more" in text
