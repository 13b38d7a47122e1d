"""The sharded run with the local executor (no Ray, no model): the stage files, a truncated or damaged
shard, another recipe's folder, an interrupted run, a driver that streams its shards, and the index stage's exact
neighbours."""

import hashlib
import json
import logging
import re
import struct

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.pipeline_helpers import ImageSizeStage, WideFilterStage, peak_traced_bytes, write_images
from training.pipeline.index_stage import build_shard_index, exact_neighbours
from training.pipeline.inputs import rows_from_folder
from training.pipeline.model_stages import CheckStage
from training.pipeline.run.recipe import IndexSettings, RaySettings
from training.pipeline.run.sharded import run
from training.pipeline.run.shards import ShardPlan, read_all_shards, shard_path, write_shard
from training.pipeline.run.summary import read_stage_rows
from training.pipeline.stages import Stage
from training.vector_index import VectorIndex, recall_against_exact


SIZES = [(40, 30), (30, 40), (50, 20), (20, 20), (60, 30), (30, 60), (44, 33)]  # 4 wider than tall


@pytest.fixture
def rows(tmp_path):
    write_images(tmp_path / "images", SIZES)
    (tmp_path / "images" / "broken.png").write_bytes(b"not a png at all")
    return rows_from_folder(tmp_path / "images")


def _sharded(rows, stages, output, shard_size=2, **options):
    return run(rows, stages, output, batch_size=2, settings=RaySettings(shard_size=shard_size),
               show_progress=False, **options)  # fmt: skip


