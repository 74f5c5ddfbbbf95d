"""Publishing a built dataset folder to the Hugging Face Hub as a dataset repository."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from huggingface_hub import HfApi

from imagenet_dg.confinement import resolve_path
from imagenet_dg.disk import refused
from imagenet_dg.errors import ImageNetDGError, ManifestError
from imagenet_dg.manifests import CARD_FILE, MANIFEST_FILE, listed_shards, read_manifest, shard_file, verify_files

T = TypeVar("T")

# Modules whose exceptions mean "the Hub could not be reached or refused the request", whatever HTTP client
# the installed huggingface_hub uses.
_CLIENT_MODULES = ("huggingface_hub", "httpx", "httpx2", "requests", "urllib3", "httpcore", "ssl", "socket")


class HubError(ImageNetDGError):
    """The Hub could not be reached, or refused a request (the token, the repository, the revision)."""


@dataclass(frozen=True)
class UploadFile:
    """One file that an upload sends."""

    path: str
    """POSIX path inside the repository."""
    size: int


def upload_plan(folder: str | os.PathLike[str], allow_embedded_images: bool = False) -> list[UploadFile]:
    """The files a push of ``folder`` would send, after checking that the folder is a complete, intact build.

    Raises :class:`ManifestError` when a data file is missing or altered, when a shard path of the manifest
    leads outside the folder (:class:`~imagenet_dg.errors.PathEscapeError`), when the build is of synthetic
    data, and when the build embeds images and ``allow_embedded_images`` is not set (ImageNet's terms forbid
    redistributing its images).
    """
    folder = Path(folder).absolute()  # the checked files come back absolute; their names are relative to this
    manifest = read_manifest(folder)
    problems = verify_files(folder, manifest)
    if not (folder / CARD_FILE).is_file():
        problems.append(f"{folder / CARD_FILE}: missing")
    if problems:
        raise ManifestError(f"{folder} is not intact; rebuild it before publishing:\n" + "\n".join(problems))
    if manifest.get("synthetic"):
        raise ManifestError(
            f"{folder} was built from synthetic miniature data (manifest.json says \"synthetic\": true); it is "
            "for tests and demonstrations and is never published. Build from the real releases to publish"
        )
    if manifest.get("options", {}).get("embed_images") and not allow_embedded_images:
        raise ManifestError(
            f"{folder} embeds the images. ImageNet's terms forbid redistributing them: publish a manifest-only "
            "build, or confirm that you may publish these images (--allow-embedded-images)"
        )
    # Every file checked to lie inside the folder, links followed: a push never sends a file from elsewhere.
    files = [resolve_path(folder, CARD_FILE), resolve_path(folder, MANIFEST_FILE)]
    files += [shard_file(folder, s) for s in listed_shards(manifest)]
    return [UploadFile(f.relative_to(folder).as_posix(), f.stat().st_size) for f in files]


def _is_client_error(error: BaseException) -> bool:
    module = type(error).__module__.split(".")[0]
    return module in _CLIENT_MODULES or isinstance(error, OSError)


def _hub_call(what: str, repo_id: str, call: Callable[[], T]) -> T:
    """``call()``, with the Hub client's failures turned into one-line :class:`HubError` messages.

    The token is never part of a message: only the client's first line, which names the URL and the status.
    """
    try:
        return call()
    except Exception as error:
        if not _is_client_error(error):
            raise
        local = refused(error)  # the client's own files (its cache) on a full or closed disk, not the network
        if local is not None:
            raise local from error
        response = getattr(error, "response", None)
        status = getattr(response, "status_code", None)
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        if status in (401, 403):
            advice = (
                "the Hub refused the token: give a token with write access to this namespace (--token, "
                "HF_TOKEN, or 'hf auth login')"
            )
        elif status is not None:
            advice = f"the Hub answered {status}: check --repo-id and --revision"
        else:
            advice = "the Hub could not be reached: check the network connection (and that HF_HUB_OFFLINE is unset)"
        raise HubError(f"{what} datasets/{repo_id}: {advice} ({type(error).__name__}: {first_line})") from error


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
    client only, never printed or logged. A network failure or a refusal by the Hub raises :class:`HubError`.
    """
    plan = upload_plan(folder, allow_embedded_images)
    manifest = read_manifest(folder)
    api = HfApi(token=token)
    _hub_call("creating", repo_id, lambda: api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True))
    commit = _hub_call(
        "uploading to",
        repo_id,
        lambda: api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=str(folder),
            revision=revision,
            allow_patterns=[f.path for f in plan],
            commit_message=commit_message or f"ImageNet-DG build {manifest['content_hash'][:12]}",
        ),
    )
    return str(commit.commit_url)
