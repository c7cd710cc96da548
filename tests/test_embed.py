"""sslzoo-embed: folders, lists and globs into safetensors / .npy / a FAISS index; skips, resume, refusals."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import struct
import subprocess
import sys
import termios

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.numpy import load_file
from sslzoo.serve import embed as embed_module
from sslzoo.serve.embed import EmbeddingMismatchError, embed_images, read_embeddings
from sslzoo.serve.embed_cli import EXIT_MORE_TO_DO, main
from sslzoo.serve.extractor import FeatureExtractor
from sslzoo.serve.gallery import resolve_gallery
from sslzoo.serve.image_files import find_images
from sslzoo.serve.index import GalleryIndex, IndexMismatchError

import sslzoo
from sslzoo import ConfigError, Encoder


def write_pngs(folder, count: int, seed: int = 0, classes: tuple[str, ...] = ("cat", "dog")) -> list:
    """`count` random PNGs of varied sizes, spread over one subfolder per class."""
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        sub = folder / classes[index % len(classes)]
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"{seed}-{index:03d}.png"
        Image.fromarray(rng.integers(0, 256, size=(20 + index % 13, 36, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def break_two(folder) -> list:
    """A text file named like a PNG and a truncated PNG."""
    not_png = folder / "cat" / "notes.png"
    not_png.write_bytes(b"this is not an image")
    good = next((folder / "dog").glob("*.png")).read_bytes()
    truncated = folder / "dog" / "truncated.png"
    truncated.write_bytes(good[: len(good) // 2])
    return [not_png, truncated]


@pytest.fixture(scope="module")
def tiny() -> FeatureExtractor:
    torch.manual_seed(0)
    return FeatureExtractor(Encoder(provenance={"name": "tiny"}), batch_size=8, model_id="tiny")


@pytest.fixture(scope="module")
def other() -> FeatureExtractor:
    torch.manual_seed(1)
    return FeatureExtractor(Encoder(provenance={"name": "other"}), batch_size=8, model_id="other")


def test_the_default_model_embeds_fifty_pngs_like_encoder_embed_and_names_two_broken_files(tmp_path):
    folder = tmp_path / "photos"
    write_pngs(folder, 50)
    broken = break_two(folder)
    out = tmp_path / "f.safetensors"
    result = CliRunner().invoke(main, ["simclr-resnet18-cifar10", str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    embeddings = load_file(str(out))["embeddings"]
    sidecar = json.loads((tmp_path / "f.safetensors.json").read_text())
    assert embeddings.shape == (50, 512) and embeddings.dtype == np.float32
    expected = sslzoo.load("simclr-resnet18-cifar10").embed(sidecar["files"]["paths"]).numpy()
    np.testing.assert_allclose(embeddings, expected, atol=1e-5, rtol=0)
    assert sorted(item["path"] for item in sidecar["skipped"]) == sorted(str(path) for path in broken)
    for path in broken:
        assert str(path) in result.stderr
    assert "Skipped 2 file(s)" in result.stderr and "Embedded 50 image(s)" in result.stdout
    assert sidecar["model"]["id"] == "simclr-resnet18-cifar10" and sidecar["class_names"] == ["cat", "dog"]
    assert sidecar["files"]["ids"][0] == "cat/0-000.png"


def test_rows_follow_the_input_order_with_ids_and_classes(tiny, tmp_path):
    paths = write_pngs(tmp_path / "in", 6)
    report = embed_images(tiny, [tmp_path / "in"], tmp_path / "e.npy", progress=False)
    matrix, sidecar = read_embeddings(tmp_path / "e.npy")
    assert report.rows == 6 and matrix.shape == (6, 512)
    assert sidecar["files"]["paths"] == sorted(str(path) for path in paths)
    assert [sidecar["class_names"][label] for label in sidecar["files"]["labels"]] == [
        path.split("/")[-2] for path in sidecar["files"]["paths"]
    ]
    np.testing.assert_allclose(matrix, tiny.encoder.embed(sidecar["files"]["paths"]).numpy(), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)


def test_a_growing_folder_embeds_only_new_and_changed_files_and_drops_removed_ones(
    tiny, tmp_path, monkeypatch
):
    folder = tmp_path / "in"
    first = write_pngs(folder, 10)
    out = tmp_path / "e.safetensors"
    assert embed_images(tiny, [folder], out, progress=False).embedded == 10
    added = write_pngs(folder, 3, seed=1)
    Image.new("RGB", (30, 30), (255, 0, 0)).save(first[0])  # same name, new content
    os.utime(first[0], ns=(1, 1))  # an mtime that cannot match the recorded one
    first[1].unlink()
    embedded: list[int] = []
    original = tiny.embed_tensor
    monkeypatch.setattr(tiny, "embed_tensor", lambda batch: embedded.append(len(batch)) or original(batch))
    report = embed_images(tiny, [folder], out, progress=False)
    assert (report.embedded, report.reused, report.dropped, report.rows) == (4, 8, 2, 12)
    assert sum(embedded) == 4  # the three new files and the changed one; nothing else was run again
    matrix, sidecar = read_embeddings(out)
    assert str(first[1]) not in sidecar["files"]["paths"] and str(added[0]) in sidecar["files"]["paths"]
    np.testing.assert_allclose(matrix, tiny.encoder.embed(sidecar["files"]["paths"]).numpy(), atol=1e-5)
    again = embed_images(tiny, [folder], out, progress=False)
    assert (again.embedded, again.reused) == (0, 12)


def test_another_models_output_is_refused_unless_overwritten(tiny, other, tmp_path):
    write_pngs(tmp_path / "in", 3)
    out = tmp_path / "e.npy"
    embed_images(tiny, [tmp_path / "in"], out, progress=False)
    with pytest.raises(EmbeddingMismatchError, match="not comparable"):
        embed_images(other, [tmp_path / "in"], out, progress=False)
    report = embed_images(other, [tmp_path / "in"], out, progress=False, overwrite=True)
    assert report.embedded == 3 and read_embeddings(out)[1]["model"]["id"] == "other"


def test_an_output_without_its_sidecar_is_not_replaced(tiny, tmp_path):
    write_pngs(tmp_path / "in", 2)
    out = tmp_path / "mine.npy"
    np.save(out, np.zeros(3))
    with pytest.raises(ConfigError, match="not written by sslzoo-embed"):
        embed_images(tiny, [tmp_path / "in"], out, progress=False)
    assert np.load(out).shape == (3,)


def test_an_interrupted_run_keeps_its_work_and_the_next_one_finishes(tiny, tmp_path, monkeypatch):
    folder = tmp_path / "in"
    write_pngs(folder, 20)
    out = tmp_path / "e.safetensors"
    original, calls = tiny.embed_tensor, []

    def stop_at_the_second_batch(batch):
        calls.append(len(batch))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(batch)

    monkeypatch.setattr(tiny, "embed_tensor", stop_at_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        embed_images(tiny, [folder], out, progress=False)
    partial, sidecar = read_embeddings(out)
    assert partial.shape == (8, 512) and sidecar["complete"] is False
    monkeypatch.setattr(tiny, "embed_tensor", original)
    report = embed_images(tiny, [folder], out, progress=False)
    assert (report.reused, report.embedded, report.rows) == (8, 12, 20)
    assert read_embeddings(out)[1]["complete"] is True


def test_sigterm_in_the_command_saves_and_exits_75(tmp_path, monkeypatch):
    write_pngs(tmp_path / "in", 3)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # what the command's SIGTERM handler raises

    monkeypatch.setattr("sslzoo.serve.embed.embed_images", killed)  # imported by the command when it runs
    result = CliRunner().invoke(main, ["m", str(tmp_path / "in"), "--out", str(tmp_path / "e.npy")])
    assert result.exit_code == EXIT_MORE_TO_DO and "Run the same command again" in result.stderr


def test_a_faiss_folder_is_served_without_embedding_again_and_refuses_another_model(tiny, other, tmp_path):
    folder = tmp_path / "in"
    paths = write_pngs(folder, 9, classes=("apple", "boat", "cloud"))
    out = tmp_path / "index"
    report = embed_images(tiny, [folder], out, progress=False)
    assert report.format == "faiss" and (out / "index.faiss").is_file() and (out / "embedding.json").is_file()
    gallery = resolve_gallery(out)  # what sslzoo-serve --gallery OUT opens
    assert len(gallery) == 9 and gallery.class_names == ["apple", "boat", "cloud"]

    def no_embedding(*args, **kwargs):
        raise AssertionError("the gallery was embedded again")

    serving = FeatureExtractor(tiny.encoder, model_id="tiny")
    serving.embed = no_embedding  # type: ignore[method-assign]
    index = GalleryIndex.cached(serving, gallery, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
    (result,) = index.search_features(tiny.embed([str(paths[4])]), k=2)
    assert result.paths[0] == str(paths[4]) and result.class_names[0] == "boat"
    with pytest.raises(IndexMismatchError, match="not of 'other'"):
        GalleryIndex.cached(other, gallery, tmp_path / "cache")
    assert embed_images(tiny, [folder], out, progress=False).reused == 9  # a FAISS output resumes too


def test_lists_globs_and_single_files_are_inputs_too(tiny, tmp_path, monkeypatch):
    paths = write_pngs(tmp_path / "in", 6)
    listing = tmp_path / "in" / "list.txt"
    listing.write_text(
        f"# two files and one that is gone\n{paths[0].relative_to(tmp_path / 'in')}\n\n{paths[1]}\nmissing.png\n"
    )
    (tmp_path / "in" / ".hidden").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "in" / ".hidden" / "x.png")
    files, missing = find_images([listing, str(tmp_path / "in" / "dog" / "*.png"), paths[0]])
    assert [image.path for image in files] == [paths[0], paths[1], paths[3], paths[5]]
    assert [item.path for item in missing] == [str(tmp_path / "in" / "missing.png")]
    assert [image.label for image in files] == ["cat", "dog", "dog", "dog"]
    assert len(find_images([tmp_path / "in"])[0]) == 6  # the hidden folder is left out
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{paths[2]}\n"))
    assert [image.path for image in find_images(["-"])[0]] == [paths[2]]
    report = embed_images(tiny, [listing], tmp_path / "e.npy", progress=False)
    assert report.rows == 2 and [item.reason for item in report.skipped] == [
        f"no such file (listed in {listing})"
    ]


def test_bad_inputs_and_outputs_say_what_to_do(tiny, tmp_path):
    with pytest.raises(ConfigError, match="no such file or folder"):
        find_images([tmp_path / "nothing-here"])
    with pytest.raises(ConfigError, match="matches no file"):
        find_images([str(tmp_path / "*.png")])
    with pytest.raises(ConfigError, match="unknown output suffix"):
        embed_images(tiny, [tmp_path], tmp_path / "out.csv", progress=False)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="None of the input files is a readable image"):
        embed_images(tiny, [tmp_path / "in"], tmp_path / "e.npy", progress=False)
    assert not (tmp_path / "e.npy").exists()


@pytest.mark.slow
def test_onnx_runtime_rows_agree_with_pytorch(tiny, tmp_path):
    write_pngs(tmp_path / "in", 5)
    onnx = FeatureExtractor(tiny.encoder, backend="onnx", cache_dir=tmp_path / "cache", model_id="tiny")
    embed_images(onnx, [tmp_path / "in"], tmp_path / "onnx.npy", progress=False)
    embed_images(tiny, [tmp_path / "in"], tmp_path / "torch.npy", progress=False)
    np.testing.assert_allclose(np.load(tmp_path / "onnx.npy"), np.load(tmp_path / "torch.npy"), atol=1e-4)
    assert read_embeddings(tmp_path / "onnx.npy")[1]["model"]["backend"] == "onnx"


def test_work_is_saved_periodically(tiny, tmp_path, monkeypatch):
    write_pngs(tmp_path / "in", 17)
    saves: list[bool] = []
    original = embed_module._Writer.write

    def counting(self, rows, vectors, stats, skipped, complete):
        saves.append(complete)
        return original(self, rows, vectors, stats, skipped, complete)

    monkeypatch.setattr(embed_module._Writer, "write", counting)
    embed_images(tiny, [tmp_path / "in"], tmp_path / "e.npy", progress=False, save_every=0)
    assert saves == [False, False, False, True]  # after each of the 3 batches, then the final save


@pytest.mark.slow
def test_sslzoo_embed_in_a_real_terminal_and_in_a_pipe(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(3):
        Image.fromarray(np.full((8, 8, 3), index * 40, np.uint8)).save(folder / f"{index}.png")
    Encoder().save_pretrained(tmp_path / "model")
    command = [sys.executable, "-m", "sslzoo.serve.embed_cli", str(tmp_path / "model"), str(folder)]
    piped = subprocess.run([*command, "--out", str(tmp_path / "a.npy")], capture_output=True, text=True)
    assert piped.returncode == 0, piped.stderr
    assert "embedding into a.npy: 0/3 img (0%)" in piped.stderr and "\r" not in piped.stderr
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a fresh pty is 0 wide
    process = subprocess.Popen([*command, "--out", str(tmp_path / "b.npy")], stderr=follower, stdout=follower)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed: the process ended
            break
        if not chunk:
            break
        seen += chunk
    assert process.wait(timeout=120) == 0
    assert b"\r" in seen and b"3/3" in seen and b"img/s]" in seen and b"(100%)" not in seen
