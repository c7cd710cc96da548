"""Weights kept in the project's git history: a model folder committed once, removed from the tree
in the next commit, and restored from that commit into `$SSLZOO_HOME/<name>/` on first load.

A registry entry in the `history` weights state names the commit, the folder's path in it and the
sha256 of every file it held (`config.json`, the index and each shard). `restore` writes each file
with `git cat-file blob COMMIT:PATH/FILE` into a scratch folder beside its destination, checks every
sha256 and only then moves the folder into place, so a restore stopped at any moment leaves nothing
that a later load would take for the model. The repository is the git checkout that holds the
registry sslzoo reads (a source checkout: `sslzoo/zoo.json`); a pip install has none, and the
error says how to restore the weights from a clone.

`git` runs as a subprocess: every developer machine has it, it reads any repository layout
(worktrees, shallow and partial clones, alternates) and a git library would be a new dependency
for two plumbing commands.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from . import registry, scratch
from .errors import CorruptWeightsError, WeightsNotAvailableError
from .weight_files import sha256_of

#: Where `python -m sslzoo.export stash` commits weights: a folder at the repository's root.
WEIGHTS_ROOT = "weights"
PARTIAL_PREFIX = ".{name}.restoring-"
REPLACED_PREFIX = ".{name}.replaced-"


class GitError(RuntimeError):
    """A git command that failed; the message holds the command and git's own words."""


def git(repo: str | os.PathLike, *args: str, stdout=None, check: bool = True) -> subprocess.CompletedProcess:
    """Run `git -C repo ARGS` without a terminal prompt; `stdout` may be an open file to stream into."""
    command = ["git", "-C", str(repo), *args]
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    try:
        result = subprocess.run(
            command, stdout=stdout if stdout is not None else subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
    except FileNotFoundError as error:
        raise GitError("git is not installed (or not on PATH).") from error
    if check and result.returncode != 0:
        words = result.stderr.decode(errors="replace").strip() or f"exit status {result.returncode}"
        raise GitError(f"`{shlex.join(command[3:])}` failed: {words}")
    return result


def git_output(repo: str | os.PathLike, *args: str) -> str:
    return git(repo, *args).stdout.decode().strip()


def repository_of(path: str | os.PathLike) -> Path | None:
    """The root of the git work tree that holds `path`, or None (no git, or not in a repository)."""
    folder = Path(path)
    folder = folder if folder.is_dir() else folder.parent
    try:
        return Path(git_output(folder, "rev-parse", "--show-toplevel"))
    except GitError:
        return None


def registry_repository() -> Path | None:
    """The git checkout that holds the registry sslzoo reads: there the weights' commits are."""
    return repository_of(registry.registry_path())


def has_commit(repo: str | os.PathLike, commit: str) -> bool:
    try:
        return git(repo, "cat-file", "-e", f"{commit}^{{commit}}", check=False).returncode == 0
    except GitError:
        return False


def can_restore(info: registry.ModelInfo) -> bool:
    """Whether the registry's repository holds the commit that `info`'s weights were stored in."""
    repo = registry_repository()
    return repo is not None and bool(info.history) and has_commit(repo, info.history["commit"])


def restore(info: registry.ModelInfo, target: str | os.PathLike) -> Path:
    """Write `info`'s model folder from the history into `target`, every file's sha256 checked.

    The files are staged beside `target` and swapped in whole; an earlier `target` (a corrupt
    copy) is replaced. `WeightsNotAvailableError` (with the command that fetches the commit)
    when the repository lacks it; `CorruptWeightsError` when the commit holds other bytes.
    """
    repo = registry_repository()
    commit, path, files = info.history["commit"], info.history["path"], info.history["files"]
    if repo is None or not has_commit(repo, commit):
        raise WeightsNotAvailableError(not_available_message(info, repo, Path(target)))
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial, replaced = (prefix.format(name=target.name) for prefix in (PARTIAL_PREFIX, REPLACED_PREFIX))
    scratch.remove_abandoned(target.parent, partial)
    scratch.remove_abandoned(target.parent, replaced)
    staging = target.parent / scratch.owned_name(partial)
    staging.mkdir()
    try:
        for name, expected in files.items():
            with open(staging / name, "wb") as handle:
                try:
                    git(repo, "cat-file", "blob", f"{commit}:{path}/{name}", stdout=handle)
                except GitError as error:
                    raise CorruptWeightsError(
                        f"{repo}/{path}/{name}", f"cannot be restored from commit {commit} ({error})"
                    ) from error
            actual = sha256_of(staging / name)
            if actual != expected:
                raise CorruptWeightsError(
                    f"{repo}/{path}/{name}",
                    f"at commit {commit} has sha256 {actual}, not the registry's {expected}.",
                )
        _swap_in(staging, target, replaced)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def first_mismatch(
    folder: str | os.PathLike, expected: Mapping[str, str], names: Sequence[str]
) -> str | None:
    """The first of `names` that `folder` lacks or holds with another sha256 than `expected`'s."""
    folder = Path(folder)
    for name in names:
        if not (folder / name).is_file() or sha256_of(folder / name) != expected[name]:
            return name
    return None


def fetch_command(info: registry.ModelInfo, repo: Path | None) -> str:
    """The git command that brings `info`'s commit into `repo` (a clone of the project)."""
    remote = "origin"
    if repo is not None:
        try:
            remotes = git_output(repo, "remote").split()
        except GitError:
            remotes = []
        remote = "origin" if "origin" in remotes or not remotes else remotes[0]
    where = ["-C", str(repo)] if repo is not None else []
    return shlex.join(["git", *where, "fetch", remote, info.history["commit"]])


def not_available_message(info: registry.ModelInfo, repo: Path | None, home: Path) -> str:
    """What to run to get `info`'s weights when the history is not at hand (`home`: where they go)."""
    commit, path = info.history["commit"], info.history["path"]
    load = f"python -c \"import sslzoo; sslzoo.load('{info.name}')\""  # registry names need no quoting
    if repo is not None:
        return (
            f"{info.name}: its weights are kept in the project's git history (commit {commit}, {path}/), "
            f"which {repo} does not hold. Fetch them with\n  {fetch_command(info, repo)}\n"
            f"and load again: sslzoo.load({info.name!r}) restores them into {home}."
        )
    return (
        f"{info.name}: its weights are kept in the sslzoo repository's git history (commit {commit}, "
        f"{path}/), and this installation is not a git checkout. In a clone of the repository run\n"
        f"  {fetch_command(info, None)}\n  {load}\n"
        f"from its root: that restores them into {home}, where this installation finds them "
        f"(or copy a folder with the same files there)."
    )


def _swap_in(staging: Path, target: Path, replaced_prefix: str) -> None:
    """Move `staging` to `target`; an existing `target` is moved aside first and removed after."""
    if not target.exists():
        os.replace(staging, target)
        return
    aside = target.parent / scratch.owned_name(replaced_prefix)
    os.replace(target, aside)
    try:
        os.replace(staging, target)
    except OSError:
        os.replace(aside, target)
        raise
    shutil.rmtree(aside, ignore_errors=True)
