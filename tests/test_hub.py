"""Publishing to the Hub: what is sent, to which repository, and that the token is never shown."""

from __future__ import annotations

import logging

import pytest

import imagenet_dg.hub as hub
from imagenet_dg.build import BuildOptions, build


class RecordingApi:
    """Stands in for huggingface_hub.HfApi and records the calls."""

    calls: list[tuple[str, dict]] = []

    def __init__(self, token=None) -> None:
        self.calls.append(("init", {"token": token}))

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))

        class Commit:
            commit_url = f"https://huggingface.co/datasets/{kwargs['repo_id']}/commit/abc"

        return Commit()


@pytest.fixture
def built(unmarked_scans, tmp_path):
    out = tmp_path / "imagenet-dg"
    build(unmarked_scans, out, BuildOptions(tasks=("a",), shots=(1,), seeds=(1,)))
    return out


def test_push_creates_a_dataset_repository_and_sends_exactly_the_planned_files(built, monkeypatch, caplog) -> None:
    RecordingApi.calls = []
    monkeypatch.setattr(hub, "HfApi", RecordingApi)
    with caplog.at_level(logging.DEBUG):
        url = hub.push(built, "someone/imagenet-dg", token="hf_do_not_show")
    assert url.endswith("/commit/abc")
    kinds = [name for name, _ in RecordingApi.calls]
    assert kinds == ["init", "create_repo", "upload_folder"]
    create = RecordingApi.calls[1][1]
    assert create["repo_type"] == "dataset" and create["private"] is True and create["exist_ok"] is True
    upload = RecordingApi.calls[2][1]
    assert upload["repo_type"] == "dataset" and upload["folder_path"] == str(built)
    assert sorted(upload["allow_patterns"]) == sorted(f.path for f in hub.upload_plan(built))
    assert "hf_do_not_show" not in caplog.text


def test_push_refuses_a_damaged_build_before_contacting_the_hub(built, monkeypatch) -> None:
    RecordingApi.calls = []
    monkeypatch.setattr(hub, "HfApi", RecordingApi)
    next((built / "data").rglob("*.parquet")).unlink()
    with pytest.raises(hub.ManifestError, match="missing"):
        hub.push(built, "someone/imagenet-dg")
    assert RecordingApi.calls == []