def _files(output):
    return {
        path.name: (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
        for path in sorted((output / "shards").glob("part-*.parquet"))
    }


def test_the_stage_files_and_summary_do_not_depend_on_the_shard_size(rows, tmp_path):
    one_shard = _sharded(rows, [ImageSizeStage(), WideFilterStage()], tmp_path / "one", shard_size=100,
                         stage_logs=["size", "wide"])  # fmt: skip
    sharded = _sharded(rows, [ImageSizeStage(), WideFilterStage()], tmp_path / "sharded", stage_logs=["size", "wide"])

    for stage in ("size", "wide"):
        assert read_stage_rows(tmp_path / "sharded", stage) == read_stage_rows(tmp_path / "one", stage)
    assert sharded == one_shard and sharded.stage("wide").kept == 4
    assert len(read_stage_rows(tmp_path / "sharded", "wide")) == 7  # the broken file never reached it


def test_a_truncated_shard_is_computed_again_and_the_finished_ones_are_untouched(rows, tmp_path):
    output = tmp_path / "out"
    _sharded(rows, [ImageSizeStage()], output)
    first = read_all_shards(output, ShardPlan.from_rows(rows, 2))
    before = _files(output)
    partial = shard_path(output, 1)
    partial.write_bytes(partial.read_bytes()[: partial.stat().st_size // 2])  # a write cut short

    again = ImageSizeStage()
    summary = _sharded(rows, [again], output)

    assert again.processed_hashes == [row["image_hash"] for row in rows[2:4]]
    after = _files(output)
    assert {name: after[name] for name in before if name != partial.name} == {
        name: stamp for name, stamp in before.items() if name != partial.name
    }
    assert read_all_shards(output, ShardPlan.from_rows(rows, 2)) == first
    assert (summary.stage("size").computed_now, summary.stage("size").done_before) == (2, 6)


def _damage_data_pages(path, where="page header"):
    """Overwrites bytes of a parquet file's data, before its footer, which stays intact (so the row count and metadata
    still read back): 32 bytes in the middle of the data ("page header": a page header there), or 4 bytes near the
    end of the `image` column's dictionary page ("compressed values": the snappy-compressed paths)."""
    data = bytearray(path.read_bytes())
    (footer_length,) = struct.unpack("<I", data[-8:-4])
    data_end = len(data) - 8 - footer_length
    if where == "page header":
        middle = (4 + data_end) // 2
        data[middle - 16 : middle + 16] = b"\xa5" * 32
    else:
        metadata = pq.read_metadata(path)
        chunk = metadata.row_group(0).column(metadata.schema.names.index("image"))
        data[chunk.data_page_offset - 6 : chunk.data_page_offset - 2] = b"ZZZZ"
    path.write_bytes(bytes(data))
    return data_end


@pytest.mark.parametrize("where", ["page header", "compressed values"])
def test_a_shard_with_damaged_data_and_an_intact_footer_is_named_and_computed_again(rows, tmp_path, caplog, where):
    _sharded(rows, [ImageSizeStage(), WideFilterStage()], tmp_path / "clean")
    output = tmp_path / "out"
    _sharded(rows, [ImageSizeStage(), WideFilterStage()], output)
    before = _files(output)
    damaged = shard_path(output, 1)
    data_end = _damage_data_pages(damaged, where)
    assert data_end > 200 and pq.read_metadata(damaged).num_rows == 2  # the footer still says "2 rows, finished"

    again = ImageSizeStage()
    with caplog.at_level(logging.WARNING, logger="training.pipeline.run.shards"):
        summary = _sharded(rows, [again, WideFilterStage()], output)

    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings == [
        f"{damaged} is damaged: its bytes do not match the sha256 recorded in part-00001.parquet.sha256 when it was "
        "written (damaged or edited); shard 1 is removed and computed again"
    ]
    assert again.processed_hashes == [row["image_hash"] for row in rows[2:4]]
    plan = ShardPlan.from_rows(rows, 2)
    assert read_all_shards(output, plan) == read_all_shards(tmp_path / "clean", plan)
    after = _files(output)
    assert {name: after[name] for name in before if name != damaged.name} == {
        name: stamp for name, stamp in before.items() if name != damaged.name
    }
    assert after[damaged.name][1] == before[damaged.name][1]  # the recomputed shard has the clean shard's bytes
    assert (summary.stage("size").computed_now, summary.stage("size").done_before) == (2, 6)
    assert read_stage_rows(output, "wide") == read_stage_rows(tmp_path / "clean", "wide")


def test_a_shard_read_after_it_was_damaged_is_named_in_the_error(rows, tmp_path):
    output = tmp_path / "out"
    _sharded(rows, [ImageSizeStage()], output)
    _damage_data_pages(shard_path(output, 2))

    with pytest.raises(ValueError, match=rf"^{re.escape(str(shard_path(output, 2)))}: unreadable shard \("):
        read_all_shards(output, ShardPlan.from_rows(rows, 2))


def test_an_output_of_another_recipe_or_other_stages_is_refused_naming_the_difference(rows, tmp_path):
    output = tmp_path / "out"
    _sharded(rows, [ImageSizeStage(), CheckStage(["pattern"])], output)

    with pytest.raises(ValueError, match=r"check\.relational_vocabulary \['pattern'\] -> \['rhythm'\]"):
        _sharded(rows, [ImageSizeStage(), CheckStage(["rhythm"])], output)
    with pytest.raises(ValueError, match=r"plan\.json records a run of the stages \['size', 'check'\].*wide added"):
        _sharded(rows, [ImageSizeStage(), CheckStage(["pattern"]), WideFilterStage()], output)
    with pytest.raises(ValueError, match=r"plan\.json records 4 shards of another input"):
        _sharded(rows[:5], [ImageSizeStage(), CheckStage(["pattern"])], output)
    # the same stages and settings resume (the device and batch size may change)
    summary = _sharded(rows, [ImageSizeStage(), CheckStage(["pattern"], batch_size=7)], output)
    assert summary.stage("check").done_before == 7


def test_an_interrupted_local_run_resumes_at_the_first_unfinished_shard(rows, tmp_path):
    _sharded(rows, [ImageSizeStage(), WideFilterStage()], tmp_path / "reference")
    output = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        _sharded(rows, [ImageSizeStage(fail_after=4), WideFilterStage()], output)
    finished = _files(output)
    assert sorted(finished) == ["part-00000.parquet", "part-00001.parquet"]

    again = ImageSizeStage()
    summary = _sharded(rows, [again, WideFilterStage()], output)

    assert again.processed_hashes == [row["image_hash"] for row in rows[4:] if "broken" not in row["image"]]
    assert {name: _files(output)[name] for name in finished} == finished
    plan = ShardPlan.from_rows(rows, 2)
    assert read_all_shards(output, plan) == read_all_shards(tmp_path / "reference", plan)
    assert (summary.stage("size").done_before, summary.stage("size").computed_now) == (4, 4)


class BlobTagStage(Stage):
    """Adds a short tag; its rows carry a 20 kB `blob` each, so materialising all rows shows in the memory peak."""

    name = "tag"

    def process(self, rows):
        return [{**row, "tag": row["blob"][:8]} for row in rows]


def test_the_driver_holds_one_shard_of_output_rows_not_the_whole_run(tmp_path):
    blob_rows = [
        {"image_hash": hashlib.md5(str(number).encode()).hexdigest(), "blob": f"{number:08d}" + "x" * 20_000}
        for number in range(200)
    ]  # 4 MB of row text in 20 shards of 10 rows (200 kB each)
    output = tmp_path / "out"
    _sharded(blob_rows[:3], [BlobTagStage()], tmp_path / "warm-up", stage_logs=["tag"])  # lazy imports, not rows

    def run():
        _sharded(blob_rows, [BlobTagStage()], output, shard_size=10, stage_logs=["tag"])

    first, rerun = peak_traced_bytes(run), peak_traced_bytes(run)  # compute and write; then only read back
    # materialising every output row (as the driver once did to count and finish) peaks at 4.3 MB here; one shard
    # at a time, at 0.5 MB

    assert len(read_stage_rows(output, "tag")) == 200
    assert first < 1_500_000 and rerun < 1_500_000, (first, rerun)


def test_exact_neighbours_merged_over_shards_equal_brute_force(tmp_path):
    vectors = np.random.default_rng(0).normal(size=(57, 16)).astype(np.float32)
    rows = [
        {"image_hash": hashlib.md5(str(number).encode()).hexdigest(), "embedding": vector.tolist()}
        for number, vector in enumerate(vectors)
    ]
    plan = ShardPlan.from_rows(rows, 20)
    for spec in plan.specs:
        write_shard(tmp_path, spec, plan.rows[spec.index])
    queries = vectors[[3, 25, 56]]

    found = exact_neighbours(tmp_path, plan, queries, 10, "inner_product")

    expected = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(found, expected)


def test_index_stage_reports_the_recall_of_its_factory_against_exact_search(tmp_path):
    """8 clusters of 25 unit vectors: the 10 exact neighbours lie in the query's cluster (chance there: 0.4), so the
    reported recall@10 must rank a 32-bit PQ code below a 192-bit one below exact search."""
    rng = np.random.default_rng(0)
    vectors = np.repeat(rng.normal(size=(8, 384)), 25, 0) + rng.normal(size=(200, 384))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    rows = [
        {"image_hash": hashlib.md5(str(number).encode()).hexdigest(), "embedding": vector.tolist()}
        for number, vector in enumerate(vectors)
    ]
    plan = ShardPlan.from_rows(rows, 60)
    for spec in plan.specs:
        write_shard(tmp_path, spec, plan.rows[spec.index])
    exact = np.argsort(-(vectors @ vectors.T), axis=1, kind="stable")[:, :10]

    reports = {
        factory: build_shard_index(
            tmp_path, plan, IndexSettings(factory=factory, nprobe=4, recall_queries=200), folder=tmp_path / factory
        )
        for factory in ("IVF4,PQ8x4", "IVF4,PQ48x4", "IVF4,Flat")
    }

    _, found = VectorIndex.load(reports["IVF4,PQ8x4"].path).search(vectors, 10, nprobe=4)
    assert reports["IVF4,PQ8x4"].recall == pytest.approx(recall_against_exact(found, exact), abs=1e-9)
    assert 0.4 <= reports["IVF4,PQ8x4"].recall <= 0.6  # measured 0.479
    assert reports["IVF4,PQ48x4"].recall >= reports["IVF4,PQ8x4"].recall + 0.1  # measured 0.637
    assert reports["IVF4,Flat"].recall == 1.0
    assert json.loads((tmp_path / "IVF4,Flat" / "report.json").read_text())["recall"] == 1.0
