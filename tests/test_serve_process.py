"""`sslzoo-serve` as a real process: what hostile uploads cost its memory, what its log shows, and what
it leaves on disk when stopped (by SIGTERM, or killed before)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import rss
import torch
from PIL import Image
from serving import call, error_of, free_port, inline, png_bytes, uploaded

from sslzoo import Encoder

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not rss.supported(), reason="reads peak memory from Linux's /proc"),
]

EXAMPLE = Path(__file__).resolve().parents[1] / "serve" / "assets" / "example-cat.png"
PREFIXES = ("sslzoo-thumbnails-", "sslzoo-examples-", "sslzoo-uploads-")


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The CLI on a free port, with its own temp dir holding a folder a killed server left behind."""
    root = tmp_path_factory.mktemp("process")
    torch.manual_seed(0)
    Encoder(provenance={"name": "tiny-process"}).save_pretrained(root / "tiny-process")
    for name, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (root / "gallery" / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (16, 16), tuple(max(0, c - 40 * i) for c in colour)).save(
                root / "gallery" / name / f"{i}.png"
            )
    tmp = root / "tmp"
    tmp.mkdir()
    stale = tmp / f"sslzoo-thumbnails-{dead_pid()}-0badc0de"
    (stale / "sub").mkdir(parents=True)
    port = free_port()
    env = {
        **os.environ,
        "TMPDIR": str(tmp),
        "SSLZOO_HOME": str(root / "home"),
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    env.pop("GRADIO_TEMP_DIR", None)
    command = [
        sys.executable,
        "-c",
        "from sslzoo.serve.cli import main; main()",
        "--model",
        str(root / "tiny-process"),
        "--gallery",
        str(root / "gallery"),
        "--backend",
        "torch",
        "--threads",
        "1",
        "--port",
        str(port),
        "--index-cache",
        str(root / "cache"),
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    output: list[str] = []
    errors: list[str] = []
    threading.Thread(target=lambda: output.extend(process.stdout), daemon=True).start()
    threading.Thread(target=lambda: errors.extend(process.stderr), daemon=True).start()
    deadline = time.monotonic() + 300
    while not any("open http" in line for line in output):
        assert process.poll() is None, "".join(output + errors)
        assert time.monotonic() < deadline, "the server did not start in 300 s"
        time.sleep(0.5)
    yield {
        "url": f"http://127.0.0.1:{port}/",
        "process": process,
        "tmp": tmp,
        "stale": stale,
        "errors": errors,
    }
    if process.poll() is None:
        process.kill()
        process.wait()


def test_hostile_uploads_cost_the_server_under_100_mb_and_one_log_line_each(served):
    pid = served["process"].pid
    strip = png_bytes(Image.new("RGB", (500_000, 1), (200, 30, 30)))
    huge = png_bytes(Image.new("L", (12_000, 12_000)))
    with httpx.Client(base_url=served["url"], timeout=120) as http:
        assert (
            call(http, "search", [uploaded(http, "cat.png", EXAMPLE.read_bytes()), 3, None])[1] == "complete"
        )
        before = len(served["errors"])
        with rss.peak_growth(pid) as growth:
            by_upload = call(http, "search", [uploaded(http, "strip.png", strip), 3, None])
            by_inline = call(http, "search", [inline(huge), 3, None])
        assert (
            call(http, "search", [uploaded(http, "cat.png", EXAMPLE.read_bytes()), 3, None])[1] == "complete"
        )
    assert growth.mb < 100, f"peak resident memory grew by {growth.mb:.0f} MB"
    assert error_of(by_upload).startswith("'strip.png' is 500000x1 pixels")
    assert error_of(by_inline).startswith("The inline image is 12000x12000 pixels")
    time.sleep(0.5)
    logged = served["errors"][before:]
    assert not any("Traceback" in line for line in logged), "".join(logged)
    refusals = [line for line in logged if "refused /search" in line]
    assert len(refusals) == 2, "".join(logged)


def test_a_killed_servers_folders_are_removed_at_start_and_sigterm_leaves_nothing(served):
    assert not served["stale"].exists()
    tmp, process = served["tmp"], served["process"]
    mine = [path.name for path in tmp.iterdir() if path.name.startswith(PREFIXES)]
    assert {name.rsplit("-", 2)[0] + "-" for name in mine} == set(PREFIXES)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    left = [path.name for path in tmp.iterdir() if path.name.startswith(PREFIXES)]
    assert left == [], left
