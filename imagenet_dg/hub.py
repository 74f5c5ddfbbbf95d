"""Publishing a built dataset folder to the Hugging Face Hub as a dataset repository."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi

from imagenet_dg.errors import ManifestError
from imagenet_dg.manifests import MANIFEST_FILE, read_manifest, verify_files

@dataclass(frozen=True)
class UploadFile:
    """One file that an upload sends."""

    path: str
    """POSIX path inside the repository."""
    size: int


def upload_plan(folder: str | os.PathLike[str], allow_embedded_images: bool = False) -> list[UploadFile]:
    """The files a push of ``folder`` would send, after checking that the folder is a complete, intact build.

    Raises :class:`ManifestError` when a data file is missing or altered, and when the build embeds images
    and ``allow_embedded_images`` is not set (ImageNet's terms forbid redistributing its images).
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    problems = verify_files(folder, manifest)
    if problems:
        raise ManifestError(f"{folder} is not intact; rebuild it before publishing:\n" + "\n".join(problems))
    if manifest["options"].get("embed_images") and not allow_embedded_images:
        raise ManifestError(
            f"{folder} embeds the images. ImageNet's terms forbid redistributing them: publish a manifest-only "
            "build, or confirm that you may publish these images (--allow-embedded-images)"
        )
    files = [folder / "README.md", folder / MANIFEST_FILE]
    files += [
        folder / shard["path"]
        for config in manifest["configs"].values()
        for split in config["splits"].values()
        for shard in split["files"]
    ]
    return [UploadFile(f.relative_to(folder).as_posix(), f.stat().st_size) for f in files]


def push(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    private: bool = True,
    revision: str | None = None,
    token: str | None = None,
    allow_embedded_images: bool = False,
    commit_message: str | None = None,
) -> str:
    """Upload ``folder`` to the dataset repository ``repo_id`` (created if needed); returns the commit URL.

    ``token`` defaults to the one huggingface_hub finds (``HF_TOKEN`` or a saved login). It is passed to the
    client only, never printed or logged.
    """
    plan = upload_plan(folder, allow_embedded_images)
    manifest = read_manifest(folder)
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=str(folder),
        revision=revision,
        allow_patterns=[f.path for f in plan],
        commit_message=commit_message or f"ImageNet-DG build {manifest['content_hash'][:12]}",
    )
    return str(commit.commit_url)
