"""Settings: every value declared once with its type and allowed values, checked before anything runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from click.testing import CliRunner

from guidg import harness
from guidg.bases import WiseFTConfig
from guidg.finetune import FinetuneConfig
from guidg.methods import METHODS, all_sections
from guidg.presets import PRESETS, get_preset, method_config
from guidg.prompt_training import PromptConfig
from guidg.settings import SettingError, parse_setting, section_settings
from imagenet_dg.cli import main
from imagenet_dg.suites import get_suite


def evaluate(tmp_path: Path, *extra: str):
    """``imagenet-dg evaluate`` of a miniature sweep that would otherwise start."""
    args = ["evaluate", "--mini", "--mini-dir", str(tmp_path / "mini"), "--target", "a", "--model", "imagenet-dg-tiny",
            "--pretrained", "none", "--device", "cpu", "--seeds", "1", "--runs", str(tmp_path / "runs"), *extra]
    return CliRunner().invoke(main, args)


@pytest.mark.parametrize(
    ("method", "override", "allowed"),
    [("erm", "wise_ft.mode=per_epoch", "one of end, per-epoch"),
     ("zeroshot", "zeroshot.templates=many", "one of single, ensemble"),
     ("clipood", "clipood.bma_beta=0", "a number > 0"),
     ("erm", "wise_ft.alpha=1.5", "a number in [0, 1]"),
     ("erm", "finetune.lr=-1", "a number > 0"),
     ("zeroshot", "eval.batch_size=0", "an integer >= 1"),
     ("coop", "prompt.crop_scale=0.9,0.2", "2 comma-separated numbers in (0, 1], low <= high"),
     ("coop", "prompt.epochs=many", "an integer >= 1")],
)
def test_a_value_outside_its_declaration_is_refused_in_one_line_before_anything_is_made(
    method, override, allowed, tmp_path
) -> None:
    result = evaluate(tmp_path, "--method", method, "--set", override)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [f"error: --set {override}: expected {allowed}"]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mini").exists()


def test_a_setting_asked_of_the_wrong_section_is_refused_naming_the_right_one() -> None:
    with pytest.raises(harness.SweepError, match=r"finetune has no setting 'routing'.*did you mean guidg\.routing"):
        harness.parse_overrides(["finetune.routing=sample"])
    with pytest.raises(harness.SweepError, match=r"did you mean wise_ft\.mode"):
        harness.parse_overrides(["finetune.wise_mode=per-epoch"])


def test_an_override_no_method_of_the_sweep_reads_is_refused(tmp_path) -> None:
    result = evaluate(tmp_path, "--method", "zeroshot", "--set", "finetune.lr=1e-5")
    assert result.exit_code == 2 and "no method of this sweep (zeroshot) reads the finetune settings" in result.output
    assert not (tmp_path / "runs").exists()


def test_overrides_are_checked_against_every_preset_the_sweep_uses(tmp_path) -> None:
    # mini runs 3 x 60 steps: a 300-step warm-up is longer than the run there, not under the paper's 4000 steps
    result = evaluate(tmp_path, "--method", "erm", "--set", "finetune.warmup_steps=300")
    assert result.exit_code == 2 and "warmup_steps 300 is longer than the whole run" in result.output
    assert "preset mini" in result.output and not (tmp_path / "runs").exists()
    checked = harness.validate(harness.Sweep(methods=("erm",), preset="paper", overrides=("finetune.warmup_steps=300",),
                                             model="imagenet-dg-tiny", pretrained="none", device="cpu", mini=True,
                                             runs=tmp_path / "runs"))
    assert checked.changes == {"finetune": {"warmup_steps": 300}}


def test_the_presets_of_a_sweep_are_those_its_tasks_choose() -> None:
    imagenet_dg, pacs, mini_pacs = get_suite("imagenet-dg"), get_suite("pacs"), get_suite("mini-pacs")
    sweep = harness.Sweep(methods=("erm",))
    assert harness.sweep_presets(sweep, imagenet_dg) == ("paper-imagenet-dg", "paper-imagenet-dg-i", "mini")
    assert harness.sweep_presets(dataclasses.replace(sweep, targets=("a",)), imagenet_dg) == ("paper-imagenet-dg", "mini")
    assert harness.sweep_presets(dataclasses.replace(sweep, mini=True), imagenet_dg) == ("mini",)
    assert harness.sweep_presets(sweep, pacs) == ("paper", "mini")
    assert harness.sweep_presets(sweep, mini_pacs) == ("mini",)
    assert harness.sweep_presets(dataclasses.replace(sweep, preset="smoke"), pacs) == ("smoke",)


def test_every_setting_is_declared_with_its_default_and_a_help_line() -> None:
    for kind in all_sections():
        for key, (_, default, declared) in section_settings(kind).items():
            assert declared.help, f"{kind.NAME}.{key}"
            if declared.allowed is not None and default is not None:
                assert declared.allowed.problem(default) is None, f"{kind.NAME}.{key}"


def test_every_preset_builds_every_section() -> None:
    for name in PRESETS:
        config = get_preset(name)
        assert set(config.names) == {kind.NAME for kind in all_sections()}
    assert get_preset("paper-imagenet-dg-i").prompt.batch_size == 8  # its own value
    assert get_preset("paper-imagenet-dg-i").finetune.batch_per_domain == 12  # from paper-imagenet-dg


def test_a_run_has_its_methods_sections_and_the_runs_own() -> None:
    assert set(method_config("zeroshot", "mini").names) == {"zeroshot", "eval", "pipeline"}
    assert set(method_config("guidg+ueo", "mini").names) == {
        "prompt", "finetune", "guidg", "ueo", "wise_ft", "eval", "pipeline"}
    changed = method_config("erm", "mini", {"wise_ft": {"alpha": 0.2}, "prompt": {"epochs": 1}})
    assert changed.wise_ft.alpha == 0.2 and "prompt" not in changed.names


def test_a_section_refuses_a_value_outside_its_declaration_when_built() -> None:
    with pytest.raises(SettingError, match=r"wise_ft.alpha = 1.5: expected a number in \[0, 1\]"):
        WiseFTConfig(alpha=1.5)
    with pytest.raises(SettingError, match="finetune.epochs = True: expected an integer"):
        FinetuneConfig(epochs=True)
    assert PromptConfig(lr=1).lr == 1.0 and isinstance(PromptConfig(lr=1).lr, float)  # one form per value
    assert parse_setting(PromptConfig, "ctx_init", "null") is None
    assert parse_setting(PromptConfig, "crop_scale", "0.5,1") == (0.5, 1.0)


def test_the_settings_command_lists_every_setting_with_what_it_allows() -> None:
    result = CliRunner().invoke(main, ["settings"])
    assert result.exit_code == 0, result.output
    for kind in all_sections():
        for key in section_settings(kind):
            assert f"{kind.NAME}.{key}" in result.output
    assert "one of end, per-epoch" in result.output and "[presets: smoke: 4, mini: 4]" in result.output
    only = CliRunner().invoke(main, ["settings", "--method", "zeroshot", "--preset", "mini"])
    assert only.exit_code == 0 and "prompt." not in only.output and "zeroshot.templates" in only.output


def test_evaluate_help_names_every_registered_method_and_where_the_settings_are() -> None:
    result = CliRunner().invoke(main, ["evaluate", "--help"])
    text = " ".join(result.output.split()).replace("- ", "-")  # the help wraps lines at a name's hyphens
    assert all(name in text for name in METHODS) and "imagenet-dg settings" in text
