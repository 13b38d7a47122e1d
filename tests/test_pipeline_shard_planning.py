"""Planning a sharded run while the input streams by: a 100,000-row URL list planned and run with one shard of rows in
memory, the streamed plan equal to the whole-list plan, errors naming file and line or columns, an early refusal."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.pipeline_helpers import peak_traced_bytes
from training.image_ids import url_image_hash
from training.pipeline.inputs import iter_list_rows
from training.pipeline.recipe import PipelineRecipe
from training.pipeline.run.carried import INTERNAL
from training.pipeline.run.pipeline_run import iter_parquet_list, read_run_input, run_pipeline
from training.pipeline.run.planning import plan_rows
from training.pipeline.run.recipe import RaySettings, RunRecipe
from training.pipeline.run.shards import ShardPlan, read_shard_input, shard_input_path, shard_path, table_to_rows
from training.pipeline.run.summary import read_stage_rows
from training.pipeline.stages import Stage


class UrlLengthStage(Stage):
    """Adds the URL's length: a row stage that downloads nothing."""

    name = "length"
    output_fields = ("url_length",)

    def process(self, rows):
        return [{**row, "url_length": len(row["url"])} for row in rows]


def _urls(count):
    return [f"https://images.example.org/laion/{number:09d}/picture-with-a-longish-name.jpg" for number in range(count)]


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def _recipe(shard_size):
    return RunRecipe(pipeline=PipelineRecipe(), ray=RaySettings(shard_size=shard_size))


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_a_100k_row_url_list_is_planned_holding_one_shard_not_the_list(tmp_path, kind):
    urls = _urls(100_000)
    source = tmp_path / f"urls.{kind}"
    if kind == "jsonl":
        _write_jsonl(source, [{"url": url} for url in urls])
    else:
        pq.write_table(pa.table({"URL": urls, "TEXT": ["a caption"] * len(urls)}), source, row_group_size=10_000)
    last_url = urls[-1]
    del urls
    output = tmp_path / "out"
    warm_up = _write_jsonl(tmp_path / "one.jsonl", [{"url": last_url}])
    run_pipeline(warm_up, tmp_path / "warm-up", [], _recipe(10), stages=[], show_progress=False)  # lazy imports

    peak = peak_traced_bytes(lambda: run_pipeline(source, output, [], _recipe(1_000), stages=[], show_progress=False))

    # holding the list (the driver before streaming: every row dict, then the unique rows) peaked at 72 MB (jsonl) and
    # 65 MB (parquet) here; streamed, one shard of 1,000 rows and one 4,096-row parquet batch at a time: 0.9 and 2.4 MB
    assert peak < 10_000_000, peak
    summary = json.loads((output / "summary.json").read_text())
    assert summary["rows_in"] == 100_000 and len(list((output / "shards").glob("part-*.parquet"))) == 100
    assert not (output / "shards" / "inputs").exists()  # the shard inputs are removed once every shard is finished
    last = table_to_rows(pq.read_table(shard_path(output, 99)))[-1]
    assert last["image_hash"] == url_image_hash(last_url) and last["url"] == last_url


def test_a_url_list_through_a_stage_writes_every_row_once_in_order(tmp_path):
    urls = _urls(2_500)
    source = _write_jsonl(tmp_path / "urls.jsonl", [{"url": url} for url in urls])

    summary = run_pipeline(source, tmp_path / "out", [], _recipe(1_000), stages=[UrlLengthStage()], show_progress=False)

    written = read_stage_rows(tmp_path / "out", "length")
    assert [row["image_hash"] for row in written] == [url_image_hash(url) for url in urls]
    assert {row["url_length"] for row in written} == {len(urls[0])}
    assert (summary.rows_in, summary.stage("length").kept) == (2_500, 2_500)


