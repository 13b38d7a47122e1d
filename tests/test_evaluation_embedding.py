"""The pool manifest, the embedding cache and the resumable pool embedding."""

import json

import PIL.Image
import pytest
import torch
from evaluation_helpers import MeanColourMethod, write_pool_folder

from training.evaluation.embed import embed_pool
from training.evaluation.embedding_cache import EmbeddingCache
from training.evaluation.methods.relsim import RelSimMethod
from training.evaluation.pool import PoolItem, read_pool
from training.tiny_backbone import build_tiny_model


def test_read_pool_resolves_relative_images_and_keeps_fields(tmp_path):
    items = read_pool(write_pool_folder(tmp_path / "pool"))
    assert len(items) == 13
    first = items[0]
    assert first.image == str(tmp_path / "pool" / "g0_0.png")
    assert (first.split, first.group_id, first.caption) == ("test", 0, "arrange {Object}s from small to large")
    assert items[-1].split == "distractor" and items[-1].caption is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"image_hash": "a", "image": "a.png", "split": "train"}', ":2: field 'split' must be one of"),
        ('{"image": "a.png", "split": "test"}', ":2: field 'image_hash' is missing"),
        ('{"image_hash": "a", "image": "a.png", "split": "test", "group_id": "7"}', ":2: field 'group_id'"),
        ('{"image_hash": "x", "image": "b.png", "split": "test"}', ":2: image_hash 'x' already on line 1"),
        ("not json", ":2: <line>: malformed JSON"),
        ("[1, 2]", ":2: <line>: expected a JSON object"),
    ],
)
def test_read_pool_names_file_line_and_field(tmp_path, line, message):
    manifest = tmp_path / "pool.jsonl"
    manifest.write_text('{"image_hash": "x", "image": "x.png", "split": "test"}\n' + line + "\n")
    with pytest.raises(ValueError, match=message) as error:
        read_pool(manifest)
    assert str(manifest) in str(error.value)


def test_cache_round_trip_in_requested_order(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache", {"method": "m", "metric": "cosine"})
    vectors = torch.randn(3, 4)
    cache.add(["a", "b", "c"], ["da", "db", "dc"], vectors)
    cache.add(["d", "a"], ["dd", "da"], torch.randn(2, 4))  # "a" again: the first embedding is kept
    reopened = EmbeddingCache.open(tmp_path / "cache")
    hashes, loaded = reopened.load(["c", "a", "d"])
    assert hashes == ["c", "a", "d"] and len(reopened) == 4
    torch.testing.assert_close(loaded[:2], vectors[[2, 0]])
    assert reopened.content_digests["d"] == "dd"
    with pytest.raises(KeyError, match="1 images are not in"):
        reopened.load(["zz"])


def test_cache_refuses_another_methods_vectors(tmp_path):
    EmbeddingCache(tmp_path / "cache", {"method": "clip-i", "metric": "cosine", "model": "a"})
    with pytest.raises(ValueError, match="use another folder per method"):
        EmbeddingCache(tmp_path / "cache", {"method": "clip-i", "metric": "cosine", "model": "b"})


def test_embed_pool_resumes_after_an_interruption(tmp_path):
    items = read_pool(write_pool_folder(tmp_path / "pool"))
    method = MeanColourMethod(fail_after_batches=3)
    cache = EmbeddingCache(tmp_path / "cache", method.cache_identity())
    with pytest.raises(KeyboardInterrupt):
        embed_pool(method, items, cache, batch_size=2, flush_every=2, show_progress=False)
    assert len(cache) == 6  # three finished batches of two: the shard of two and the unflushed third batch

    resumed = MeanColourMethod()
    report = embed_pool(resumed, items, EmbeddingCache(tmp_path / "cache", resumed.cache_identity()), batch_size=2,
                        show_progress=False)  # fmt: skip
    assert (report.already_cached, report.embedded, resumed.calls) == (6, 7, 4)

    fresh = MeanColourMethod()
    fresh_cache = EmbeddingCache(tmp_path / "fresh", fresh.cache_identity())
    embed_pool(fresh, items, fresh_cache, batch_size=5, show_progress=False)
    order = [item.image_hash for item in items]
    torch.testing.assert_close(EmbeddingCache.open(tmp_path / "cache").load(order)[1], fresh_cache.load(order)[1])


def test_unreadable_images_are_reported_counted_and_left_out(tmp_path):
    manifest = write_pool_folder(tmp_path / "pool")
    (tmp_path / "pool" / "g1_1.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (tmp_path / "pool" / "d0.png").unlink()
    method = MeanColourMethod()
    cache = EmbeddingCache(tmp_path / "cache", method.cache_identity())
    report = embed_pool(method, read_pool(manifest), cache, batch_size=4, show_progress=False)
    assert report.embedded == 11 and len(report.failures) == 2
    assert {failure["image_hash"] for failure in report.failures} == {"g1_1", "d0"}
    assert "g1_1" not in cache and "d0" not in cache
    logged = [json.loads(line) for line in (cache.folder / "failures.jsonl").read_text().splitlines()]
    assert {entry["image"] for entry in logged} == {
        str(tmp_path / "pool" / "g1_1.png"),
        str(tmp_path / "pool" / "d0.png"),
    }
    assert all(entry["reason"] for entry in logged)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_an_image_the_processor_refuses_is_a_failure_and_the_rest_are_kept(aspect_processor, tmp_path, num_workers):
    items = read_pool(write_pool_folder(tmp_path / "pool"))
    PIL.Image.new("RGB", (5000, 1), (90, 90, 90)).save(tmp_path / "sliver.png")  # decodes; no crop="none" size fits
    items.insert(5, PoolItem("sliver", str(tmp_path / "sliver.png"), "distractor"))
    method = RelSimMethod("tiny", model=build_tiny_model(aspect_processor), processor=aspect_processor)
    cache = EmbeddingCache(tmp_path / "cache", method.cache_identity())
    report = embed_pool(method, items, cache, batch_size=4, num_workers=num_workers, show_progress=False)
    assert report.embedded == 13 and len(cache) == 13 and "sliver" not in cache
    assert [failure["image_hash"] for failure in report.failures] == ["sliver"]
    assert "aspect ratio" in report.failures[0]["reason"] and report.failures[0]["image"].endswith("sliver.png")
    logged = [json.loads(line) for line in (cache.folder / "failures.jsonl").read_text().splitlines()]
    assert [entry["image_hash"] for entry in logged] == ["sliver"]
    with torch.no_grad():
        alone = method.model(**aspect_processor([items[6].image])).image_embeds
    torch.testing.assert_close(cache.load([items[6].image_hash])[1], alone, atol=1e-5, rtol=0)

    again = embed_pool(method, items, cache, batch_size=4, show_progress=False)  # a rerun does not die either
    assert (again.already_cached, again.embedded, len(again.failures)) == (13, 0, 1)
