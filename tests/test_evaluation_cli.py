"""`python -m training.evaluation embed|retrieve|judge|report` end to end on a small pool, with tiny relsim and CLIP."""

import json
from pathlib import Path

import PIL.Image
import pytest
from evaluation_helpers import pool_hash, save_tiny_clip, write_pool_folder
from test_evaluation_judges import ChatCompletionsServer

from training.evaluation.__main__ import main
from training.evaluation.embedding_cache import EmbeddingCache
from training.evaluation.report import similarity_space
from training.evaluation.reporting.tables import markdown_table


@pytest.fixture
def evaluated(tmp_path, model, processor):
    manifest = write_pool_folder(tmp_path / "pool", groups=3, per_group=3, distractors=6, hashed=True)
    model.save_pretrained(tmp_path / "relsim")
    processor.save_pretrained(tmp_path / "relsim")
    clip = save_tiny_clip(tmp_path / "clip")
    common = ["--pool", str(manifest), "--eval-dir", str(tmp_path / "eval")]
    embed = ["embed", *common, "--device", "cpu", "--num-workers", "0"]
    main([*embed, "--method", "relsim", "--model", str(tmp_path / "relsim")])
    main([*embed, "--method", "clip-i", "--model", str(clip), "--batch-size", "4"])
    main(["retrieve", *common, "--methods", "relsim", "clip-i", "--queries", "5", "--top-k", "3"])
    answers = ["Score: 7", "Score: 3", "6/10", "no score", "Score: 10"] * 2
    with ChatCompletionsServer(answers) as server:
        main(["judge", *common, "--methods", "relsim", "clip-i", "--judge", "openai", "--base-url", server.base_url,
              "--judge-model", "judge-x"])  # fmt: skip
    query = json.loads((tmp_path / "eval" / "queries.json").read_text())["queries"][0]
    main(["report", *common, "--similarity-query", query, "--points", "50", "--top-k", "3"])
    return tmp_path / "eval", server


def test_every_step_writes_its_outputs(evaluated):
    eval_dir, server = evaluated
    queries = json.loads((eval_dir / "queries.json").read_text())
    assert queries["count"] == 5 and len(set(queries["queries"])) == 5
    for method in ("relsim", "clip-i"):
        assert len(EmbeddingCache.open(eval_dir / "embeddings" / method)) == 15
        retrievals = [json.loads(line) for line in (eval_dir / "retrievals" / f"{method}.jsonl").open()]
        assert [r["query"] for r in retrievals] == queries["queries"]
        assert all(len(r["neighbours"]) == 3 and r["query"] not in r["neighbours"] for r in retrievals)
        metrics = json.loads((eval_dir / "metrics" / f"{method}.json").read_text())
        assert metrics["seed_group_queries"] == 9 and 0.0 <= metrics["seed_group_mAP"] <= 1.0
        assert 0.0 <= metrics["caption_agreement"] <= 1.0
    assert len(server.requests) == 10 and server.requests[0]["body"]["model"] == "judge-x"


def test_report_table_html_and_similarity_plot(evaluated):
    eval_dir, _ = evaluated
    rows = json.loads((eval_dir / "report" / "table.json").read_text())
    assert [row["method"] for row in rows] == ["clip-i", "relsim"]
    by_method = {row["method"]: row for row in rows}
    # the five answers per method hold four scores: 7, 3, 6 and 10
    for row in by_method.values():
        assert row["judge:openai-judge-x"] == pytest.approx((7 + 3 + 6 + 10) / 4)
        assert row["judged:openai-judge-x"] == 4
    table = (eval_dir / "report" / "table.md").read_text()
    assert table == markdown_table(rows) and "| relsim |" in table and "6.500" in table
    page = (eval_dir / "report" / "index.html").read_text()
    thumbs = sorted((eval_dir / "report" / "thumbs").glob("*.jpg"))
    assert page.count("<tr>") == 6 and all(f"thumbs/{thumb.name}" in page for thumb in thumbs)
    assert "judge 7" in page
    with PIL.Image.open(eval_dir / "report" / "similarity_space.png") as plot:
        assert plot.size[0] > 500 and plot.size[1] > 400


