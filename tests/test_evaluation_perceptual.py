"""LPIPS and DreamSim through their packages; these need torchvision, so `make test` runs them in .venv-torchvision
(torch 2.14.1 + torchvision 0.29.1) with `pytest -m torchvision`."""

import inspect

import pytest
import torch
from evaluation_helpers import write_pool_folder

from training.evaluation.embed import embed_pool, read_image
from training.evaluation.embedding_cache import EmbeddingCache
from training.evaluation.methods.perceptual import DreamSimMethod, LpipsMethod
from training.evaluation.pool import read_pool
from training.evaluation.retrieval import retrieve


pytestmark = pytest.mark.torchvision


@pytest.fixture(scope="module")
def lpips_method():
    torch.manual_seed(0)
    return LpipsMethod(net="alex", image_size=64, pretrained_backbone=False)


def test_lpips_feature_distance_equals_the_lpips_network(lpips_method):
    torch.manual_seed(1)
    first, second = torch.rand(4, 3, 64, 64) * 2 - 1, torch.rand(4, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        expected = lpips_method.model(first, second).flatten()
        phi_first, phi_second = lpips_method.features(first), lpips_method.features(second)
    assert phi_first.shape == (4, 31872)
    torch.testing.assert_close(((phi_first - phi_second) ** 2).sum(1), expected, rtol=1e-4, atol=1e-6)


def test_lpips_retrieval_ranks_as_the_pairwise_network(lpips_method, tmp_path):
    items = read_pool(write_pool_folder(tmp_path / "pool", groups=2, per_group=3, distractors=3))
    cache = EmbeddingCache(tmp_path / "lpips", lpips_method.cache_identity())
    report = embed_pool(lpips_method, items, cache, batch_size=4, show_progress=False)
    assert report.embedded == 9 and cache.metric == "l2"
    [found] = retrieve(cache, items, ["g0_0"], top_k=8)
    pixels = lpips_method.preprocess([read_image(item.image)[0] for item in items])
    with torch.no_grad():
        distances = lpips_method.model(pixels[:1].expand(len(items), -1, -1, -1), pixels).flatten()
    expected = [items[index].image_hash for index in distances.argsort().tolist() if index != 0]
    assert found.neighbours == expected
    torch.testing.assert_close(-torch.tensor(found.scores), distances.sort().values[1:], rtol=1e-4, atol=1e-6)


def test_dreamsim_adapter_calls_the_package_as_documented(monkeypatch):
    import dreamsim

    parameters = inspect.signature(dreamsim.dreamsim).parameters
    assert {"pretrained", "device", "cache_dir", "dreamsim_type"} <= set(parameters)
    calls = {}

    class Embedder(torch.nn.Module):
        def embed(self, pixels):
            return pixels.mean((2, 3)) * 3.0

    def fake_dreamsim(**kwargs):
        calls.update(kwargs)
        return (
            Embedder(),
            lambda image: torch.ones(1, 3, 8, 8) * torch.tensor(image.getpixel((0, 0)))[None, :, None, None],
        )

    monkeypatch.setattr(dreamsim, "dreamsim", fake_dreamsim)
    method = DreamSimMethod(cache_dir="/tmp/dreamsim-cache", device="cpu")
    assert calls == {"pretrained": True, "device": "cpu", "cache_dir": "/tmp/dreamsim-cache",
                     "dreamsim_type": "ensemble"}  # fmt: skip
    import PIL.Image

    images = [PIL.Image.new("RGB", (8, 8), (3, 4, 0)), PIL.Image.new("RGB", (8, 8), (0, 0, 5))]
    embedded = method.embed(method.preprocess(images), ["a", "b"])
    torch.testing.assert_close(embedded, torch.tensor([[0.6, 0.8, 0.0], [0.0, 0.0, 1.0]]))
