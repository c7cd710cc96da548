"""Every route into the demo server meets the same limits and messages: uploads, inline data URLs,
links; EXIF orientation; refusals logged as one line; request size, upload space and expiry;
readable paths pinned; logins."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402
from PIL import Image  # noqa: E402
from serving import FILE, call, error_of, free_port, inline, png_bytes, upload, uploaded  # noqa: E402
from sslzoo.serve.app import RetrievalService, build_app, launch, local_models  # noqa: E402
from sslzoo.serve.extractor import FeatureExtractor  # noqa: E402
from sslzoo.serve.gallery import assets_dir, load_default_gallery  # noqa: E402
from sslzoo.serve.guards import LINKS_REFUSED  # noqa: E402
from sslzoo.serve.http_limits import RequestLimits, UploadSpace  # noqa: E402
from sslzoo.serve.uploads import Upload, UploadLimits, save_data_url  # noqa: E402

from sslzoo import Encoder  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore::PIL.Image.DecompressionBombWarning"
)  # headers read on purpose

KEY = "tiny-uploads"
EXAMPLE = assets_dir() / "example-cat.png"


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models") / KEY
    Encoder(provenance={"name": KEY}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def server(model_folder, tmp_path_factory):
    """The demo with a 1 MB cap on images."""
    gallery = load_default_gallery().first_per_class(2)
    service = RetrievalService(
        gallery, local_models(extra=model_folder), cache_dir=tmp_path_factory.mktemp("cache"), batch_size=10
    )
    demo = build_app(service)
    url = launch(demo, port=free_port(), max_file_size="1mb", block=False, quiet=True)
    yield url
    demo.close()
    service.close()


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server, timeout=120) as client:
        yield client


def bad_image(kind: str) -> bytes:
    if kind == "strip-500000x1":  # 1.5 kB; resized naively, 16 million pixels wide
        return png_bytes(Image.new("RGB", (500_000, 1), (200, 30, 30)))
    if kind == "12000x12000":  # a few hundred kB of PNG, 144 million pixels
        return png_bytes(Image.new("L", (12_000, 12_000)))
    if kind == "not-an-image":
        return b"%PDF-1.7 this is not a picture\n" * 20
    if kind == "over-the-cap":
        return np.random.default_rng(0).bytes(1_100_000)
    raise ValueError(kind)


BAD = ["strip-500000x1", "12000x12000", "not-an-image", "over-the-cap"]


@pytest.mark.parametrize("kind", BAD)
def test_an_inline_image_meets_the_limits_and_messages_of_an_upload(http, kind):
    content = bad_image(kind)
    name = f"{kind}.png"
    response = upload(http, name, content)
    if response.status_code == 200:
        (path,) = response.json()
        by_upload = error_of(call(http, "search", [{"path": path, "orig_name": name, "meta": FILE}, 3, KEY]))
    else:
        by_upload = response.json()["detail"]
    by_inline = error_of(call(http, "search", [inline(content), 3, KEY]))
    assert "image.webp" not in by_inline and "Traceback" not in by_inline
    if kind == "over-the-cap":  # refused before it is read: the upload is not named yet
        phrase = "larger than the 1 MB this server accepts for one image."
        assert by_upload.endswith(phrase) and by_inline.endswith(phrase)
    else:
        assert by_upload.startswith(f"'{name}' ") and by_inline.startswith("The inline image ")
        assert by_upload.removeprefix(f"'{name}'") == by_inline.removeprefix("The inline image")
    if kind.startswith(("strip", "12000")):
        assert "pixels" in by_inline
    events = call(http, "search", [uploaded(http, "cat.png", EXAMPLE.read_bytes()), 3, KEY])
    assert events[1] == "complete"  # the server is still answering


def test_an_inline_image_is_embedded_exactly_like_the_same_file_uploaded(http):
    content = EXAMPLE.read_bytes()
    _, event, (by_upload,) = call(http, "embed", [uploaded(http, "cat.png", content), KEY])
    _, event_inline, (by_inline,) = call(http, "embed", [inline(content), KEY])
    assert event == event_inline == "complete"
    assert by_upload["embedding"] == by_inline["embedding"]


def test_inline_payloads_over_the_cap_are_refused_before_decoding(http, tmp_path):
    """Just over 1 MB fits in the request but not in the image cap: refused at the door, by size."""
    content = np.random.default_rng(1).bytes(1024 * 1024 + 5000)
    status, event, detail = call(http, "search", [inline(content), 3, KEY])
    assert (status, event) == (400, "refused")
    assert detail == (
        "The inline image is 1,053,576 bytes: larger than the 1 MB (1,048,576 bytes) this server accepts for one image."
    )
    with pytest.raises(Exception, match="larger than"):
        save_data_url("data:image/png;base64," + "A" * 2_000_000, tmp_path, UploadLimits(max_bytes=1024))
    assert not any(tmp_path.rglob("*.png"))


def test_a_json_body_larger_than_one_image_can_make_is_refused_unread(http):
    response = http.post("gradio_api/call/search", content=b"{" + b" " * 1_600_000 + b"}")
    assert response.status_code == 413 and "larger than the 1 MB" in response.json()["detail"]


def test_links_are_refused_not_fetched(http):
    for payload in (
        {"path": "https://example.com/cat.png", "meta": FILE},
        {"url": "http://127.0.0.1:9/cat.png", "path": None, "meta": FILE},
    ):
        status, event, detail = call(http, "search", [payload, 3, KEY])
        assert (status, event, detail) == (400, "refused", LINKS_REFUSED)


def orientation_6_jpeg(displayed: Image.Image) -> bytes:
    """`displayed` stored as a camera turned on its side stores it: pixels rotated, EXIF tag 6."""
    import io

    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    displayed.transpose(Image.Transpose.ROTATE_90).save(buffer, format="JPEG", quality=95, exif=exif)
    return buffer.getvalue()


def test_one_photo_one_embedding_whatever_the_route_and_exif_orientation(http, model_folder, tmp_path):
    """Upload, inline data URL and `Encoder.embed(path)` all see the photo as displayed."""
    cat = Image.open(EXAMPLE).convert("RGB").resize((32, 48))
    content = orientation_6_jpeg(cat)
    path = tmp_path / "portrait.jpg"
    path.write_bytes(content)
    _, _, (by_upload,) = call(http, "embed", [uploaded(http, "portrait.jpg", content), KEY])
    _, _, (by_inline,) = call(http, "embed", [inline(content, "image/jpeg"), KEY])
    served = np.asarray(by_upload["embedding"], dtype=np.float32)
    assert by_upload["embedding"] == by_inline["embedding"]
    library = Encoder.from_pretrained(model_folder).eval().embed(path)[0].numpy()
    np.testing.assert_allclose(served, library, atol=1e-5)
    extractor = FeatureExtractor(model_folder)
    upright_file = tmp_path / "upright.png"
    Image.open(path).transpose(Image.Transpose.ROTATE_270).save(upright_file)  # what a viewer shows
    np.testing.assert_allclose(served, extractor.embed([str(upright_file)])[0], atol=1e-5)
    sideways_file = tmp_path / "sideways.png"
    Image.open(path).save(sideways_file)  # the pixels as stored, tag dropped
    assert not np.allclose(served, extractor.embed([str(sideways_file)])[0], atol=1e-4)


def test_a_non_numeric_k_gets_a_message_naming_the_input(http):
    message = error_of(call(http, "search", [uploaded(http, "cat.png", EXAMPLE.read_bytes()), "abc", KEY]))
    assert message == "Neighbours (k) must be a number from 1 to 20 (got 'abc')."


def test_every_refusal_is_one_log_line_and_no_traceback(http, caplog, capfd):
    caplog.set_level(logging.INFO, logger="sslzoo.serve")
    capfd.readouterr()
    cat = uploaded(http, "cat.png", EXAMPLE.read_bytes())
    requests = [
        [uploaded(http, "strip.png", bad_image("strip-500000x1")), 3, KEY],
        [inline(bad_image("not-an-image")), 3, KEY],
        [cat, "abc", KEY],
        [cat, 3, "no-such-model"],
        [{"path": "/etc/passwd", "meta": FILE}, 3, KEY],
        [{"path": "https://example.com/x.png", "meta": FILE}, 3, KEY],
        [None, 3, KEY],
    ]
    for data in requests:
        assert call(http, "search", data)[1] in ("error", "refused")
    records = [record for record in caplog.records if record.name == "sslzoo.serve"]
    assert len(records) == len(requests), [record.getMessage() for record in records]
    assert all(record.getMessage().startswith("refused /search: ") for record in records)
    assert all("\n" not in record.getMessage() for record in records)
    printed = capfd.readouterr()
    assert "Traceback" not in printed.err + printed.out


# ------------------------------------------------------------------------------------------ HTTP limits
def test_upload_space_admits_uploads_until_its_budget_then_frees_as_they_expire(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    space = UploadSpace(budget_bytes=100, window_s=60)
    assert space.admit(60) and space.admit(40) and not space.admit(1)
    clock[0] += 61
    assert space.admit(100) and space.used_bytes == 100


def test_request_limits_refuse_oversized_and_chunked_bodies_with_one_message():
    import asyncio

    async def app(scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(len(body)).encode()})

    limits = RequestLimits(app, max_bytes=1000, body_message="too big")

    async def request(path: str, chunks: list[bytes], length: int | None) -> tuple[int, bytes]:
        messages = [
            {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
            for i, c in enumerate(chunks)
        ]
        sent: list[dict] = []
        headers = [(b"content-length", str(length).encode())] if length is not None else []

        async def receive():
            return messages.pop(0)

        async def send(message):
            sent.append(message)

        await limits({"type": "http", "method": "POST", "path": path, "headers": headers}, receive, send)
        return sent[0]["status"], sent[1]["body"]

    run = asyncio.run
    assert run(request("/gradio_api/call/search", [b"x" * 1200], 1200)) == (200, b"1200")  # base64 room
    assert run(request("/gradio_api/call/search", [b"x" * 2000], 2000))[0] == 200  # within 4/3 + envelope
    status, body = run(request("/gradio_api/call/search", [b"x" * 40_000] * 3, None))  # chunked, no length
    assert status == 413 and b"too big" in body
    assert run(request("/gradio_api/upload", [b"x"], 100_000))[0] == 413


@pytest.fixture
def strict_server(model_folder, tmp_path, monkeypatch):
    """A server with a login, a 40 kB upload space, 2 s upload lifetime, and GRADIO_ALLOWED_PATHS set."""
    secret_dir = tmp_path / "secrets"
    secret_dir.mkdir()
    (secret_dir / "key.txt").write_text("TOP-SECRET-42")
    monkeypatch.setenv("GRADIO_ALLOWED_PATHS", str(secret_dir))
    gallery = load_default_gallery().first_per_class(1)
    service = RetrievalService(gallery, local_models(extra=model_folder), cache_dir=tmp_path / "cache")
    demo = build_app(service)
    url = launch(
        demo,
        port=free_port(),
        block=False,
        quiet=True,
        auth=[("ada", "lovelace")],
        upload_space="40kb",
        upload_ttl_s=2,
    )
    yield url, demo, secret_dir / "key.txt"
    demo.close()
    service.close()


def test_a_strict_server_pins_paths_requires_login_bounds_and_expires_uploads(strict_server):
    url, demo, secret = strict_server
    assert demo.allowed_paths == []
    with httpx.Client(base_url=url, timeout=60) as anonymous:
        assert upload(anonymous, "cat.png", EXAMPLE.read_bytes()).status_code in (401, 403)
        assert anonymous.get(f"gradio_api/file={secret}").status_code in (401, 403)
    client = Client(url, auth=("ada", "lovelace"), verbose=False)
    _, details, _ = client.predict(handle_file(str(EXAMPLE)), 3, KEY, api_name="/search")
    assert len(details["neighbours"]) == 3
    cookies = client.cookies
    with httpx.Client(base_url=url, timeout=60, cookies=cookies) as http:
        served = http.get(f"gradio_api/file={secret}")
        assert served.status_code == 403 and "TOP-SECRET" not in served.text
        pixels = np.random.default_rng(0).integers(0, 256, (80, 80, 3), dtype=np.uint8)
        content = png_bytes(Image.fromarray(pixels), compress_level=0)  # ~19 kB
        (first,) = upload(http, "a.png", content).json()
        full = upload(http, "b.png", content)
        assert full.status_code == 503 and "upload space is full" in full.json()["detail"]
        deadline = time.monotonic() + 30
        while Path(first).exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not Path(first).exists(), "uploads expire"
        deadline = time.monotonic() + 30
        while upload(http, "c.png", content).status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert time.monotonic() < deadline, "space comes back as uploads expire"


def test_upload_name_labels():
    assert Upload("/tmp/x/<b>.png", "<b>.png").label == "'&lt;b&gt;.png'"
    assert Upload.of("/up/sslzoo-inline/abc/inline.png").label == "The inline image"
    assert Upload.of("/up/abc/cat.png").name == "cat.png"
