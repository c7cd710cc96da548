"""The one module that talks to the Hugging Face Hub (downloads for `sslzoo.load`, uploads for `--push`).

Everything goes through huggingface_hub, so its cache, `HF_HUB_OFFLINE`, `HF_TOKEN` and revisions
behave as users expect from every other Hub library.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, get_token, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from .errors import ConfigError, SslzooError, WeightsNotAvailableError

HUB_PREFIX = "hf-hub:"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def _http_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's own errors (refused connections, timeouts, DNS): they are not `OSError`s.

    huggingface_hub 2 talks through httpx2, 1.x through httpx; whichever is installed counts.
    """
    errors: list[type[BaseException]] = []
    for module in ("httpx2", "httpx"):
        try:
            errors.append(__import__(module).HTTPError)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


#: Everything a Hub request raises when the network or the Hub fails.
NETWORK_ERRORS = (HfHubHTTPError, OfflineModeIsEnabled, OSError, *_http_errors())


def describe_network_error(error: BaseException) -> str:
    """One line for a failed Hub request: the Hub's own message, or what the connection did."""
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(error, (HfHubHTTPError, OfflineModeIsEnabled)):
        return first or type(error).__name__
    if isinstance(error, _http_errors()) or isinstance(error, (ConnectionError, TimeoutError)):
        return f"cannot reach the Hub ({type(error).__name__}{': ' + first if first else ''})"
    return f"{type(error).__name__}{': ' + first if first else ''}"


def check_repo_id(repo_id: str) -> str:
    """`repo_id` if it is a valid `ORG/NAME` Hub model id; `ConfigError` (naming the rule broken) if not."""
    reason = None
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        reason = "it needs exactly one '/' between the owner and the name"
    else:
        try:
            validate_repo_id(repo_id)
        except HFValidationError as error:  # huggingface_hub's own rules, its wording without the echo
            reason = str(error).rsplit(": '", 1)[0].rstrip(".")
    if reason:
        raise ConfigError(
            f"{repo_id!r} is not a Hub repository id ({reason}). Write ORG/NAME; give a branch with --revision."
        )
    return repo_id


def parse_hub_ref(ref: str) -> tuple[str, str | None]:
    """`hf-hub:org/repo[@revision]` -> (repo_id, revision)."""
    body = ref[len(HUB_PREFIX):] if ref.startswith(HUB_PREFIX) else ref
    repo_id, _, revision = body.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise WeightsNotAvailableError(f"{ref!r} is not a Hub reference; write 'hf-hub:org/repo[@revision]'.")
    return repo_id, revision or None


def download_model(repo_id: str, revision: str | None = None) -> Path:
    """Fetch `config.json` and `model.safetensors` of a Hub repo (or find them in the cache).

    A repo without `model.safetensors` is read as shards: its `model.safetensors.index.json`,
    then every shard the index names. Returns the snapshot folder that holds them. Offline and
    missing repos raise `WeightsNotAvailableError` with the reason, never a bare HTTP error.
    """
    try:
        config = hf_hub_download(repo_id, CONFIG_NAME, revision=revision, library_name="sslzoo")
        try:
            weights = hf_hub_download(repo_id, WEIGHTS_NAME, revision=revision, library_name="sslzoo")
        except EntryNotFoundError as single_missing:
            weights = _download_shards(repo_id, revision, single_missing)
    except LocalEntryNotFoundError as error:
        raise WeightsNotAvailableError(
            f"hf-hub:{repo_id}{'@' + revision if revision else ''} is not in the local Hugging Face cache "
            f"and the Hub cannot be reached (offline: HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')})."
        ) from error
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as error:
        raise WeightsNotAvailableError(f"hf-hub:{repo_id}: {type(error).__name__}: {error}") from error
    except NETWORK_ERRORS as error:
        raise WeightsNotAvailableError(
            f"hf-hub:{repo_id}: download failed: {describe_network_error(error)}. Check the connection "
            "and try again; files already downloaded stay in the Hugging Face cache."
        ) from error
    folder = Path(weights).parent
    if Path(config).parent != folder:  # pragma: no cover - huggingface_hub keeps one snapshot per revision
        raise WeightsNotAvailableError(f"hf-hub:{repo_id}: config and weights resolved to different snapshots.")
    return folder


def _download_shards(repo_id: str, revision: str | None, single_missing: EntryNotFoundError) -> str:
    """The index and shards of a sharded repo; `single_missing` is raised when there is no index either."""
    from .weight_files import INDEX_NAME, shard_names

    try:
        index = hf_hub_download(repo_id, INDEX_NAME, revision=revision, library_name="sslzoo")
    except EntryNotFoundError:
        raise single_missing from None
    for name in shard_names(index):
        hf_hub_download(repo_id, name, revision=revision, library_name="sslzoo")
    return index


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


# --- Uploads: `sslzoo-export --push` -------------------------------------------------------------


class HubTokenMissingError(SslzooError):
    """A push was asked for but no Hugging Face token can be found."""


class HubPushError(SslzooError):
    """A push that failed on the way (network, permissions, Hub errors); `reason` is one line."""

    def __init__(self, repo_id: str, reason: str):
        self.repo_id, self.reason = repo_id, reason
        super().__init__(f"Push to {repo_id} failed: {reason}")


def resolve_token(token: str | None = None) -> str:
    """`token`, else huggingface_hub's usual sources (`HF_TOKEN`, the token saved by `hf auth login`)."""
    token = token or get_token()
    if not token:
        raise HubTokenMissingError(
            "No Hugging Face token found: run `hf auth login` or set HF_TOKEN to a token with write access, "
            "then push again (or add --dry-run to list the files without uploading)."
        )
    return token


def upload_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Create `repo_id` if needed and upload every file of `folder` to it in one commit.

    `revision` names a branch (created from main when missing). `private` applies when the repo
    is created; an existing repo keeps its visibility. `dry_run=True` lists the files and their
    sizes and touches no network, and needs no token. Returns what was (or would be) uploaded:
    `repo_id`, `revision`, `files` [(path, bytes)], `total_bytes`, and `commit_url` after a push.
    """
    folder = Path(folder)
    check_repo_id(repo_id)
    paths = sorted(path for path in folder.rglob("*") if path.is_file())
    files = [(path.relative_to(folder).as_posix(), path.stat().st_size) for path in paths]
    report: dict[str, Any] = {
        "repo_id": repo_id,
        "revision": revision or "main",
        "private": private,
        "files": files,
        "total_bytes": sum(size for _, size in files),
        "dry_run": dry_run,
    }
    if dry_run:
        return report
    token = resolve_token(token)
    api = HfApi(token=token, library_name="sslzoo")
    try:
        repo_url = api.create_repo(repo_id, private=private, repo_type="model", exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type="model",
            revision=revision,
            commit_message=f"Upload {folder.name} with sslzoo",
        )
    except NETWORK_ERRORS as error:
        raise HubPushError(repo_id, describe_network_error(error)) from error
    report["repo_url"] = str(repo_url)
    report["commit_url"] = getattr(commit, "commit_url", None)
    return report
