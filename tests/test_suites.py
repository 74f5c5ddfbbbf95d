"""The suite registry, the miniature suites and finding suites on disk in every accepted layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torchvision
from click.testing import CliRunner
from PIL import Image

from imagenet_dg import mini_suites
from imagenet_dg.cli import main
from imagenet_dg.errors import ImageNetDGError, OutputExistsError, ProtocolError
from imagenet_dg.layouts import (
    SuiteNotFoundError,
    imagefolder_files,
    locate_suite,
    scan_suite,
    suite_roots,
)
from imagenet_dg.mini_suites import (
    MARKER,
    MIN_TEST_IMAGES,
    VARIANTS,
    default_images_per_class,
    make_mini_suite,
)
from imagenet_dg.protocols import config_name, fewshot_test_size, imagefolder_order
from imagenet_dg.suites import SUITES, Scoring, SuiteError, get_suite, prompt_name

STANDARD = ("pacs", "vlcs", "officehome", "terraincognita", "domainnet")


# --- the registry ----------------------------------------------------------------------------------------


def test_every_standard_suite_and_its_miniature_is_registered() -> None:
    for name in (*STANDARD, "imagenet-dg"):
        assert get_suite(name).name == name
    for name in STANDARD:
        mini = get_suite(f"mini-{name}")
        assert mini.synthetic and not get_suite(name).synthetic
        assert mini.domain_ids == get_suite(name).domain_ids
        assert set(mini.classes) <= set(get_suite(name).classes)


def test_an_unknown_suite_is_an_error_listing_the_registered_ones() -> None:
    with pytest.raises(SuiteError, match="unknown suite 'pacss'.*pacs, mini-pacs, vlcs"):
        get_suite("pacss")


@pytest.mark.parametrize(
    ("name", "classes", "domains"),
    [("pacs", 7, 4), ("vlcs", 5, 4), ("officehome", 65, 4), ("terraincognita", 10, 4), ("domainnet", 345, 6)],
)
def test_suites_have_their_published_class_and_domain_counts(name: str, classes: int, domains: int) -> None:
    suite = get_suite(name)
    assert len(suite.classes) == len(set(suite.classes)) == classes
    assert len(suite.domains) == domains


def test_pacs_classes_are_the_seven_folder_names_in_sorted_order() -> None:
    assert get_suite("pacs").classes == ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
    assert get_suite("mini-pacs").classes == get_suite("pacs").classes


@pytest.mark.parametrize("name", STANDARD)
def test_domain_order_is_domainbeds_sorted_folder_order(name: str) -> None:
    # DomainBed numbers environments by the sorted names of the folders in the suite folder.
    suite = get_suite(name)
    canonical = [d.folders()[0] for d in suite.domains]
    assert canonical == sorted(canonical)
    assert [suite.env_index(d) for d in suite.domain_ids] == list(range(len(canonical)))


def test_class_index_is_code_point_order_of_folder_names() -> None:
    classes = get_suite("officehome").classes
    assert classes.index("TV") < classes.index("Table") < classes.index("ToothBrush") < classes.index("Toys")
    domainnet = get_suite("domainnet").classes
    assert domainnet[:3] == ("The_Eiffel_Tower", "The_Great_Wall_of_China", "The_Mona_Lisa")


def test_prompt_names_read_underscores_as_spaces() -> None:
    assert prompt_name("Alarm_Clock") == "Alarm Clock"
    assert "The Eiffel Tower" in get_suite("domainnet").prompt_names()
    assert "teddy-bear" in get_suite("domainnet").prompt_names()


def test_tasks_leave_one_domain_out() -> None:
    suite = get_suite("pacs")
    assert [t.target for t in suite.tasks()] == list(suite.domain_ids)
    task = suite.task("sketch")
    assert task.sources == ("art_painting", "cartoon", "photo")
    assert [t.name for t in get_suite("imagenet-dg").tasks()] == ["a", "i", "r"]
    with pytest.raises(SuiteError, match="no task or target 'clipart'"):
        suite.task("clipart")


def test_config_names_of_both_protocols() -> None:
    assert config_name("sketch", "fewshot", shots=16, seed=1) == "sketch-16shot-seed1"
    assert config_name("sketch", "full", seed=0) == "sketch-full-trial0"
    with pytest.raises(ProtocolError, match="unknown protocol"):
        config_name("sketch", "oracle", seed=0)


def test_scoring_reports_domains_classes_and_the_worst_class_in_percent() -> None:
    labels = [0, 0, 0, 1, 1, 2]
    predictions = [0, 0, 1, 1, 0, 2]
    domains = ["a", "a", "a", "b", "b", "b"]
    scores = Scoring().score(labels, predictions, domains, ["x", "y", "z"])
    assert scores.accuracy == pytest.approx(400 / 6)
    assert scores.domain_accuracy == pytest.approx({"a": 200 / 3, "b": 200 / 3})
    assert scores.class_accuracy == pytest.approx({"x": 200 / 3, "y": 50.0, "z": 100.0})
    assert scores.worst_class_accuracy == pytest.approx(50.0)
    by_class = Scoring(average="classes").score(labels, predictions, domains, ["x", "y", "z"])
    assert by_class.accuracy == pytest.approx((200 / 3 + 50 + 100) / 3)


# --- miniature suites ------------------------------------------------------------------------------------


def test_a_miniature_is_identical_when_written_twice(tmp_path: Path) -> None:
    first = make_mini_suite("mini-vlcs", tmp_path / "one", images_per_class=2)
    second = make_mini_suite("mini-vlcs", tmp_path / "two", images_per_class=2)
    files = sorted(p.relative_to(first.root) for p in first.folder.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second.root) for p in second.folder.rglob("*") if p.is_file())
    assert all((first.root / f).read_bytes() == (second.root / f).read_bytes() for f in files)


@pytest.mark.parametrize("name", [f"mini-{s}" for s in STANDARD])
def test_by_default_every_target_of_a_miniature_has_over_a_hundred_test_images(name: str) -> None:
    suite = get_suite(name)
    n = default_images_per_class(suite)
    test_images = len(suite.classes) * fewshot_test_size(n)

    assert test_images >= MIN_TEST_IMAGES > 100  # one image moves a target's accuracy by under a point
    assert len(suite.classes) * fewshot_test_size(n - 1) < MIN_TEST_IMAGES  # and no more are drawn than that


def test_a_miniature_written_with_the_default_count_holds_it_per_class_and_domain(tmp_path: Path,
                                                                                   monkeypatch) -> None:
    monkeypatch.setattr(mini_suites, "default_images_per_class", lambda suite: 2)
    mini = make_mini_suite("mini-vlcs", tmp_path)
    assert all(len(list((mini.folder / d / c).iterdir())) == 2 for d in mini.counts for c in mini.counts[d])
    assert all(n == 2 for per_class in mini.counts.values() for n in per_class.values())


def test_a_miniature_has_varied_image_sizes_and_is_marked(tmp_path: Path) -> None:
    mini = make_mini_suite("mini-pacs", tmp_path, images_per_class=3)
    sizes = {Image.open(p).size for p in mini.folder.rglob("*.jpg")}
    assert len(sizes) > 10
    assert (mini.folder / MARKER).is_file()
    assert sorted(p.name for p in (mini.folder / "photo").iterdir()) == list(get_suite("pacs").classes)


def test_a_miniature_written_before_is_kept_and_other_settings_are_refused(tmp_path: Path) -> None:
    mini = make_mini_suite("mini-pacs", tmp_path, images_per_class=1)
    stamp = (mini.folder / MARKER).stat().st_mtime_ns
    assert make_mini_suite("mini-pacs", tmp_path, images_per_class=1).folder == mini.folder
    assert (mini.folder / MARKER).stat().st_mtime_ns == stamp
    with pytest.raises(OutputExistsError, match="not mini-pacs written with these settings"):
        make_mini_suite("mini-pacs", tmp_path, images_per_class=2)


def test_a_foreign_folder_is_never_written_into(tmp_path: Path) -> None:
    (tmp_path / "PACS").mkdir()
    (tmp_path / "PACS" / "mine.txt").write_text("keep")
    with pytest.raises(OutputExistsError):
        make_mini_suite("mini-pacs", tmp_path, images_per_class=1)
    assert (tmp_path / "PACS" / "mine.txt").read_text() == "keep"


def test_an_unknown_layout_variant_lists_the_variants(tmp_path: Path) -> None:
    with pytest.raises(ImageNetDGError, match="domainbed, kfold"):
        make_mini_suite("mini-pacs", tmp_path, variant="flat")


# --- discovery -------------------------------------------------------------------------------------------

LAYOUTS = [(name, variant) for name in STANDARD for variant in VARIANTS[name]]


@pytest.mark.parametrize(("name", "variant"), LAYOUTS)
def test_every_layout_variant_is_found(tmp_path: Path, name: str, variant: str) -> None:
    mini = make_mini_suite(f"mini-{name}", tmp_path, images_per_class=1, variant=variant)
    folder_name, renamed = VARIANTS[name][variant]
    location = locate_suite(f"mini-{name}", tmp_path)
    assert location.folder == tmp_path / folder_name
    for domain in get_suite(name).domain_ids:
        assert location.domain_folders[domain] == tmp_path / folder_name / renamed.get(domain, domain)
    scan = scan_suite(f"mini-{name}", tmp_path)
    assert {d: len(t) for d, t in scan.tables.items()} == {
        d: sum(counts.values()) for d, counts in mini.counts.items()
    }
    # The suite folder itself may be given as the root.
    assert locate_suite(f"mini-{name}", tmp_path / folder_name).folder == tmp_path / folder_name


def test_officehome_real_world_is_found_with_a_space_or_an_underscore(tmp_path: Path) -> None:
    make_mini_suite("mini-officehome", tmp_path / "space", images_per_class=1, variant="official")
    make_mini_suite("mini-officehome", tmp_path / "underscore", images_per_class=1, variant="underscore")
    space = suite_roots("mini-officehome", tmp_path / "space")["Real_World"]
    assert space.name == "Real World" and space.parent.name == "OfficeHomeDataset_10072016"
    assert suite_roots("mini-officehome", tmp_path / "underscore")["Real_World"].name == "Real_World"


def test_the_miniature_writes_officehome_real_world_under_the_suites_canonical_folder_name() -> None:
    # One spelling: what the miniature writes is what the suite says its canonical folder is.
    canonical = get_suite("officehome").domain("Real_World").folders()[0]
    assert canonical == "Real World"
    assert VARIANTS["officehome"]["domainbed"][1]["Real_World"] == canonical


@pytest.mark.parametrize("name", STANDARD)
def test_every_standard_suite_offers_both_protocols_and_imagenet_dg_only_fewshot(name: str) -> None:
    assert get_suite(name).protocol_names == ("fewshot", "full")
    assert get_suite(f"mini-{name}").protocol_names == ("fewshot", "full")
    assert get_suite("imagenet-dg").protocol_names == ("fewshot",)
    with pytest.raises(SuiteError, match="ImageNet-DG has only the fewshot protocol"):
        get_suite("imagenet-dg").split_protocol("full")


def test_a_missing_suite_names_the_folders_expected_and_where_it_looked(tmp_path: Path) -> None:
    (tmp_path / "something_else").mkdir()
    with pytest.raises(SuiteNotFoundError) as error:
        locate_suite("pacs", tmp_path)
    message = str(error.value)
    assert "'PACS' or 'pacs' or 'kfold'" in message
    assert str(tmp_path) in message and "'something_else'" in message
    assert "art_painting, cartoon, photo, sketch" in message


def test_a_root_that_is_not_a_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(SuiteNotFoundError, match="is not a folder"):
        locate_suite("vlcs", tmp_path / "nowhere")


def test_a_missing_domain_is_named(tmp_path: Path) -> None:
    mini = make_mini_suite("mini-pacs", tmp_path, images_per_class=1)
    shutil.rmtree(mini.folder / "sketch")
    with pytest.raises(SuiteNotFoundError, match=r"incomplete: no folder for the domain\(s\) sketch"):
        locate_suite("pacs", tmp_path)


def test_a_missing_class_is_named_with_its_domain(tmp_path: Path) -> None:
    mini = make_mini_suite("mini-pacs", tmp_path, images_per_class=1)
    shutil.rmtree(mini.folder / "cartoon" / "giraffe")
    with pytest.raises(SuiteNotFoundError, match="domain cartoon .*no class folder 'giraffe'"):
        scan_suite("pacs", tmp_path)


def test_a_class_folder_without_images_is_named(tmp_path: Path) -> None:
    mini = make_mini_suite("mini-pacs", tmp_path, images_per_class=1)
    for file in (mini.folder / "photo" / "horse").iterdir():
        file.unlink()
    (mini.folder / "photo" / "horse" / "notes.txt").write_text("not an image")
    with pytest.raises(SuiteNotFoundError, match="class folder 'horse' holds no image"):
        scan_suite("pacs", tmp_path)


def test_a_stray_class_folder_is_refused_and_a_hidden_one_ignored(tmp_path: Path) -> None:
    mini = make_mini_suite("mini-pacs", tmp_path, images_per_class=1)
    (mini.folder / "photo" / ".ipynb_checkpoints").mkdir()
    assert len(scan_suite("pacs", tmp_path).tables["photo"]) == 7
    (mini.folder / "photo" / "cat").mkdir()
    with pytest.raises(SuiteNotFoundError, match="'cat' that are not PACS classes"):
        scan_suite("pacs", tmp_path)


def test_a_miniature_with_fewer_classes_is_not_the_full_suite(tmp_path: Path) -> None:
    make_mini_suite("mini-officehome", tmp_path, images_per_class=1)
    with pytest.raises(SuiteNotFoundError, match="no class folder 'Backpack'"):
        scan_suite("officehome", tmp_path)


def test_two_copies_under_one_root_are_an_error(tmp_path: Path) -> None:
    make_mini_suite("mini-pacs", tmp_path, images_per_class=1)
    make_mini_suite("mini-pacs", tmp_path, images_per_class=1, variant="kfold")
    with pytest.raises(SuiteNotFoundError, match="holds PACS twice"):
        locate_suite("pacs", tmp_path)


def test_images_are_listed_in_torchvision_imagefolder_order(tmp_path: Path) -> None:
    domain = tmp_path / "domain"
    names = ["b.jpg", "a.JPG", "a b/x.png", "a/b/y.jpeg", "a/z.jpg", "a-b/w.jpg", "._hidden.jpg", "notes.txt", "B.jpg"]
    for cls in ("dog", "Dog"):
        for name in names:
            path = domain / cls / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (4, 4)).save(path, format="PNG")
    reference = torchvision.datasets.ImageFolder(str(domain))
    ours = [f"{cls}/{f}" for cls in sorted(("dog", "Dog")) for f in imagefolder_files(domain / cls)]
    assert ours == [Path(p).relative_to(domain).as_posix() for p, _ in reference.samples]
    # The protocols' pure ordering function gives the same order from the paths alone.
    shuffled = pd.DataFrame({"path": ours[::-1], "class_id": [p.split("/")[0] for p in ours[::-1]]})
    assert imagefolder_order(shuffled)["path"].tolist() == ours


# --- the command line ------------------------------------------------------------------------------------


def test_build_suite_on_the_command_line(tmp_path: Path) -> None:
    make_mini_suite("mini-pacs", tmp_path / "data", images_per_class=5)
    runner = CliRunner()
    result = runner.invoke(main, ["build", "--suite", "mini-pacs", "--root", str(tmp_path / "data"), "--protocol",
                                  "full", "--seeds", "0", "--targets", "photo", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "synthetic" in result.output and "1 configurations" in result.output
    assert (tmp_path / "out" / "data" / "photo-full-trial0" / "validation-00000-of-00001.parquet").is_file()


def test_build_and_evaluate_keep_a_miniature_suite_in_the_same_place_under_the_mini_folder(tmp_path: Path) -> None:
    from guidg import harness

    result = CliRunner().invoke(main, ["build", "--suite", "mini-pacs", "--mini-dir", str(tmp_path / "mini"),
                                       "--protocol", "full", "--seeds", "0", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "mini" / "mini-pacs" / "PACS").is_dir() and not (tmp_path / "mini" / "PACS").exists()
    sweep = harness.Sweep(suite="mini-pacs", protocol="full", methods=("zeroshot",), model="imagenet-dg-tiny",
                          pretrained="none", seeds=(0,), device="cpu", runs=tmp_path / "runs",
                          mini_dir=tmp_path / "mini")
    plan = harness.make_plan(sweep, on_build=lambda text: None)
    assert plan.prepared.roots["photo"].is_relative_to(tmp_path / "mini" / "mini-pacs" / "PACS")


def test_build_of_a_real_suite_without_root_is_one_error_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["build", "--suite", "vlcs", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.output.startswith("error: --suite vlcs needs --root")
    assert "Traceback" not in result.output


def test_registry_is_keyed_by_each_suites_own_name() -> None:
    assert all(s.name == n for n, s in SUITES.items())


@pytest.mark.parametrize(("options", "message"), [
    (["--protocol", "full"], "ImageNet-DG has only the fewshot protocol"),
    (["--targets", "photo"], "no task or target 'photo'; its tasks are a, i, r"),
    (["--hub", "some/repo"], "--suite imagenet-dg is not one"),
])
def test_what_imagenet_dg_does_not_have_is_refused_by_its_description(tmp_path: Path, options: list[str],
                                                                        message: str) -> None:
    result = CliRunner().invoke(main, ["build", *options, "--root", str(tmp_path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and message in result.output
    assert not (tmp_path / "out").exists()


def test_an_interrupted_miniature_leaves_no_suite_folder_and_is_redone(tmp_path: Path, monkeypatch) -> None:
    import imagenet_dg.mini_suites as mini_suites

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mini_suites.os, "replace", fail)
    with pytest.raises(KeyboardInterrupt):
        make_mini_suite("mini-terraincognita", tmp_path, images_per_class=1)
    assert not (tmp_path / "terra_incognita").exists()
    monkeypatch.undo()
    mini = make_mini_suite("mini-terraincognita", tmp_path, images_per_class=1)
    assert len(scan_suite("mini-terraincognita", tmp_path).tables["location_38"]) == 4
    assert not (tmp_path / ".terra_incognita.partial").exists() and mini.folder.is_dir()
