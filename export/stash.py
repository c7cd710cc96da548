"""Keeping a zoo entry's weights in the repository's history while the tracked tree stays small.

`stash` takes finished models (a zoo build's RUNS folder, or one model folder), writes each as
fp16 safetensors shards (the bundled default's precision) under `weights/<name>/` at the
repository's root, and makes two commits:

1. the folders (`config.json`, the shard index and the shards), so the history holds them;
2. the registry (`weights="history"`, that commit, the path and every file's sha256), the model
   cards and the zoo tables, with the folders removed from the tree again.

`sslzoo.load(name)` in a clone then restores the files from the first commit (`sslzoo.history`).
Nothing is done half: every check (git present, identity set, no merge under way, the paths it
commits unchanged, no git filter that would store other bytes) runs before anything is written;
a failure before the first commit removes what was written, a failure before the second puts the
registry and cards back, and running the same command again finishes the job from the commit
the weights are already in. Other changes in the work tree and index are left alone: the
commits name their paths.

`git` runs as a subprocess (`sslzoo.history.git`): every developer machine has it, and a git
library would be a new dependency for a handful of porcelain commands.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

import sslzoo
from sslzoo import history, registry, scratch
from sslzoo.encoder import check_config
from sslzoo.errors import ConfigError, CorruptWeightsError, SslzooError
from sslzoo.hub import CONFIG_NAME
from sslzoo.weight_files import weight_paths, weights_sha256

from .cards import write_model_cards
from .results import _check_run_matches, model_name, record_results
from .zoo_table import START_MARKER, write_zoo_tables

DEFAULT_SHARD_SIZE = "15MB"


class StashError(SslzooError):
    """The weights could not be stored; the message says what state the repository is in."""


@dataclass
class StashResult:
    """What `stash` did: the commit(s) holding the weights, the commit that recorded them."""

    stored: list[registry.ModelInfo] = field(default_factory=list)
    weights_commits: dict[str, str] = field(default_factory=dict)  # name -> commit holding its folder
    recorded_in: str | None = None  # the commit with the registry and the folders removed
    unchanged: list[str] = field(default_factory=list)  # already in the history with these weights
    skipped: list[str] = field(default_factory=list)  # stand-ins (fake data) not asked for


def stash(
    source: str | os.PathLike,
    *,
    names: list[str] | None = None,
    max_shard_size: int | str = DEFAULT_SHARD_SIZE,
    allow_stand_ins: bool = False,
) -> StashResult:
    """Store the weights of `source`'s models in the history of the repository that holds the
    registry sslzoo reads (see the module docstring), and return what was committed.

    `source` is a RUNS folder of `sslzoo-train --plan` (every finished entry, or those in `names`)
    or one model folder (`config.json` + weights; `names` holds its registry name if its
    provenance does not). The model cards (`model_cards/`) and the README's zoo table are
    regenerated when the repository has them.
    """
    repo = history.registry_repository()
    if repo is None:
        raise StashError(
            f"{registry.registry_path()} is not in a git checkout: weights are stored in the history of the "
            "repository that holds the registry (run this from a clone of sslzoo, installed with pip install -e)."
        )
    result = StashResult()
    sources = _sources(Path(source), names, allow_stand_ins, result)
    layout = _Layout(repo, list(sources))
    resumed = _preflight(layout)
    fresh = {name: folder for name, folder in sources.items() if name not in resumed}

    written = _write_folders(layout, fresh, max_shard_size, result)
    if written:
        message = (
            f"Weights of {', '.join(written)} (fp16 safetensors) kept in the history under "
            f"{history.WEIGHTS_ROOT}/; the next commit records them and removes them from the tree"
        )
        _commit_or_undo(layout, written, message)
        commit = history.git_output(repo, "rev-parse", "HEAD")
        result.weights_commits.update({name: commit for name in written})
    result.weights_commits.update(resumed)
    if result.weights_commits:
        _record_and_remove(layout, result)
    return result


class _Layout:
    """The paths `stash` writes and commits, relative to the repository's root."""

    def __init__(self, repo: Path, names: list[str]):
        self.repo = repo
        self.registry = registry.registry_path().resolve().relative_to(repo.resolve()).as_posix()
        cards = repo / "model_cards"
        readme = repo / "README.md"
        self.cards_dir = cards if cards.is_dir() else None
        self.readme = readme if readme.is_file() and START_MARKER in readme.read_text() else None
        self.names = names

    def folder(self, name: str) -> str:
        return f"{history.WEIGHTS_ROOT}/{name}"

    def records(self, names: list[str]) -> list[str]:
        """The bookkeeping files the second commit changes (registry, cards, zoo tables)."""
        paths = [self.registry]
        if self.cards_dir is not None:
            paths += [f"model_cards/{name}.md" for name in names] + ["model_cards/README.md"]
        if self.readme is not None:
            paths.append("README.md")
        return paths


