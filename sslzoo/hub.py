"""The one module that talks to the Hugging Face Hub (downloads here; uploads in `sslzoo.export`).

Everything goes through huggingface_hub, so its cache, `HF_HUB_OFFLINE`, `HF_TOKEN` and revisions
behave as users expect from every other Hub library.
"""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from .errors import WeightsNotAvailableError

HUB_PREFIX = "hf-hub:"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def parse_hub_ref(ref: str) -> tuple[str, str | None]:
    """`hf-hub:org/repo[@revision]` -> (repo_id, revision)."""
    body = ref[len(HUB_PREFIX):] if ref.startswith(HUB_PREFIX) else ref
    repo_id, _, revision = body.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise WeightsNotAvailableError(f"{ref!r} is not a Hub reference; write 'hf-hub:org/repo[@revision]'.")
    return repo_id, revision or None


def download_model(repo_id: str, revision: str | None = None) -> Path:
    """Fetch `config.json` and `model.safetensors` of a Hub repo (or find them in the cache).

    Returns the snapshot folder that holds both. Offline and missing repos raise
    `WeightsNotAvailableError` with the reason, never a bare HTTP error.
    """
    try:
        config = hf_hub_download(repo_id, CONFIG_NAME, revision=revision, library_name="sslzoo")
        weights = hf_hub_download(repo_id, WEIGHTS_NAME, revision=revision, library_name="sslzoo")
    except LocalEntryNotFoundError as error:
        raise WeightsNotAvailableError(
            f"hf-hub:{repo_id}{'@' + revision if revision else ''} is not in the local Hugging Face cache "
            f"and the Hub cannot be reached (offline: HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')})."
        ) from error
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as error:
        raise WeightsNotAvailableError(f"hf-hub:{repo_id}: {type(error).__name__}: {error}") from error
    folder = Path(weights).parent
    if Path(config).parent != folder:  # pragma: no cover - huggingface_hub keeps one snapshot per revision
        raise WeightsNotAvailableError(f"hf-hub:{repo_id}: config and weights resolved to different snapshots.")
    return folder


def evict_cached_file(path: Path) -> None:
    """Remove a file (and the blob its snapshot link points to) from the Hugging Face cache."""
    targets = [path]
    if path.is_symlink():
        targets.append(path.resolve())
    for target in targets:
        try:
            target.unlink()
        except FileNotFoundError:
            pass
