"""The demo server: /search and /embed over gradio_client and plain HTTP, bad inputs, path safety, load."""

from __future__ import annotations

import io
import json
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from PIL import Image  # noqa: E402
from sslzoo.serve import app as serve_app  # noqa: E402
from sslzoo.serve import cli  # noqa: E402
from sslzoo.serve import gallery as serve_gallery  # noqa: E402
from sslzoo.serve.app import (  # noqa: E402
    ModelChoice,
    QueryInputError,
    RetrievalService,
    UploadLimits,
    build_app,
    examples_folder,
    launch,
    load_query_image,
    local_models,
    model_card_markdown,
    write_examples,
)
from sslzoo.serve.extractor import FeatureExtractor  # noqa: E402
from sslzoo.serve.gallery import assets_dir, load_default_gallery  # noqa: E402

from sslzoo import Encoder  # noqa: E402

CIFAR10 = {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"}
MODEL_KEY = "tiny-served"
OTHER_KEY = "tiny-other"
EXAMPLE = assets_dir() / "example-cat.png"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models") / MODEL_KEY
    Encoder(provenance={"name": MODEL_KEY}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def server(model_folder, tmp_path_factory):
    """The demo on a free local port: 20 gallery images (2 per CIFAR-10 class), 1 MB upload cap,
    and a second model in the dropdown (indexed only when a query asks for it)."""
    torch.manual_seed(1)
    other = tmp_path_factory.mktemp("models") / OTHER_KEY
    Encoder(provenance={"name": OTHER_KEY}).save_pretrained(other)
    choices = [*local_models(extra=model_folder), ModelChoice(OTHER_KEY, OTHER_KEY, str(other))]
    gallery = load_default_gallery().first_per_class(2)
    service = RetrievalService(gallery, choices, cache_dir=tmp_path_factory.mktemp("cache"), batch_size=10)
    demo = build_app(service, examples=write_examples(gallery, examples_folder()))
    url = launch(demo, port=free_port(), max_file_size="1mb", block=False, quiet=True)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(server, verbose=False)


def assert_good_search(client: Client, k: int = 3) -> dict:
    images, details, timing = client.predict(handle_file(str(EXAMPLE)), k, MODEL_KEY, api_name="/search")
    assert len(images) == k and len(details["neighbours"]) == k
    assert "ms" in timing
    return details


# ------------------------------------------------------------------------------------------ API
def test_search_returns_k_neighbours_each_with_a_cifar10_label(client):
    images, details, timing = client.predict(handle_file(str(EXAMPLE)), 5, MODEL_KEY, api_name="/search")
    assert len(images) == 5 and all(Path(item["image"]).is_file() for item in images)
    neighbours = details["neighbours"]
    assert [n["rank"] for n in neighbours] == [1, 2, 3, 4, 5]
    assert {n["label"] for n in neighbours} <= CIFAR10
    assert all(item["caption"].startswith(n["label"]) for item, n in zip(images, neighbours))
    scores = [n["score"] for n in neighbours]
    assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0001 for s in scores)
    assert details["model"] == MODEL_KEY and set(details["timing_ms"]) >= {"embed", "search"}
    assert timing.startswith("Query took")


def test_search_says_how_many_neighbours_share_the_top_class(client):
    _, details, _ = client.predict(handle_file(str(EXAMPLE)), 8, MODEL_KEY, api_name="/search")
    top = details["top_class"]
    labels = [n["label"] for n in details["neighbours"]]
    assert top["of"] == 8 and top["count"] == labels.count(top["label"]) == max(map(labels.count, labels))
    assert top["label"] == next(label for label in labels if labels.count(label) == top["count"])
    assert top["chance"] == 0.8  # 8 neighbours, 10 classes
    summary = serve_app.neighbour_summary(top, 10)
    assert summary.startswith(f"**{top['count']} of 8** neighbours are **{top['label']}**")


def test_a_flat_folder_of_photos_is_searched_by_file_name_without_class_scores(model_folder, tmp_path):
    rng = np.random.default_rng(2)
    for name in ("beach.png", "cake.png", "tree.png"):
        Image.fromarray(rng.integers(0, 256, size=(24, 24, 3), dtype=np.uint8)).save(tmp_path / name)
    gallery = serve_gallery.resolve_gallery(str(tmp_path))
    service = RetrievalService(gallery, local_models(extra=model_folder), cache_dir=tmp_path / "cache")
    examples = write_examples(gallery, examples_folder())
    assert [Path(path).name for path in examples] == ["beach.png", "cake.png", "tree.png"]
    demo = build_app(service, examples=examples)
    url = launch(demo, port=free_port(), block=False, quiet=True)
    try:
        images, details, _ = Client(url, verbose=False).predict(
            handle_file(str(tmp_path / "cake.png")), 2, api_name="/search"
        )
    finally:
        demo.close()
        service.close()
    assert images[0]["caption"].startswith("cake.png · ") and details["neighbours"][0]["file"] == "cake.png"
    assert "top_class" not in details and {n["label"] for n in details["neighbours"]} == {None}
    assert "unlabelled" in serve_app.gallery_markdown(gallery)


def test_search_uses_the_page_defaults_when_only_an_image_is_sent(client):
    _, details, _ = client.predict(handle_file(str(EXAMPLE)), api_name="/search")
    assert details["k"] == serve_app.DEFAULT_K and details["model"] == MODEL_KEY


def test_the_model_dropdown_switches_to_another_local_model(client):
    served = client.predict(handle_file(str(EXAMPLE)), MODEL_KEY, api_name="/embed")
    other = client.predict(handle_file(str(EXAMPLE)), OTHER_KEY, api_name="/embed")
    assert other["model"] == OTHER_KEY and other["fingerprint"] != served["fingerprint"]
    _, details, _ = client.predict(handle_file(str(EXAMPLE)), 4, OTHER_KEY, api_name="/search")
    assert details["model"] == OTHER_KEY and len(details["neighbours"]) == 4


def test_api_lists_the_named_endpoints(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == {"/search", "/embed"}


def test_embed_returns_the_same_unit_vector_as_the_python_api(client, model_folder):
    result = client.predict(handle_file(str(EXAMPLE)), MODEL_KEY, api_name="/embed")
    vector = np.asarray(result["embedding"], dtype=np.float32)
    assert result["dim"] == 512 and vector.shape == (512,)
    expected = FeatureExtractor(model_folder).embed([str(EXAMPLE)])[0]
    np.testing.assert_allclose(vector, expected, atol=1e-5)
    assert result["fingerprint"] == FeatureExtractor(model_folder).fingerprint


def sse_result(http: httpx.Client, api: str, data: list) -> tuple[str, object]:
    """Plain-HTTP call of a named endpoint: POST the inputs, read the event stream; (event, data)."""
    started = http.post(f"gradio_api/call/{api}", json={"data": data})
    started.raise_for_status()
    stream = http.get(f"gradio_api/call/{api}/{started.json()['event_id']}").text
    events = [line.removeprefix("event: ") for line in stream.splitlines() if line.startswith("event: ")]
    payloads = [line.removeprefix("data: ") for line in stream.splitlines() if line.startswith("data: ")]
    return events[-1], json.loads(payloads[-1]) if payloads[-1] != "null" else None


def upload(http: httpx.Client, name: str, content: bytes) -> httpx.Response:
    return http.post("gradio_api/upload", files=[("files", (name, content, "application/octet-stream"))])


def test_plain_http_client_can_search(server):
    with httpx.Client(base_url=server, timeout=60) as http:
        (path,) = upload(http, "query.png", EXAMPLE.read_bytes()).json()
        event, data = sse_result(
            http, "search", [{"path": path, "meta": {"_type": "gradio.FileData"}}, 4, MODEL_KEY]
        )
    assert event == "complete"
    gallery, details, _ = data
    assert len(gallery) == 4 and {n["label"] for n in details["neighbours"]} <= CIFAR10


# ------------------------------------------------------------------------------------------ bad input
def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def bad_file(kind: str, folder: Path) -> Path:
    rng = np.random.default_rng(1)
    path = folder / f"{kind}.png"
    if kind == "not-an-image":
        path.write_bytes(b"%PDF-1.7 this is not a picture\n" * 20)
    elif kind == "corrupt-png":
        path.write_bytes(png_bytes(Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)))[:150])
    elif kind == "one-pixel":
        Image.new("RGB", (1, 1), (250, 10, 10)).save(path)
    elif kind == "40-megapixel":
        Image.new("RGB", (8000, 5000), (20, 120, 220)).save(path, compress_level=1)  # ~0.5 MB on disk
    elif kind == "grayscale":
        Image.fromarray(rng.integers(0, 256, (30, 30), dtype=np.uint8), mode="L").save(path)
    elif kind == "rgba":
        Image.fromarray(rng.integers(0, 256, (30, 30, 4), dtype=np.uint8), mode="RGBA").save(path)
    elif kind == "16-bit":
        Image.fromarray(rng.integers(0, 65536, (30, 30), dtype=np.uint16)).save(path)
        assert Image.open(path).mode == "I;16"
    return path


