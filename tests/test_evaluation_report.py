"""The paper evaluation's report on hand-made retrievals: seed-group marks, captions, escaping, safe file names, and
the shared query list's count."""

import dataclasses
import html
import json
import re

import pytest
from evaluation_helpers import pool_hash, write_pool_folder

from training.evaluation.__main__ import shared_queries
from training.evaluation.layout import EvalLayout
from training.evaluation.pool import by_hash, read_pool
from training.evaluation.report import write_report
from training.evaluation.retrieval import Retrieval, write_retrievals


G00, G01, G10, D0 = (pool_hash(name) for name in ("g0_0", "g0_1", "g1_0", "d0"))


@pytest.fixture
def pool(tmp_path):
    return by_hash(read_pool(write_pool_folder(tmp_path / "pool", groups=2, per_group=2, distractors=1, hashed=True)))


def report_for(tmp_path, items, retrievals):
    layout = EvalLayout(tmp_path / "eval")
    for method, found in retrievals.items():
        write_retrievals(found, layout.retrievals(method))
    return layout, write_report(layout, items, top_k=3)


def cells(page: str) -> list[str]:
    return re.findall(r"<td>(.*?)</td>", page)


def test_neighbours_are_framed_by_seed_group_and_show_their_captions(tmp_path, pool):
    _, written = report_for(tmp_path, pool, {"relsim": [Retrieval("relsim", G00, [G01, G10, D0], [0.9, 0.5, 0.4])]})
    page = written["index.html"].read_text()
    query, same, other, distractor = cells(page)
    assert "border:4px solid #2962ff" in query and html.escape(pool[G00].caption) in query
    assert "border:4px solid #2ea043" in same and ">same seed group</div>" in same and "0.900" in same
    assert html.escape(pool[G01].caption) in same
    assert "border:4px solid #d63031" in other and ">other seed group</div>" in other
    assert html.escape(pool[G10].caption) in other
    assert "border:4px solid #969696" in distractor and "seed group</div>" not in distractor
    assert "no seed group (distractor)" in page  # the legend


def test_captions_and_method_names_are_escaped(tmp_path, pool):
    hostile = "<script>alert('x')</script> \"{Object}s\" & more"
    pool[G01] = dataclasses.replace(pool[G01], caption=hostile)
    method = "<b>m'x"
    _, written = report_for(tmp_path, pool, {method: [Retrieval(method, G00, [G01], [0.9])]})
    page = written["index.html"].read_text()
    assert "<script>" not in page and "<b>m" not in page
    assert html.escape(hostile) in page and html.escape(method) in page


@pytest.mark.parametrize("bad_hash", ["../../x", "x' onerror='alert(1)", "<script>"])
def test_a_pool_hash_that_is_not_an_image_hash_is_refused_before_anything_is_written(tmp_path, pool, bad_hash):
    bad = dataclasses.replace(pool[D0], image_hash=bad_hash)
    pool[bad_hash] = bad
    with pytest.raises(ValueError, match=r"pool row of image .*d0\.png \(field image_hash\): .* is not an image hash"):
        report_for(tmp_path, pool, {"relsim": [Retrieval("relsim", G00, [G01, bad_hash], [0.9, 0.5])]})
    assert not list(tmp_path.rglob("*.jpg")), "no thumbnail is written, inside or outside the report"
    assert not (tmp_path / "eval" / "report" / "index.html").exists()


def test_a_neighbour_missing_from_the_pool_is_named(tmp_path, pool):
    with pytest.raises(KeyError, match=r"relsim\.jsonl names image 'f+', which the pool does not list"):
        report_for(tmp_path, pool, {"relsim": [Retrieval("relsim", G00, ["f" * 32], [0.9])]})


def test_more_queries_than_the_test_split_records_the_real_count(tmp_path, pool, caplog):
    items = list(pool.values())  # four test images, one distractor
    layout = EvalLayout(tmp_path / "eval")
    with caplog.at_level("WARNING"):
        queries = shared_queries(layout, items, 1000, seed=3)
    assert "--queries 1000: the pool's test split holds only 4 images; using all 4" in caplog.text
    stored = json.loads(layout.queries().read_text())
    assert (stored["count"], stored["requested"], stored["seed"]) == (4, 1000, 3)
    assert sorted(stored["queries"]) == sorted(item.image_hash for item in items if item.split == "test")
    # a rerun asking for the same, or for the real count, reuses the list; another count or seed is refused
    assert shared_queries(layout, items, 1000, seed=3) == queries
    assert shared_queries(layout, items, 4, seed=3) == queries
    with pytest.raises(ValueError, match="holds 4 queries of seed 3; this run would draw 2 of seed 3"):
        shared_queries(layout, items, 2, seed=3)
    with pytest.raises(ValueError, match="this run would draw 4 of seed 4"):
        shared_queries(layout, items, 1000, seed=4)