def _sources(
    source: Path, names: list[str] | None, allow_stand_ins: bool, result: StashResult
) -> dict[str, Path]:
    """name -> model folder to store."""
    from sslzoo.train.build_folder import BuildFolder

    build = BuildFolder(source)
    if build.is_build():
        records = build.records()
        unknown = sorted(set(names or []) - set(records))
        if unknown:
            raise ConfigError(
                f"{source} has no finished entry {unknown}; finished: {sorted(records) or 'none'}."
            )
        sources = {}
        for name, entry in records.items():
            if names and name not in names:
                continue
            if entry.get("stand_in") and not allow_stand_ins:
                result.skipped.append(name)
                continue
            sources[name] = build.path / entry["hub_dir"]
    elif (source / CONFIG_NAME).is_file():
        if names and len(names) > 1:
            raise ConfigError(f"{source} is one model folder: give it one --name, not {names}.")
        config = json.loads((source / CONFIG_NAME).read_text())
        name = names[0] if names else model_name(config)
        if name is None:
            raise ConfigError(f"{source / CONFIG_NAME}: the provenance names no model; pass --name.")
        sources = {name: source}
    else:
        raise ConfigError(
            f"{source}: neither a RUNS folder of sslzoo-train --plan nor a model folder (config.json)."
        )
    for name, folder in sources.items():  # before anything is written (the weights: while writing)
        registry.model_info(name)  # an unknown name fails here, with the closest ones
        config_path = folder / CONFIG_NAME
        try:
            config = json.loads(config_path.read_text())
            check_config(config)
        except (OSError, ValueError) as error:
            raise ConfigError(f"{config_path}: not a readable sslzoo config ({error}).") from error
        _check_run_matches(name, config, None, allow_stand_ins)
    if not sources and not result.skipped:
        raise ConfigError(f"{source}: no finished entry to store.")
    return sources


def _preflight(layout: _Layout) -> dict[str, str]:
    """Refuse before any change; returns the names whose folder a stash stopped short of recording
    (committed, still in the tree), with their commit, to finish now."""
    repo, git = layout.repo, history.git_output
    try:
        git(repo, "ls-files", "--error-unmatch", "--", layout.registry)
    except history.GitError:
        raise StashError(f"{layout.registry} is not tracked in {repo}; commit the registry first.") from None
    try:
        git(repo, "var", "GIT_COMMITTER_IDENT")
        git(repo, "var", "GIT_AUTHOR_IDENT")
    except history.GitError as error:
        raise StashError(f"git cannot commit here: {error} Set user.name and user.email.") from None
    for marker in ("MERGE_HEAD", "CHERRY_PICK_HEAD", "REVERT_HEAD"):
        if (repo / git(repo, "rev-parse", "--git-path", marker)).exists():
            raise StashError(
                f"A {marker.split('_')[0].lower()} is under way in {repo}; finish or abort it first."
            )
    resumed = {}
    for name in layout.names:
        folder = layout.folder(name)
        tracked = git(repo, "ls-tree", "-r", "--name-only", "HEAD", "--", folder)
        if tracked:
            dirty = _changed(repo, [folder])
            if dirty:
                raise StashError(
                    f"{folder}/ is committed but changed in the work tree ({', '.join(dirty[:3])}). "
                    f"`git checkout HEAD -- {folder}` and run this again to finish storing it."
                )
            resumed[name] = git(repo, "log", "-1", "--format=%H", "--", folder)
        elif (repo / folder).exists():
            raise StashError(
                f"{folder}/ exists but is not committed; move it away (it is where {name}'s weights are written)."
            )
    dirty = _changed(repo, layout.records(layout.names))
    if dirty:
        unfinished = f" A stash of {sorted(resumed)} stopped before recording them:" if resumed else ""
        raise StashError(
            f"Uncommitted changes in the files this records ({', '.join(dirty)})."
            f"{unfinished} commit or discard them (`git checkout HEAD -- PATH`) and run this again."
        )
    return resumed


def _changed(repo: Path, paths: list[str]) -> list[str]:
    """The files under `paths` that differ from HEAD, staged or not, untracked ones included."""
    status = history.git(repo, "status", "--porcelain", "--untracked-files=all", "--", *paths).stdout.decode()
    return [line[3:] for line in status.splitlines() if line.strip()]


def _write_folders(
    layout: _Layout, sources: dict[str, Path], max_shard_size: int | str, result: StashResult
) -> list[str]:
    """Write each model's fp16 folder under weights/; returns the names written (not those unchanged)."""
    root = layout.repo / history.WEIGHTS_ROOT
    written: list[str] = []
    try:
        for name, source in sources.items():
            root.mkdir(exist_ok=True)
            staging = root / scratch.owned_name(f".{name}.partial-")
            try:
                _write_fp16(source, staging, max_shard_size)
                info = registry.model_info(name)
                if info.weights == "history" and info.sha256 == weights_sha256(staging):
                    result.unchanged.append(name)
                    continue
                _check_no_filters(layout.repo, staging, layout.folder(name))
                os.replace(staging, layout.repo / layout.folder(name))
                written.append(name)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        for name in written:
            shutil.rmtree(layout.repo / layout.folder(name), ignore_errors=True)
        raise
    finally:
        if root.is_dir() and not any(root.iterdir()):
            root.rmdir()
    return written


