"""Packaging: one distribution whose only top-level import is `sslzoo`, for normal and editable installs."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import sslzoo

ROOT = Path(__file__).resolve().parents[1]
APPLICATIONS = ("sslzoo.train", "sslzoo.export", "sslzoo.serve")


def test_applications_import_under_the_library_namespace():
    import sslzoo.export
    import sslzoo.serve
    import sslzoo.train

    for module in (sslzoo.train, sslzoo.export, sslzoo.serve):
        assert module.__name__.startswith("sslzoo.")


@pytest.mark.slow
def test_wheel_installs_nothing_but_sslzoo(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("sslzoo-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"sslzoo", f"sslzoo-{sslzoo.__version__}.dist-info"}
    for package in APPLICATIONS:
        assert f"{package.replace('.', '/')}/__init__.py" in names
    assert "sslzoo/zoo.json" in names
    # What the demo needs offline after a plain `pip install .`: the default encoder and its gallery.
    default = sslzoo.default_model()
    assert default is not None
    for file in ("config.json", "model.safetensors"):
        assert f"sslzoo/weights/{default}/{file}" in names
    for asset in ("cifar10_gallery.safetensors", "cifar10_gallery.json"):
        assert f"sslzoo/serve/assets/{asset}" in names
    assert any(name.startswith("sslzoo/train/recipes/") and name.endswith(".toml") for name in names)
    assert "sslzoo/train/plans/zoo.toml" in names  # `sslzoo-train --plan zoo` works from an install
    entry_points = zipfile.ZipFile(wheel).read(f"sslzoo-{sslzoo.__version__}.dist-info/entry_points.txt").decode()
    for script in ("sslzoo-train", "sslzoo-eval", "sslzoo-export", "sslzoo-serve"):
        assert script in entry_points


def test_installed_distribution_exposes_only_sslzoo():
    # The installed record (a .dist-info), not the build's sslzoo.egg-info that may sit in the checkout.
    installed = [
        dist for dist in importlib.metadata.distributions(name="sslzoo")
        if getattr(dist, "_path", Path()).name.endswith(".dist-info")
    ]
    if not installed:
        pytest.fail("sslzoo is not installed: run the README's test command (pip install -e '.[test]').")
    distribution = installed[0]
    files = [str(path) for path in distribution.files or []]
    finders = [path for path in distribution.files or [] if re.match(r"__editable___sslzoo.*_finder\.py$", path.name)]
    if finders:  # editable install: the finder maps module names to folders of the checkout
        source = Path(finders[0].locate()).read_text()
        mapping = eval(re.search(r"^MAPPING[^=]*=\s*(\{.*?\})$", source, re.M).group(1))  # noqa: S307 - our own build file
        assert {name.split(".")[0] for name in mapping} == {"sslzoo"}
        for package in APPLICATIONS:
            assert Path(mapping[package]).name == package.split(".")[1]
    else:
        top_level = {path.split("/")[0] for path in files if not path.startswith("..")}
        assert {name for name in top_level if not name.endswith((".dist-info", ".pth"))} <= {"sslzoo", "bin"}
