"""The README's examples run as written, on files that exist, and its quick start installs what each use needs."""

from __future__ import annotations

import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def python_block_after(heading: str) -> str:
    section = README[README.index(heading) :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def quickstart(name: str) -> str:
    return re.search(rf"<!-- quickstart:{name} -->\n```bash\n(.*?)\n```", README, re.S).group(1)


def test_the_usage_block_runs_on_the_example_images_and_says_what_is_normalised(tmp_path, monkeypatch):
    code = python_block_after("## Using the library")
    (tmp_path / "serve").symlink_to(ROOT / "serve")  # the paths are a checkout's
    monkeypatch.chdir(tmp_path)
    names: dict = {}
    exec(compile(code, "README.md", "exec"), names)  # noqa: S102 - the project's own documentation
    features, raw = names["features"], names["raw"]
    assert features.shape == raw.shape == (2, 512)
    assert torch.allclose(features.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(torch.nn.functional.normalize(raw, dim=1), features, atol=1e-5)
    assert not torch.allclose(raw.norm(dim=1), torch.ones(2))  # encoder(batch) is not normalised
    assert (tmp_path / "my-encoder" / "model.safetensors").is_file()
    assert "NOT normalised" in code and "L2-normalised" in code


def test_the_torchvision_block_loads_the_bundled_weights_into_a_plain_resnet():
    import sslzoo

    names: dict = {}
    exec(compile(python_block_after("### The weights are plain torchvision"), "README.md", "exec"), names)  # noqa: S102
    net = names["net"].eval()
    encoder = sslzoo.load("simclr-resnet18-cifar10")
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(net(images), encoder(images))


def test_the_quick_start_installs_the_extras_each_use_needs():
    assert '.venv/bin/pip install -q ".[serve]"' in quickstart("demo")
    assert 'pip install -q -e ".[all,test]"' in quickstart("test")