def _write_fp16(source: Path, folder: Path, max_shard_size: int | str) -> None:
    """`config.json` and fp16 shards of `source`'s weights, checked to load back bit-exactly."""
    stored = sslzoo.load(source).half()
    stored.save_pretrained(folder, max_shard_size=max_shard_size)
    keep = {CONFIG_NAME, *(path.name for path in weight_paths(folder))}
    for path in folder.iterdir():
        if path.name not in keep:  # the mixin's README: the card lives in model_cards/
            path.unlink()
    loaded = sslzoo.load(folder).state_dict()
    for key, tensor in stored.state_dict().items():
        if not torch.equal(loaded[key], tensor.to(loaded[key].dtype)):
            raise CorruptWeightsError(folder, f"{key} does not load back bit-exactly.")


def _check_no_filters(repo: Path, folder: Path, path_in_repo: str) -> None:
    """Refuse a repository whose attributes (git-lfs, eol conversion) would store other bytes than
    the files: restoring them must give back exactly what the registry's sha256 describes."""
    for file in sorted(folder.iterdir()):
        as_stored = history.git_output(
            repo, "hash-object", f"--path={path_in_repo}/{file.name}", "--", str(file)
        )
        as_is = history.git_output(repo, "hash-object", "--no-filters", "--", str(file))
        if as_stored != as_is:
            raise StashError(
                f"git would not store {path_in_repo}/{file.name} as it is (a filter such as git-lfs or an eol "
                f"setting in .gitattributes applies to it); exclude {history.WEIGHTS_ROOT}/ from it and run again."
            )


def _commit_or_undo(layout: _Layout, names: list[str], message: str) -> None:
    """Commit the weights folders of `names`; on failure remove them again, as if nothing happened."""
    folders = [layout.folder(name) for name in names]
    try:
        history.git(layout.repo, "add", "--force", "--", *folders)  # even where weights/ is ignored
        history.git(layout.repo, "commit", "--quiet", "-m", message, "--", *folders)
    except BaseException as error:
        history.git(
            layout.repo, "rm", "-r", "--cached", "--quiet", "--ignore-unmatch", "--", *folders, check=False
        )
        for folder in folders:
            shutil.rmtree(layout.repo / folder, ignore_errors=True)
        if isinstance(error, history.GitError):
            raise StashError(f"Nothing was stored: {error}") from error
        raise


def _record_and_remove(layout: _Layout, result: StashResult) -> None:
    """Second commit: the registry (and cards) name each folder's commit; the folders leave the tree."""
    repo, names = layout.repo, list(result.weights_commits)
    folders = [layout.folder(name) for name in names]
    paths = [*layout.records(names), *folders]
    try:
        for name in names:
            commit = result.weights_commits[name]
            result.stored.append(
                record_results(
                    name,
                    weights="history",
                    weights_file=repo / layout.folder(name),
                    history={"commit": commit, "path": layout.folder(name)},
                )
            )
        if layout.cards_dir is not None:
            write_model_cards(layout.cards_dir, names=names)
            write_zoo_tables(layout.cards_dir, readme=layout.readme)
        history.git(repo, "rm", "-r", "--quiet", "--", *folders)
        history.git(repo, "add", "--", *layout.records(names))
        commits = sorted({result.weights_commits[name][:12] for name in names})
        message = (
            f"Registry: {', '.join(names)} weights in the history at {', '.join(commits)}; "
            f"{history.WEIGHTS_ROOT}/ out of the tree again"
        )
        history.git(repo, "commit", "--quiet", "-m", message, "--", *paths)
    except BaseException as error:
        _restore_to_head(repo, paths)  # folders committed, not yet recorded: the same command finishes
        registry.clear_cache()
        result.stored.clear()
        if isinstance(error, (history.GitError, SslzooError)):
            at = ", ".join(sorted(set(result.weights_commits.values())))
            raise StashError(
                f"The weights of {', '.join(names)} are committed ({at}) but not yet recorded: {error} "
                "Run the same command again to finish."
            ) from error
        raise
    result.recorded_in = history.git_output(repo, "rev-parse", "HEAD")
    registry.clear_cache()


def _restore_to_head(repo: Path, paths: list[str]) -> None:
    """Index and work tree of `paths` as in HEAD; one that HEAD lacks is removed (the preflight saw
    each of them unchanged, so what is there now was written by this stash)."""
    for path in paths:
        if history.git_output(repo, "ls-tree", "--name-only", "HEAD", "--", path):
            history.git(repo, "reset", "--quiet", "HEAD", "--", path, check=False)
            history.git(repo, "checkout", "HEAD", "--", path, check=False)
        else:
            history.git(repo, "rm", "-r", "--cached", "--quiet", "--ignore-unmatch", "--", path, check=False)
            target = repo / path
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
