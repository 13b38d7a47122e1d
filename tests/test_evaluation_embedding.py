"""The pool manifest, the embedding cache (content-keyed, verified shards) and the resumable pool embedding."""

import json

import numpy as np
import PIL.Image
import pytest
import torch
from evaluation_helpers import MeanColourMethod, save_tiny_clip, write_pool_folder

from training.evaluation.embed import embed_pool
from training.evaluation.embedding_cache import EmbeddingCache
from training.evaluation.methods.relsim import RelSimMethod
from training.evaluation.pool import PoolItem, read_pool
from training.image_ids import file_sha256
from training.store import read_shard
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


def embed_fresh(items, folder):
    method = MeanColourMethod()
    cache = EmbeddingCache(folder, method.cache_identity())
    embed_pool(method, items, cache, batch_size=5, show_progress=False)
    return cache.load([item.image_hash for item in items])[1]


def shard_holding(folder, image_hash):
    [path] = [path for path in folder.glob("shard-*.safetensors") if image_hash in read_shard(path)[0].keys]
    return path


def test_deleting_a_shard_and_rerunning_loses_nothing(tmp_path):
    items = read_pool(write_pool_folder(tmp_path / "pool"))
    method = MeanColourMethod()
    embed_pool(method, items, EmbeddingCache(tmp_path / "cache", method.cache_identity()), batch_size=2,
               flush_every=1, show_progress=False)  # fmt: skip
    shards = sorted((tmp_path / "cache").glob("shard-*.safetensors"))
    deleted = shard_holding(tmp_path / "cache", "g1_1")  # a shard of two: g1_1 and g1_2
    assert len(shards) == 7
    deleted.unlink()
    rerun = MeanColourMethod()
    report = embed_pool(rerun, items, EmbeddingCache(tmp_path / "cache", rerun.cache_identity()), batch_size=2,
                        flush_every=1, show_progress=False)  # fmt: skip
    assert (report.already_cached, report.embedded) == (11, 2)
    reopened = EmbeddingCache.open(tmp_path / "cache")
    assert len(reopened) == 13 and all(path.is_file() for path in shards if path != deleted)
    order = [item.image_hash for item in items]
    torch.testing.assert_close(reopened.load(order)[1], embed_fresh(items, tmp_path / "fresh"))


def damage_header(path):
    path.write_bytes(b"\x00" * 16 + path.read_bytes()[16:])


def damage_rows(path):
    data = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    data[start:] = np.array([np.nan, 1e36] * ((len(data) - start) // 8), dtype=np.float32).tobytes()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [damage_header, damage_rows], ids=["header", "rows"])
def test_a_damaged_shard_is_named_never_used_and_embedded_again(tmp_path, caplog, damage):
    items = read_pool(write_pool_folder(tmp_path / "pool"))
    method = MeanColourMethod()
    embed_pool(method, items, EmbeddingCache(tmp_path / "cache", method.cache_identity()), batch_size=4,
               flush_every=1, show_progress=False)  # fmt: skip
    damaged = shard_holding(tmp_path / "cache", "g0_0")  # a shard of four
    damage(damaged)
    reopened = EmbeddingCache.open(tmp_path / "cache")
    assert str(damaged) in caplog.text and list(reopened.damaged_shards) == [damaged]
    assert len(reopened) == 9  # the damaged shard's four rows count as missing
    hashes, vectors = reopened.load()
    assert len(hashes) == 9 and bool(torch.isfinite(vectors).all()) and float(vectors.abs().max()) <= 1.0

    rerun = MeanColourMethod()
    report = embed_pool(rerun, items, EmbeddingCache(tmp_path / "cache", rerun.cache_identity()), batch_size=4,
                        show_progress=False)  # fmt: skip
    assert (report.already_cached, report.embedded) == (9, 4)
    order = [item.image_hash for item in items]
    cache = EmbeddingCache.open(tmp_path / "cache")
    torch.testing.assert_close(cache.load(order)[1], embed_fresh(items, tmp_path / "fresh"))


def test_an_image_changed_under_the_same_hash_is_embedded_again(tmp_path):
    manifest = write_pool_folder(tmp_path / "pool")
    items = read_pool(manifest)
    method = MeanColourMethod()
    embed_pool(method, items, EmbeddingCache(tmp_path / "cache", method.cache_identity()), show_progress=False)
    PIL.Image.new("RGB", (48, 64), (10, 200, 30)).save(tmp_path / "pool" / "g0_1.png")
    rerun = MeanColourMethod()
    report = embed_pool(rerun, items, EmbeddingCache(tmp_path / "cache", rerun.cache_identity()), show_progress=False)
    assert (report.already_cached, report.embedded) == (12, 1)
    cache = EmbeddingCache.open(tmp_path / "cache")
    assert len(cache) == 13 and cache.content_digests["g0_1"] == file_sha256(tmp_path / "pool" / "g0_1.png")
    expected = torch.nn.functional.normalize(torch.tensor([[11.0, 201.0, 31.0]]), dim=-1)
    torch.testing.assert_close(cache.load(["g0_1"])[1], expected)


def test_weights_replaced_at_the_same_path_are_not_served_from_the_cache(tmp_path):
    from training.evaluation.methods.vision_encoders import ClipImageMethod

    items = read_pool(write_pool_folder(tmp_path / "pool", groups=1, per_group=2, distractors=1))
    clip = save_tiny_clip(tmp_path / "clip", seed=0)
    first = ClipImageMethod(str(clip))
    embed_pool(first, items, EmbeddingCache(tmp_path / "cache", first.cache_identity()), show_progress=False)
    save_tiny_clip(tmp_path / "clip", seed=1)  # retrained into the same folder
    second = ClipImageMethod(str(clip))
    assert second.identity()["model"] == first.identity()["model"]
    with pytest.raises(ValueError, match=r"differ in weights"):
        EmbeddingCache(tmp_path / "cache", second.cache_identity())
