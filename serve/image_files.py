"""Which image files an input names: a folder (searched recursively), a file list, a glob or one image.

Each file found gets an id (its path relative to the folder it was found in, or as listed) and
a class name (its top-level subfolder under that folder, else the name of the folder holding
it), so a folder laid out as `root/<class>/<image>` becomes a labelled gallery.
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sslzoo.errors import ConfigError

from .gallery import IMAGE_SUFFIXES

#: Characters that make an input a glob pattern rather than a path.
_GLOB_CHARACTERS = ("*", "?", "[")
STDIN = "-"


@dataclass(frozen=True)
class ImageFile:
    """One file to embed: where it is, how it is named to users, and its class name."""

    path: Path  # absolute
    id: str
    label: str


@dataclass(frozen=True)
class MissingFile:
    """A path a file list names that is not there."""

    path: str
    reason: str


def find_images(inputs: Sequence[str | os.PathLike]) -> tuple[list[ImageFile], list[MissingFile]]:
    """The image files that `inputs` name, each once, in a stable order; and the listed paths not found.

    Each input is a folder (every file with an image suffix below it, hidden ones left out,
    sorted by path), a glob pattern (`"photos/**/*.jpg"`, sorted), an image file, or a text file
    listing one path per line (relative to the list's folder; blank lines and `#` comments are
    skipped; `-` reads the list from stdin, relative to the working directory).
    """
    if not inputs:
        raise ConfigError("No input given: pass a folder, a glob pattern, an image file or a file list.")
    found: dict[Path, ImageFile] = {}
    missing: list[MissingFile] = []
    for spec in inputs:
        text = os.fspath(spec)
        path = Path(text).expanduser()
        if text == STDIN:
            files, absent = _from_list(sys.stdin.read().splitlines(), Path.cwd(), "stdin")
        elif path.is_dir():
            files, absent = _from_folder(path), []
        elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            files, absent = [_file(path, text)], []
        elif path.is_file():
            lines = _read_list(path)
            files, absent = _from_list(lines, path.resolve().parent, str(path))
        elif any(character in text for character in _GLOB_CHARACTERS):
            files, absent = _from_glob(text), []
        else:
            raise ConfigError(
                f"{text}: no such file or folder. Pass a folder, a glob pattern (quoted, e.g. 'photos/*.jpg'), "
                "an image file or a text file listing one image path per line."
            )
        for image in files:
            found.setdefault(image.path, image)
        missing.extend(absent)
    return list(found.values()), missing


def _file(path: Path, shown: str) -> ImageFile:
    absolute = path.resolve()
    return ImageFile(absolute, shown, absolute.parent.name)


def _from_folder(root: Path) -> list[ImageFile]:
    root = root.resolve()
    files = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        label = relative.parts[0] if len(relative.parts) > 1 else root.name
        files.append(ImageFile(path, relative.as_posix(), label))
    return files


def _from_glob(pattern: str) -> list[ImageFile]:
    matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
    files = [_file(Path(match), match) for match in matches if Path(match).is_file()]
    if not files:
        raise ConfigError(f"{pattern}: the pattern matches no file.")
    return files


def _read_list(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: neither an image (by its suffix) nor a text file listing image paths ({error.reason})."
        ) from error


def _from_list(lines: list[str], base: Path, where: str) -> tuple[list[ImageFile], list[MissingFile]]:
    files, missing = [], []
    for line in lines:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path = Path(entry).expanduser()
        path = path if path.is_absolute() else base / path
        if path.is_file():
            files.append(_file(path, entry))
        else:
            missing.append(MissingFile(str(path), f"no such file (listed in {where})"))
    return files, missing