def test_the_streamed_plan_has_the_rows_order_and_fingerprints_of_the_whole_list_plan(tmp_path):
    urls = _urls(23)
    records = [{"url": url} for url in urls[:10]] + [{"url": urls[3]}] + [{"url": url} for url in urls[10:]]
    records += [{"url": urls[0], "image_hash": url_image_hash(urls[0])}, {"image": "missing.png"}]
    source = _write_jsonl(tmp_path / "urls.jsonl", records)
    first_seen = {}
    for row in iter_list_rows(source):
        first_seen.setdefault(row["image_hash"], row)
    unique, duplicates = list(first_seen.values()), len(records) - len(first_seen)
    whole = ShardPlan.from_rows(unique, 5)

    streamed = plan_rows(read_run_input(source, tmp_path).rows, tmp_path / "out", 5)

    assert (streamed.specs, streamed.duplicates) == (whole.specs, duplicates) and duplicates == 2
    assert [spec.count for spec in streamed.specs] == [5, 5, 5, 5, 4]
    for spec in streamed.specs:
        written = read_shard_input(tmp_path / "out", spec)
        assert [{key: value for key, value in row.items() if key not in INTERNAL} for row in written] == whole.rows[
            spec.index
        ]
        assert [row["_position"] for row in written] == list(range(spec.count))


def test_a_parquet_url_list_streams_the_rows_of_the_whole_table(tmp_path):
    urls = _urls(7)
    given = url_image_hash("another id")
    table = pa.table({"url": urls, "caption": ["one", None, "", "four", "five", "six", "seven"],
                      "image_hash": [None, given, None, None, None, None, None], "other": list(range(7))})  # fmt: skip
    pq.write_table(table, tmp_path / "urls.parquet", row_group_size=3)

    rows = list(iter_parquet_list(tmp_path / "urls.parquet", batch_rows=2))

    assert [row["url"] for row in rows] == urls
    assert [row["image_hash"] for row in rows] == [url_image_hash(urls[0]), given, *map(url_image_hash, urls[2:])]
    assert [row.get("source_caption") for row in rows] == ["one", None, None, "four", "five", "six", "seven"]


def test_a_malformed_jsonl_line_is_reported_with_its_file_and_line_number(tmp_path):
    source = tmp_path / "urls.jsonl"
    source.write_text('{"url": "https://a.example/1.jpg"}\n\n{"url": "https://a.example/2.jpg"\n')

    with pytest.raises(ValueError, match=r"urls\.jsonl:3: malformed JSON"):
        run_pipeline(source, tmp_path / "out", [], _recipe(1), stages=[UrlLengthStage()], show_progress=False)


def test_a_parquet_list_without_a_url_column_names_the_file_and_its_columns(tmp_path):
    pq.write_table(pa.table({"link": ["https://a.example/1.jpg"], "TEXT": ["a"]}), tmp_path / "urls.parquet")

    with pytest.raises(ValueError, match=r"urls\.parquet: a URL list needs a `url`.*it has \['link', 'TEXT'\]"):
        run_pipeline(tmp_path / "urls.parquet", tmp_path / "out", [], _recipe(1), stages=[], show_progress=False)


def test_an_image_shard_without_its_images_names_the_file_and_its_columns(tmp_path):
    pq.write_table(pa.table({"key": ["000000000"], "url": ["https://a.example/1.jpg"]}), tmp_path / "00000.parquet")

    with pytest.raises(ValueError, match=r"00000\.parquet: neither a 00000\.tar .* \(it has \['key', 'url'\]\)"):
        run_pipeline(tmp_path, tmp_path / "out", [], _recipe(1), stages=[], show_progress=False)


def test_a_rerun_over_another_input_is_refused_at_the_first_differing_shard_without_reading_on(tmp_path):
    urls = _urls(40)
    output = tmp_path / "out"
    run_pipeline(_write_jsonl(tmp_path / "a.jsonl", [{"url": url} for url in urls]), output, [], _recipe(10),
               stages=[UrlLengthStage()], show_progress=False)  # fmt: skip
    read = []

    def other_input():
        for url in [*urls[:10], "https://elsewhere.example/x.jpg", *urls[11:]]:
            read.append(url)
            yield {"url": url, "image_hash": url_image_hash(url)}

    with pytest.raises(ValueError, match=r"records 4 shards of another input.*this run's shard 1 \(10 rows"):
        plan_rows(other_input(), output, 10)
    assert len(read) == 20  # shard 1 was the last one read
    assert not shard_input_path(output, 1).exists()  # and nothing of it was written