def test_similarity_space_pairs_both_similarities_of_the_same_images(evaluated):
    eval_dir, _ = evaluated
    from training.evaluation.pool import by_hash, read_pool

    items = by_hash(read_pool(eval_dir.parent / "pool" / "pool.jsonl"))
    relational = EmbeddingCache.open(eval_dir / "embeddings" / "relsim")
    attribute = EmbeddingCache.open(eval_dir / "embeddings" / "clip-i")
    query = pool_hash("g0_0")
    space = similarity_space(relational, attribute, items, query, points=10, seed=1)
    assert len(space.image_ids) == 10 and query not in space.image_ids
    _, query_vector = attribute.load([query])
    _, others = attribute.load(space.image_ids)
    assert space.attribute.allclose(others @ query_vector[0], atol=1e-6)
    assert space.relevant.tolist() == [items[h].group_id == 0 for h in space.image_ids]
    assert list(space.relational) == ["relsim"] and space.query_image is not None


def test_report_warns_when_the_similarity_axes_are_one_method(evaluated, caplog):
    eval_dir, _ = evaluated
    common = ["--pool", str(eval_dir.parent / "pool" / "pool.jsonl"), "--eval-dir", str(eval_dir)]
    query = json.loads((eval_dir / "queries.json").read_text())["queries"][0]
    with caplog.at_level("WARNING"):
        main(["report", *common, "--similarity-query", query, "--points", "5", "--attribute-method", "relsim"])
    assert "--relational-method and --attribute-method are both relsim" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        main(["report", *common, "--similarity-query", query, "--points", "5"])
    assert "are both" not in caplog.text


def test_a_plain_image_folder_becomes_a_pool_that_embeds_and_retrieves(tmp_path, caplog):
    from training.evaluation.pool import read_pool
    from training.image_ids import file_image_hash

    folder = tmp_path / "my images"
    (folder / "a" / "b").mkdir(parents=True)
    colours = {"3.PNG": (250, 0, 0), "a/1.png": (0, 250, 0), "a/b/2.jpg": (0, 0, 250)}
    for name, colour in colours.items():
        PIL.Image.new("RGB", (40, 30), colour).save(
            folder / name, format="PNG" if name.lower().endswith("png") else "JPEG"
        )
    (folder / "dup.png").write_bytes((folder / "a" / "1.png").read_bytes())  # same bytes: one pool image
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.png").write_bytes(b"\x89PNG but not really")
    manifest = tmp_path / "pool.jsonl"
    with caplog.at_level("INFO"):
        main(["pool", "--images", str(folder), "--output", str(manifest)])
    items = read_pool(manifest)
    assert [Path(item.image) for item in items] == [(folder / name).resolve() for name in colours]
    assert [item.image_hash for item in items] == [file_image_hash(folder / name) for name in colours]
    assert all(item.split == "test" and item.caption is None and item.group_id is None for item in items)
    assert f"unreadable image left out of the pool: {folder / 'broken.png'}" in caplog.text

    clip = save_tiny_clip(tmp_path / "clip")
    common = ["--pool", str(manifest), "--eval-dir", str(tmp_path / "eval")]
    main(["embed", *common, "--method", "clip-i", "--model", str(clip), "--device", "cpu", "--num-workers", "0"])
    assert len(EmbeddingCache.open(tmp_path / "eval" / "embeddings" / "clip-i")) == 3
    main(["retrieve", *common, "--methods", "clip-i", "--queries", "3", "--top-k", "2"])
    retrievals = [json.loads(line) for line in (tmp_path / "eval" / "retrievals" / "clip-i.jsonl").open()]
    assert sorted(r["query"] for r in retrievals) == sorted(item.image_hash for item in items)
    assert all(len(r["neighbours"]) == 2 and r["query"] not in r["neighbours"] for r in retrievals)


def test_a_folder_without_images_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="holds no readable image file"):
        main(["pool", "--images", str(tmp_path / "empty"), "--output", str(tmp_path / "pool.jsonl")])
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        main(["pool", "--images", str(tmp_path / "missing"), "--output", str(tmp_path / "pool.jsonl")])