@pytest.mark.parametrize("kind", ["not-an-image", "corrupt-png"])
def test_unreadable_uploads_get_a_clear_error_and_the_next_query_works(client, kind, tmp_path):
    with pytest.raises(AppError, match=rf"'{kind}.png' is not a readable image.*Upload a PNG"):
        client.predict(handle_file(str(bad_file(kind, tmp_path))), 3, MODEL_KEY, api_name="/search")
    assert_good_search(client)


@pytest.mark.parametrize("kind", ["one-pixel", "40-megapixel", "grayscale", "rgba", "16-bit"])
def test_odd_but_valid_images_are_converted_and_searched(client, kind, tmp_path):
    _, details, _ = client.predict(
        handle_file(str(bad_file(kind, tmp_path))), 3, MODEL_KEY, api_name="/search"
    )
    assert len(details["neighbours"]) == 3 and {n["label"] for n in details["neighbours"]} <= CIFAR10
    assert_good_search(client)


def test_uploads_over_the_size_cap_are_refused_by_the_server(server, client):
    with httpx.Client(base_url=server, timeout=60) as http:
        response = upload(http, "big.png", os.urandom(1_200_000))
    assert response.status_code == 413
    assert_good_search(client)


def test_an_empty_query_asks_for_an_image(server):
    with httpx.Client(base_url=server, timeout=60) as http:
        event, data = sse_result(http, "search", [None, 3, MODEL_KEY])
    assert event == "error" and "Upload an image" in data["error"]


