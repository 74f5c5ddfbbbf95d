"""Nothing silent: one clear error whatever runs the code (loader workers, the Hub client, the command line),
non-finite outputs stop a run, wrong release folders are named, and README's snippet runs as written."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub.errors
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch.utils.data import DataLoader

import imagenet_dg.hub as hub
import imagenet_dg.loading as loading
from guidg.divergence import NonFiniteOutputError, check_finite_outputs
from guidg.evaluation import image_features
from guidg.methods.text_heads import head_logits
from imagenet_dg.build import BuildOptions, build
from imagenet_dg.cli import main
from imagenet_dg.errors import BadImageError, ReleaseNotFoundError
from imagenet_dg.images import UnreadableImageError
from imagenet_dg.loading import LabeledImages, check_roots, load_task
from imagenet_dg.mini import MiniReleases

README = Path(__file__).parents[1] / "README.md"


@pytest.fixture(scope="module")
def images_with_a_bad_one(tmp_path_factory) -> LabeledImages:
    folder = tmp_path_factory.mktemp("images")
    for i in range(5):
        Image.new("RGB", (40, 30), (40 * i, 0, 0)).save(folder / f"ok{i}.png")
    (folder / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not the rest of a JPEG")
    paths = tuple(sorted(folder.iterdir()))
    return LabeledImages(paths, tuple(range(len(paths))), ("imagenet",) * len(paths))


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(__import__("numpy").asarray(image.resize((8, 8)))).permute(2, 0, 1)


# --- an unreadable image: the same error whatever the number of loader workers ---------------------------


def loader_error(images: LabeledImages, workers: int) -> UnreadableImageError:
    with pytest.raises(UnreadableImageError) as caught:
        for _ in DataLoader(images.dataset(to_tensor), batch_size=2, num_workers=workers):
            pass
    return caught.value


def test_a_loader_worker_gives_the_same_error_as_the_main_process(images_with_a_bad_one: LabeledImages) -> None:
    here, there = loader_error(images_with_a_bad_one, 0), loader_error(images_with_a_bad_one, 2)
    assert str(there) == str(here) and "\n" not in str(there) and "Traceback" not in str(there)
    assert (there.path, there.kind, there.reason) == (here.path, here.kind, here.reason)
    assert there.path.endswith("bad.jpg")


def test_evaluation_features_name_the_unreadable_image_under_workers(images_with_a_bad_one, tiny_backbone) -> None:
    with pytest.raises(UnreadableImageError, match=r"cannot use image \S+bad\.jpg: ") as caught:
        image_features(tiny_backbone, images_with_a_bad_one, num_workers=2)
    assert "Traceback" not in str(caught.value) and "worker" not in str(caught.value)


# --- release roots that do not hold the benchmark's images -----------------------------------------------


def test_a_wrong_release_root_is_named_before_anything_runs(mini_benchmark: Path, mini_releases: MiniReleases) -> None:
    roots = dict(mini_releases.paths)
    roots["imagenet-a"] = mini_releases.paths["imagenet-r"]  # another release, with folders of the same names
    with pytest.raises(ReleaseNotFoundError) as caught:
        load_task(mini_benchmark, "a-16shot-seed1", roots)
    message = str(caught.value)
    assert f"imagenet-a (root {mini_releases.paths['imagenet-r']})" in message and "missing" in message
    assert f"imagenet: {mini_releases.paths['imagenet']}" in message  # every domain's root is said


def test_the_roots_used_are_returned_when_they_hold_the_images(mini_task, mini_releases: MiniReleases) -> None:
    used = check_roots(mini_task, dict(mini_releases.paths))
    assert used == {d: mini_releases.paths[d].absolute() for d in ("imagenet", "imagenet-a", "imagenet-sketch", "imagenetv2")}


def test_a_partial_copy_of_a_release_is_found(mini_benchmark: Path, mini_releases: MiniReleases, tmp_path: Path) -> None:
    partial = tmp_path / "sketch"
    shutil.copytree(mini_releases.paths["imagenet-sketch"], partial)
    for victim in sorted(p for p in partial.rglob("*") if p.is_file())[::2]:
        victim.unlink()
    with pytest.raises(ReleaseNotFoundError, match=f"imagenet-sketch \\(root {partial}\\)"):
        load_task(mini_benchmark, "a-16shot-seed1", {**mini_releases.paths, "imagenet-sketch": partial})


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_release_copy_with_a_damaged_sampled_image_is_refused_naming_the_root_and_the_file(
    mini_benchmark: Path, mini_releases: MiniReleases, mini_task, tmp_path: Path, damage: str
) -> None:
    release = mini_releases.paths["imagenet-sketch"]
    damaged_copy = tmp_path / "sketch"
    shutil.copytree(release, damaged_copy)
    # The first of the domain's sorted paths is always in the sample.
    pools = [*mini_task.expert.values(), *mini_task.guide.values()]
    first = sorted(p for part in pools for p in part.paths if p.is_relative_to(release))[0]
    victim = damaged_copy / first.relative_to(release)
    if damage == "garbage":
        victim.write_bytes(b"these bytes are not a picture" * 10)
    else:
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(BadImageError) as caught:
        load_task(mini_benchmark, "a-16shot-seed1", {**mini_releases.paths, "imagenet-sketch": damaged_copy})
    message = str(caught.value)
    assert f"imagenet-sketch (root {damaged_copy}): 1 of " in message and f"{victim} (" in message
    assert "\n" not in message and message.count("cannot be used") == 1


def test_only_the_sample_is_decoded_each_image_once(mini_task, mini_releases: MiniReleases, monkeypatch) -> None:
    opened: list[Path] = []
    real_open_image = loading.open_image

    def counted(path):
        opened.append(Path(path))
        return real_open_image(path)

    monkeypatch.setattr(loading, "open_image", counted)
    check_roots(mini_task, dict(mini_releases.paths))
    domains = {mini_task.target, *mini_task.sources}
    every = {p for part in [*mini_task.expert.values(), *mini_task.guide.values(), mini_task.test] for p in part.paths}
    assert opened and len(opened) == len(set(opened))
    assert len(opened) <= loading.ROOT_SAMPLE * len(domains) < len(every)


# --- non-finite outputs ------------------------------------------------------------------------------------


def test_nan_weights_stop_feature_extraction(tiny_backbone, mini_task) -> None:
    with torch.no_grad():
        tiny_backbone.model.visual.proj.fill_(float("nan"))
    with pytest.raises(NonFiniteOutputError, match="image features"):
        image_features(tiny_backbone, mini_task.test)


def test_non_finite_logits_are_refused() -> None:
    features = torch.nn.functional.normalize(torch.ones(3, 4), dim=-1)
    heads = torch.ones(1, 2, 4)
    heads[0, 1, 2] = float("inf")
    with pytest.raises(NonFiniteOutputError, match="logits"):
        head_logits(features, heads, None, batch_size=2)
    finite = torch.zeros(2, 2)
    assert check_finite_outputs(finite, "logits") is finite


# --- the command line: one error line, tracebacks only with -v --------------------------------------------


def test_an_error_is_one_line_and_its_traceback_needs_verbose(tmp_path: Path) -> None:
    args = ["build", "--shots", "3", "--out", str(tmp_path / "o"), "--mini-dir", str(tmp_path / "m")]
    quiet = CliRunner().invoke(main, args)
    assert quiet.exit_code == 2 and quiet.output.strip().count("\n") == 0 and quiet.output.startswith("error: ")
    verbose = CliRunner().invoke(main, ["-v", *args])
    assert verbose.exit_code == 2 and "Traceback (most recent call last)" in verbose.output
    assert verbose.output.strip().splitlines()[-1] == quiet.output.strip()


@pytest.fixture(scope="module")
def small_build(unmarked_scans, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("push") / "imagenet-dg"
    build(unmarked_scans, out, BuildOptions(tasks=("a",), shots=(1,), seeds=(1,)))
    return out


def test_push_without_network_is_one_line(small_build: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(main, ["push", str(small_build), "--repo-id", "someone/x", "--token", "hf_secret"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    assert "could not be reached" in result.output and "hf_secret" not in result.output


class RefusedToken(huggingface_hub.errors.HfHubHTTPError):
    def __init__(self) -> None:
        Exception.__init__(self, "401 Client Error: Unauthorized for url: https://huggingface.co/api/repos/create")
        self.response = SimpleNamespace(status_code=401)


class RefusingApi:
    def __init__(self, token=None) -> None:
        pass

    def create_repo(self, repo_id, **kwargs):
        raise RefusedToken()


def test_a_refused_token_is_one_line_naming_the_token_option(small_build: Path, monkeypatch) -> None:
    monkeypatch.setattr(hub, "HfApi", RefusingApi)
    result = CliRunner().invoke(main, ["push", str(small_build), "--repo-id", "someone/x", "--token", "hf_secret"])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "refused the token" in result.output and "--token" in result.output and "hf_secret" not in result.output


def test_a_bug_in_the_client_code_is_not_disguised_as_a_hub_error(small_build: Path, monkeypatch) -> None:
    class BrokenApi(RefusingApi):
        def create_repo(self, repo_id, **kwargs):
            raise KeyError("not a network problem")

    monkeypatch.setattr(hub, "HfApi", BrokenApi)
    with pytest.raises(KeyError):
        hub.push(small_build, "someone/x")


def test_backbone_messages_name_options_not_internal_fields() -> None:
    from guidg.backbone import BackboneError, BackboneSpec, load_backbone

    with pytest.raises(BackboneError) as caught:
        load_backbone(BackboneSpec("no-such-architecture", None))
    assert "BackboneSpec" not in str(caught.value) and "--pretrained" in str(caught.value)
    help_text = CliRunner().invoke(main, ["stats", "--help"]).output
    assert "SPEC" not in help_text


# --- README's Python snippet runs as written -------------------------------------------------------------


def readme_snippet() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    return next(b for b in blocks if "load_task" in b)


def test_the_readme_snippet_runs_against_a_miniature_build(mini_benchmark: Path, mini_releases: MiniReleases) -> None:
    code = readme_snippet()
    assert '"imagenet-dg"' in code and 'root="/data"' in code
    code = code.replace('"imagenet-dg"', repr(str(mini_benchmark))).replace('root="/data"', f"root={str(mini_releases.root)!r}")
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert set(namespace["splits"]) == {"expert", "guide", "test"}
    image, label = namespace["image"], namespace["label"]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and isinstance(label, int)
    images, labels = next(iter(namespace["loader"]))
    assert images.shape[1:] == (3, 224, 224) and labels.dtype == torch.int64
    assert len(namespace["task"].guide["imagenet"]) == len(namespace["loader"].dataset)


# --- whole runs: damaged weights or data end the run unrecorded -------------------------------------------


def run_spec(benchmark: Path, backbone):
    from guidg.presets import get_preset
    from guidg.run import RunSpec

    return RunSpec(benchmark, "a-16shot-seed1", "zeroshot", backbone, "smoke", get_preset("smoke"), 1)


def no_run_left(runs: Path) -> bool:
    return not runs.exists() or all(p.name == "experts" for p in runs.iterdir())


def test_a_zero_shot_run_with_nan_weights_stops_unrecorded(mini_benchmark, mini_releases, tmp_path, tiny_backbone) -> None:
    from dataclasses import replace

    from safetensors.torch import save_file

    from guidg.backbone import TINY_SPEC
    from guidg.divergence import TrainingDivergedError
    from guidg.run import attempt

    weights = {k: v.detach().clone().contiguous() for k, v in tiny_backbone.model.state_dict().items()}
    weights["visual.proj"].fill_(float("nan"))
    checkpoint = tmp_path / "nan.safetensors"
    save_file(weights, str(checkpoint))
    runs = tmp_path / "runs"
    with pytest.raises(TrainingDivergedError, match="NaN"):
        attempt(run_spec(mini_benchmark, replace(TINY_SPEC, pretrained=str(checkpoint))), dict(mini_releases.paths),
                runs, device="cpu")
    assert no_run_left(runs)


def test_a_run_on_a_rewritten_shard_is_refused_before_anything_is_recorded(
    mini_benchmark, mini_releases, tmp_path
) -> None:
    import pandas as pd

    from guidg.backbone import TINY_SPEC
    from guidg.run import attempt
    from imagenet_dg.errors import ManifestError

    copy = tmp_path / "benchmark"
    shutil.copytree(mini_benchmark, copy)
    victim = copy / "data" / "a-16shot-seed1" / "test-00000-of-00001.parquet"
    frame = pd.read_parquet(victim)
    frame["label"] = 0
    frame.to_parquet(victim, index=False)
    runs = tmp_path / "runs"
    with pytest.raises(ManifestError, match="content differs"):
        attempt(run_spec(copy, TINY_SPEC), dict(mini_releases.paths), runs, device="cpu")
    assert no_run_left(runs)


@pytest.mark.parametrize(
    ("args", "named"),
    [(["build", "--on-bad-image", "sometimes"], "--on-bad-image"), (["verify", "/no/such/folder"], "FOLDER"),
     (["build", "--no-such-option"], "--no-such-option")],
)
def test_a_usage_error_is_one_error_line_with_exit_code_2(args: list[str], named: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and result.output.startswith("error: ") and result.output.count("\n") == 1
    assert named in result.output and "Usage:" not in result.output
