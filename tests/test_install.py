"""An install that fits the use: the library needs only its core dependencies, each command imports
what it needs when it runs (so `--help` is instant), and a missing extra is named with its install line."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CORE = {"torch", "torchvision", "safetensors", "huggingface-hub", "numpy", "pillow", "click", "tqdm"}
#: Top-level modules that only an extra installs (and what they pull in).
OPTIONAL = ("gradio", "faiss", "onnxruntime", "onnx", "onnxscript", "kornia", "timm", "matplotlib", "lightly", "pandas")

#: Run first in a child interpreter: the optional packages are not found, as if not installed
#: (every finder answers None for them, as it does for a missing module).
BLOCKER = f"""
import sys
class _WithoutExtras:
    def __init__(self, finder):
        self._finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {OPTIONAL!r}:
            return None
        find = getattr(self._finder, "find_spec", None)
        return find(name, path, target) if find else None
    def __getattr__(self, attribute):
        return getattr(self._finder, attribute)
sys.meta_path[:] = [_WithoutExtras(finder) for finder in sys.meta_path]
"""
#: Printed last by a child interpreter: the top-level modules it imported.
IMPORTED = "import json, sys; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"


def run_python(code: str, *, block: bool = False, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", (BLOCKER if block else "") + code],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )


def requirement_name(requirement: str) -> str:
    from packaging.requirements import Requirement

    return Requirement(requirement).name


def test_the_core_dependencies_are_the_libraries_own_and_the_rest_are_extras_named_for_jobs():
    project = PYPROJECT["project"]
    assert {requirement_name(r) for r in project["dependencies"]} == CORE
    extras = project["optional-dependencies"]
    assert {"serve", "export", "train", "all", "test", "benchmark"} <= set(extras)
    assert {requirement_name(r) for r in extras["serve"]} >= {"gradio", "faiss-cpu", "onnxruntime", "onnxruntime-gpu"}
    assert {requirement_name(r) for r in extras["export"]} >= {"onnx", "onnxscript", "matplotlib"}
    assert "timm" in {requirement_name(r) for r in extras["train"]}
    assert extras["all"] == ["sslzoo[serve,export,train]"]


@pytest.mark.parametrize(
    ("system", "machine", "build"),
    [
        ("linux", "x86_64", "onnxruntime-gpu"),
        ("win32", "AMD64", "onnxruntime-gpu"),
        ("darwin", "arm64", "onnxruntime"),  # no GPU build for macOS: the CPU one, so a Mac installs
        ("darwin", "x86_64", "onnxruntime"),
        ("linux", "aarch64", "onnxruntime"),
    ],
)
def test_onnx_runtime_is_the_gpu_build_where_it_exists_and_the_cpu_build_elsewhere(system, machine, build):
    from packaging.requirements import Requirement

    environment = {"sys_platform": system, "platform_machine": machine}
    for extra in ("serve", "export"):
        chosen = []
        for text in PYPROJECT["project"]["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if requirement.name.startswith("onnxruntime") and requirement.marker.evaluate(environment):
                chosen.append(requirement.name)
        assert chosen == [build], (extra, chosen)


def test_load_and_embed_work_with_the_core_dependencies_alone():
    code = """
import sslzoo
encoder = sslzoo.load(sslzoo.default_model())
features = encoder.embed(["serve/assets/example-cat.png", "serve/assets/example-dog.png"])
assert features.shape == (2, encoder.num_features), features.shape
assert abs(float(features.norm(dim=1).min()) - 1) < 1e-5
from sslzoo.evaluation import knn_evaluate
# sslzoo-eval measures with the core alone too (the fake dataset: no download).
from sslzoo.train.cli import eval_main
try:
    eval_main([sslzoo.default_model(), "--dataset", "fake", "--linear-epochs", "1", "--json"])
except SystemExit as stop:
    assert stop.code == 0, stop.code
"""
    result = run_python(code + IMPORTED, block=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-2])
    assert report["dataset"] == "fake" and report["weights_sha256"] and report["linear"]["fast"]["protocol"] == "fast"
    imported = set(json.loads(result.stdout.splitlines()[-1]))
    assert not imported & set(OPTIONAL)


def console_scripts() -> dict[str, str]:
    return dict(PYPROJECT["project"]["scripts"], **{"python -m sslzoo.export": "sslzoo.export.cli:tools"})


@pytest.mark.parametrize("script", sorted(console_scripts()))
def test_every_help_answers_without_importing_what_the_command_needs_to_run(script):
    module, function = console_scripts()[script].split(":")
    code = f"""
from {module} import {function} as command
try:
    command(["--help"], prog_name={script!r})
except SystemExit as stop:
    assert stop.code == 0, stop.code
"""
    result = run_python(code + IMPORTED)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout and "--help" in result.stdout
    imported = set(json.loads(result.stdout.splitlines()[-1]))
    assert not imported & set(OPTIONAL), script
    assert not imported & {"torch", "torchvision", "huggingface_hub", "numpy"}, script  # nothing heavy for help


def test_a_missing_extra_is_named_with_the_line_that_installs_it(tmp_path):
    code = f"""
import sslzoo, sys
from click.testing import CliRunner
from sslzoo.export.cli import main
folder = {str(tmp_path / "model")!r}
sslzoo.Encoder().save_pretrained(folder)
result = CliRunner().invoke(main, [folder, "--to", "onnx", "--out", {str(tmp_path / "out")!r}])
print(result.exit_code, result.output.strip().splitlines()[-1])  # after the export's progress lines
# The weights themselves export with the core alone.
result = CliRunner().invoke(main, [folder, "--to", "safetensors", "--out", {str(tmp_path / "weights")!r}])
print(result.exit_code, next(line for line in result.output.splitlines() if not line.startswith("exporting ")))
from sslzoo.train.cli import train_main
result = CliRunner().invoke(train_main, ["--method", "simclr", "--dataset", "fake", "--out", {str(tmp_path / "run")!r}])
print(result.exit_code, result.output.strip())
from sslzoo.serve.cli import main as serve_main
result = CliRunner().invoke(serve_main, [])
print(result.exit_code, result.output.strip())
"""
    result = run_python(code, block=True)
    assert result.returncode == 0, result.stderr
    onnx, weights, train, serve = result.stdout.strip().splitlines()[-4:]
    assert onnx.startswith("1 Error: ONNX export needs onnx") and "pip install 'sslzoo[export]'" in onnx
    assert weights.startswith("0 Exported")
    assert train.startswith("1 Error: ") and "pip install 'sslzoo[train]'" in train
    assert serve.startswith("1 Error: sslzoo-serve needs ") and "pip install 'sslzoo[serve]'" in serve
    assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists()


def test_the_demo_imports_with_the_serve_extra_alone():
    """`pip install ".[serve]"` is the README's demo command: nothing the demo imports may come only
    with another extra (the gallery map's matplotlib once did)."""
    serve = {requirement_name(r) for r in PYPROJECT["project"]["optional-dependencies"]["serve"]}
    modules = {"faiss-cpu": "faiss", "onnxruntime-gpu": "onnxruntime"}
    provided = {modules.get(name, name) for name in serve} | {"pandas"}  # gradio brings pandas
    blocked = tuple(name for name in OPTIONAL if name not in provided)
    assert "timm" in blocked and "matplotlib" not in blocked
    code = BLOCKER.replace(repr(OPTIONAL), repr(blocked)) + """
import sslzoo.serve.app, sslzoo.serve.cli, sslzoo.serve.gallery_map, sslzoo.export.onnx, sslzoo.export.folder
print("ok")
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")
