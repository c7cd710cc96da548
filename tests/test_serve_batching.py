"""Concurrent queries share forward passes: `MicroBatcher` alone, then through `RetrievalService`."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image
from sslzoo.serve.app import RetrievalService, local_models
from sslzoo.serve.batching import MicroBatcher
from sslzoo.serve.gallery import assets_dir, load_default_gallery

from sslzoo import Encoder


def test_a_lone_item_runs_at_once_and_gets_its_own_result():
    batcher = MicroBatcher(lambda items: [item * 2 for item in items], max_batch_size=8)
    result, info = batcher(21)
    assert result == 42 and info.size == 1
    batcher.close()


def test_items_that_wait_together_run_as_one_batch_in_order():
    sizes: list[int] = []
    release = threading.Event()

    def run(items: list[int]) -> list[int]:
        sizes.append(len(items))
        if len(sizes) == 1:
            release.wait(10)  # hold the first batch while the others queue up
        return [item + 100 for item in items]

    batcher = MicroBatcher(run, max_batch_size=4)
    first = batcher.submit(0)
    time.sleep(0.2)
    rest = [batcher.submit(i) for i in range(1, 10)]
    release.set()
    answers = [future.result(10) for future in [first, *rest]]
    assert [result for result, _ in answers] == [100 + i for i in range(10)]
    assert sizes == [1, 4, 4, 1]
    assert [info.size for _, info in answers] == [1, 4, 4, 4, 4, 4, 4, 4, 4, 1]
    batcher.close()


def test_a_failing_batch_fails_its_callers_only():
    def run(items: list[int]) -> list[int]:
        if -1 in items:
            raise RuntimeError("model failed")
        return items

    batcher = MicroBatcher(run, max_batch_size=1)
    with pytest.raises(RuntimeError, match="model failed"):
        batcher(-1)
    assert batcher(5)[0] == 5
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(1)


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models") / "tiny-batching"
    Encoder(provenance={"name": "tiny-batching"}).save_pretrained(folder)
    return folder


def test_batched_answers_equal_one_at_a_time_answers(model_folder, tmp_path):
    gallery = load_default_gallery().first_per_class(2)
    queries = []
    for index, path in enumerate(sorted(assets_dir().glob("example-*.png"))):
        target = tmp_path / path.name
        Image.open(path).resize((40 + index, 32)).save(target)
        queries.append(str(target))
    services = {
        batch: RetrievalService(
            gallery, local_models(extra=model_folder), cache_dir=tmp_path / "cache", max_query_batch=batch
        )
        for batch in (1, 8)
    }
    alone = [services[1].search(path, 3 + i % 4, None) for i, path in enumerate(queries)]
    with ThreadPoolExecutor(max_workers=len(queries)) as pool:
        together = list(
            pool.map(lambda item: services[8].search(item[1], 3 + item[0] % 4, None), enumerate(queries))
        )
    for (result, _), (expected, _) in zip(together, alone):
        assert result.ids == expected.ids
        np.testing.assert_allclose(result.scores, expected.scores, atol=1e-5)
    assert all(timings["batch"] == 1 for _, timings in alone)
    assert max(timings["batch"] for _, timings in together) > 1, "concurrent queries shared a forward pass"
    vector = services[8].embed(queries[0], None)
    np.testing.assert_allclose(vector, services[1].embed(queries[0], None), atol=1e-5)
    assert services[1].concurrency == 1 and services[8].concurrency == 16
    for service in services.values():
        service.close()