def test_decoding_refuses_images_over_the_pixel_cap_and_escapes_names(tmp_path):
    path = tmp_path / "<b>big&.png"
    Image.new("RGB", (40, 30)).save(path)
    with pytest.raises(
        QueryInputError, match=r"'&lt;b&gt;big&amp;.png' is 40x30 pixels, more than the 1,000"
    ):
        load_query_image(path, input_size=32, limits=UploadLimits(max_pixels=1000))


def test_large_images_are_reduced_while_decoding(tmp_path):
    path = tmp_path / "wide.jpg"
    Image.new("RGB", (1600, 1200), (1, 2, 3)).save(path, quality=90)
    image = load_query_image(path, input_size=32)
    assert image.mode == "RGB" and 64 <= min(image.size) < 200


# ------------------------------------------------------------------------------------------ paths
def test_clients_cannot_make_the_server_read_arbitrary_paths(server, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-42")
    with httpx.Client(base_url=server, timeout=60) as http:
        for target in (str(secret), "/etc/passwd"):
            event, data = sse_result(
                http, "search", [{"path": target, "meta": {"_type": "gradio.FileData"}}, 3, MODEL_KEY]
            )
            assert (
                event == "error" and "TOP-SECRET" not in json.dumps(data) and "root:" not in json.dumps(data)
            )
            served = http.get(f"gradio_api/file={target}")
            assert (
                served.status_code == 403 and "TOP-SECRET" not in served.text and "root:" not in served.text
            )
        (path,) = upload(http, "query.png", EXAMPLE.read_bytes()).json()
        event, data = sse_result(
            http, "search", [{"path": path, "meta": {"_type": "gradio.FileData"}}, 3, str(tmp_path)]
        )
        assert event == "error" and "not in the list of choices" in data["error"]


def test_unknown_model_keys_never_reach_the_loader(model_folder, tmp_path):
    service = RetrievalService(load_default_gallery().first_per_class(1), local_models(extra=model_folder))
    with pytest.raises(QueryInputError, match="Unknown model"):
        service.index(str(tmp_path))


# ------------------------------------------------------------------------------------------ load
def test_fifty_concurrent_queries_are_all_answered(server):
    """50 clients at once, each uploading, searching and fetching its thumbnails (plain HTTP: gradio_client's
    per-job polling threads would load the shared test process more than the server does)."""

    def one_client(i: int) -> tuple[int, list[tuple[int, int]]]:
        (path,) = upload(http, f"query{i}.png", EXAMPLE.read_bytes()).json()
        k = 1 + i % 5
        event, data = sse_result(
            http, "search", [{"path": path, "meta": {"_type": "gradio.FileData"}}, k, MODEL_KEY]
        )
        assert event == "complete", data
        gallery, details, _ = data
        assert len(details["neighbours"]) == k
        sizes = [Image.open(io.BytesIO(http.get(item["image"]["url"]).content)).size for item in gallery]
        return len(gallery), sizes

    with httpx.Client(base_url=server, timeout=240, limits=httpx.Limits(max_connections=64)) as http:
        with ThreadPoolExecutor(max_workers=50) as pool:
            answers = list(pool.map(one_client, range(50)))
    assert [count for count, _ in answers] == [1 + i % 5 for i in range(50)]
    assert all(size == (128, 128) for _, sizes in answers for size in sizes)  # every thumbnail complete


# ------------------------------------------------------------------------------------------ page
def test_model_card_shows_training_and_scores_from_provenance_only():
    encoder = Encoder(
        provenance={
            "method": "simclr",
            "dataset": "cifar10",
            "epochs": 30,
            "device": "cpu",
            "batch_size": 256,
            "train_seconds": 5400.0,
            "metrics": {"knn": {"k200_t0.1": {"top1": 0.7123, "top5": 0.97}}},
        }
    )
    card = model_card_markdown(FeatureExtractor(encoder, model_id="m"))
    assert "simclr on cifar10 for 30 epochs on cpu (batch 256, 90.0 min of training)" in card
    assert "kNN top-1 71.23% (k=200, t=0.1), on the cifar10 test split" in card
    unknown_shape = Encoder(provenance={"method": "byol", "metrics": {"retrieval": {"map": 0.5}}})
    assert "retrieval map 0.5" in model_card_markdown(FeatureExtractor(unknown_shape, model_id="u"))
    bare = model_card_markdown(FeatureExtractor(Encoder(), model_id="bare"))
    assert "none recorded" in bare and "randomly" in bare and "0." not in bare.split("**Training:**")[1]


def test_each_score_stands_beside_chance_and_the_published_numbers_of_its_method():
    provenance = {
        "method": "simclr",
        "dataset": "cifar10",
        "epochs": 4,
        "metrics": {
            "knn": [{"top1": 50.08, "k": 200, "t": 0.1}],
            "linear": [{"top1": 61.05, "protocol": "fast"}],
        },
    }
    table = serve_app.scores_context_markdown(provenance, "resnet18")
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert (
        "**50.08 %** (k=200)" in rows["this model, 4 epochs"]
        and "**61.05 %**" in rows["this model, 4 epochs"]
    )
    assert rows["chance (10 classes)"].count("10 %") == 2
    lightly = next(line for key, line in rows.items() if "200 epochs" in key and "lightly" in key)
    assert "84.8 % (k=200)" in lightly and "github.com/lightly-ai/lightly" in lightly
    assert any("90.74 %" in line and "solo-learn" in line for line in rows.values())
    on_cifar100 = serve_app.scores_context_markdown({**provenance, "dataset": "cifar100"}, "resnet18")
    assert "chance (100 classes) | 1 % |" in on_cifar100 and "65.78 %" in on_cifar100
    mixco = serve_app.scores_context_markdown({**provenance, "method": "mixco", "host": "mocov2"}, "resnet18")
    assert "mocov2 (the host method)" in mixco and "84.7 %" in mixco
    minc = serve_app.scores_context_markdown({**provenance, "method": "minc"}, "resnet18")
    assert "no published resnet18 number" in minc and "chance (10 classes)" in minc
    assert serve_app.scores_context_markdown({"method": "simclr", "dataset": "cifar10"}, "resnet18") == ""


def test_links_name_the_card_paper_and_code_of_the_served_method(model_folder):
    bundled = serve_app.ModelChoice("simclr-resnet18-cifar10", "x", "simclr-resnet18-cifar10")
    links = serve_app.links_markdown(bundled, {"method": "simclr"})
    assert "[paper](https://arxiv.org/abs/2002.05709)" in links
    assert "[official code](https://github.com/google-research/simclr)" in links and "model card" in links
    card = serve_app.model_card_text(bundled)
    assert card.startswith("# simclr-resnet18-cifar10") and "50.08" in card and "![" not in card
    assert not card.startswith("---")  # the Hub metadata header is not shown
    hub = serve_app.links_markdown(ModelChoice("h", "h", "hf-hub:org/run@v1"), {"method": "byol"})
    assert "[model card](https://huggingface.co/org/run)" in hub and "2006.07733" in hub
    minc = serve_app.links_markdown(ModelChoice("m", "m", str(model_folder)), {"method": "minc"})
    assert "arxiv.org/abs/2504.16667" in minc and "no official code published" in minc


def test_the_menu_lists_hub_models_and_counts_the_entries_without_weights(monkeypatch):
    from sslzoo import registry

    data = registry.registry_data()
    hub_name = "byol-resnet18-cifar10"
    next(entry for entry in data["models"] if entry["name"] == hub_name)["weights"] = "hub"
    monkeypatch.setattr(registry, "_load", lambda: data)
    choices = {choice.key: choice.label for choice in local_models()}
    assert "Hub" in choices[hub_name] and "bundled" in choices["simclr-resnet18-cifar10"]
    missing = serve_app.unavailable_models()
    assert hub_name not in missing and "simclr-resnet18-cifar10" not in missing
    assert len(missing) == len(data["models"]) - 2 and not set(missing) & set(choices)


def test_local_models_lists_the_served_model_then_sslzoo_home_folders(model_folder, tmp_path, monkeypatch):
    home = tmp_path / "home"
    Encoder().save_pretrained(home / "my-run")
    (home / "half-written").mkdir(parents=True)
    monkeypatch.setenv("SSLZOO_HOME", str(home))
    keys = [choice.key for choice in local_models(extra=model_folder)]
    assert keys[0] == MODEL_KEY and "my-run" in keys and "half-written" not in keys


# ------------------------------------------------------------------------------------------ CLI
def test_cli_help_explains_every_option():
    result = CliRunner().invoke(cli.main, ["--help"])
    assert result.exit_code == 0
    for option in (
        "--model",
        "--gallery",
        "--backend",
        "--host",
        "--port",
        "--index-cache",
        "--max-file-size",
        "--max-query-batch",
        "--upload-space",
        "--auth",
        "--auth-file",
    ):
        assert option in result.output
    assert "127.0.0.1" in result.output and "/search" in result.output


def test_cli_without_a_bundled_default_says_what_to_pass(monkeypatch):
    monkeypatch.setattr(cli, "default_model", lambda: None)
    result = CliRunner().invoke(cli.main, [])
    assert result.exit_code == 2
    assert "No default encoder is bundled" in result.output and "--model" in result.output


def test_cli_wires_options_into_the_server(model_folder, tmp_path, monkeypatch):
    gallery = tmp_path / "gallery"
    for name, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (gallery / name).mkdir(parents=True)
        Image.new("RGB", (16, 16), colour).save(gallery / name / "a.png")
    launched = {}

    def fake_launch(demo, **kwargs):
        launched.update(kwargs, demo=demo)
        return "http://127.0.0.1:1/"

    monkeypatch.setattr(serve_app, "launch", fake_launch)  # the command imports the demo when it runs
    monkeypatch.setattr(gr.Blocks, "block_thread", lambda self: None)
    result = CliRunner().invoke(
        cli.main,
        [
            "--model",
            str(model_folder),
            "--gallery",
            str(gallery),
            "--index-cache",
            str(tmp_path / "cache"),
            "--max-file-size",
            "2mb",
            "--backend",
            "torch",
        ],
    )
    assert result.exit_code == 0, result.output
    assert launched["host"] == "127.0.0.1" and launched["max_file_size"] == "2mb"
    assert (
        cli.DEFAULT_PORT <= launched["port"] < cli.DEFAULT_PORT + cli.PORT_TRIES
    )  # the first free one, checked first
    page = launched["demo"]  # the page was built: its model card names the served folder
    assert any(MODEL_KEY in str(getattr(block, "value", "")) for block in page.blocks.values())
    assert len(list((tmp_path / "cache" / "indexes").iterdir())) == 1
    assert "open http://127.0.0.1:1/" in result.output


def test_cli_checks_host_and_port_before_preparing_anything(model_folder, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("preparation started before the address was checked")

    monkeypatch.setattr(serve_app, "RetrievalService", never)
    monkeypatch.setattr(serve_gallery, "resolve_gallery", never)
    runner = CliRunner()
    result = runner.invoke(cli.main, ["--model", str(model_folder), "--host", "no-such-host.invalid"])
    assert result.exit_code == 2 and "'no-such-host.invalid' does not resolve" in result.output
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = runner.invoke(cli.main, ["--model", str(model_folder), "--port", str(port)])
    assert result.exit_code == 2 and f"port {port} on 127.0.0.1 is in use" in result.output
    result = runner.invoke(
        cli.main, ["--model", str(model_folder), "--host", "192.0.2.1"]
    )  # not this machine
    assert result.exit_code == 2 and "cannot listen on 192.0.2.1" in result.output


def test_cli_warns_when_open_to_the_network_and_wires_logins(model_folder, tmp_path, monkeypatch):
    launched = {}

    def fake_launch(demo, **kwargs):
        launched.update(kwargs)
        return "http://0.0.0.0:1/"

    monkeypatch.setattr(serve_app, "launch", fake_launch)  # the command imports the demo when it runs
    monkeypatch.setattr(gr.Blocks, "block_thread", lambda self: None)
    monkeypatch.delenv("SSLZOO_SERVE_AUTH", raising=False)
    base = ["--model", str(model_folder), "--backend", "torch", "--index-cache", str(tmp_path / "cache")]
    result = CliRunner().invoke(cli.main, [*base, "--host", "0.0.0.0", "--max-query-batch", "1"])
    assert result.exit_code == 0, result.output
    assert "Warning: --host 0.0.0.0 lets anyone who can reach this machine use the demo" in result.output
    assert "--auth USER:PASSWORD" in result.output and launched["auth"] is None
    logins = tmp_path / "logins.txt"
    logins.write_text("# who may log in\nada:lovelace\ngrace:hop:per\n")
    result = CliRunner().invoke(
        cli.main, [*base, "--host", "0.0.0.0", "--auth", "alan:turing", "--auth-file", str(logins)]
    )
    assert result.exit_code == 0, result.output
    assert "Warning" not in result.output and "login required (3 user(s))" in result.output
    assert launched["auth"] == [("alan", "turing"), ("ada", "lovelace"), ("grace", "hop:per")]
    result = CliRunner().invoke(cli.main, [*base, "--auth", "no-colon"])
    assert result.exit_code == 2 and "write USER:PASSWORD" in result.output
