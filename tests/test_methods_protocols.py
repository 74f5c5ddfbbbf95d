"""Every registered method under both protocols on a standard suite: a run on a miniature PACS task of each
protocol, through the run path, selecting on the sources' data only."""

from __future__ import annotations

from pathlib import Path

import pytest

from guidg.backbone import TINY_SPEC
from guidg.methods import REGISTERED
from guidg.presets import method_config
from guidg.run import RunSpec, attempt
from imagenet_dg.build import BuildOptions, build
from imagenet_dg.layouts import scan_suite, suite_roots
from imagenet_dg.mini_suites import make_mini_suite

SUITE = "mini-pacs"
TARGET = "sketch"
CONFIGS = {"full": f"{TARGET}-full-trial1", "fewshot": f"{TARGET}-2shot-seed1"}


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    root = make_mini_suite(SUITE, tmp_path_factory.mktemp("suite"), images_per_class=6).root
    scan = scan_suite(SUITE, root)
    out = tmp_path_factory.mktemp("benchmarks")
    build(scan, out / "full", BuildOptions(protocol="full", seeds=(1,), tasks=(TARGET,)))
    build(scan, out / "fewshot", BuildOptions(shots=(2,), seeds=(1,), tasks=(TARGET,)))
    return root, {"full": out / "full", "fewshot": out / "fewshot"}


@pytest.mark.parametrize("protocol", ["fewshot", "full"])
@pytest.mark.parametrize("method", REGISTERED, ids=lambda m: m.name)
def test_every_method_runs_under_both_protocols(method, protocol: str, pacs, tmp_path: Path) -> None:
    root, benchmarks = pacs
    spec = RunSpec(benchmarks[protocol], CONFIGS[protocol], method.name, TINY_SPEC, "smoke",
                   method_config(method.name, "smoke"), 1)
    outcome = attempt(spec, suite_roots(SUITE, root), tmp_path, device="cpu")
    assert outcome.status == "ran", outcome
    record = outcome.record
    assert (record.method, record.protocol, record.target) == (method.family, protocol, TARGET)
    assert record.model_selection == method.selection
    assert 0.0 <= record.accuracy <= 100.0 and record.n_trainable >= 0
    # Selection saw the sources only: one validation accuracy per source, none for the target.
    assert set(record.validation_accuracy) == {"art_painting", "cartoon", "photo"}
