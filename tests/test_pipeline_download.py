"""The pipeline's download stage (img2dataset's multiprocessing distributor, one worker process) against a local http
server: which URLs are fetched, the per-row refusals and their counts, and repeated inputs on every route."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.pipeline_helpers import write_images
from tests.url_server_helpers import serve_folder
from training.image_ids import file_image_hash, url_image_hash
from training.pipeline.__main__ import main
from training.pipeline.handoff import HandoffStage
from training.pipeline.recipe import PipelineRecipe
from training.pipeline.run.pipeline_run import run_pipeline
from training.pipeline.run.recipe import DownloadSettings, RaySettings, RunRecipe, run_recipe_from_dict
from training.pipeline.run.shards import table_to_rows
from training.pipeline.stages import Stage


class FixedCaptionStage(Stage):
    name = "caption"

    def process(self, rows):
        return [{**row, "caption": "{Object}s in a row"} for row in rows]


def _recipe(**download) -> RunRecipe:
    settings = {"image_size": 32, "threads": 2, "timeout": 5, "shard_size": 8, **download}
    return RunRecipe(pipeline=PipelineRecipe(), ray=RaySettings(shard_size=8), download=DownloadSettings(**settings))


def _output_rows(output) -> list[dict]:
    return [row for path in sorted((output / "shards").glob("part-*.parquet")) for row in
            table_to_rows(pq.read_table(path))]  # fmt: skip


def _write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_only_http_urls_are_fetched_and_every_refusal_is_a_counted_failed_row(tmp_path):
    served, outside, local = (write_images(tmp_path / name, [(40, 30)])[0] for name in ("served", "outside", "local"))
    with serve_folder(served.parent) as server:
        urls = {
            "image": server.url(served.name),
            "passwd": "file:///etc/passwd",
            "file image": outside.as_uri(),
            "redirect to file": server.redirect(outside.as_uri()),
            "redirect to ftp": server.redirect("ftp://127.0.0.1/image.png"),
            "huge": server.url("huge.jpg"),
            "endless": server.url("endless.jpg"),
        }
        _write_jsonl(tmp_path / "list.jsonl", [{"url": url} for url in urls.values()] + [{"image": str(local)}])
        stages = [FixedCaptionStage(), HandoffStage(tmp_path / "out" / "handoff")]
        summary = run_pipeline(tmp_path / "list.jsonl", tmp_path / "out", ["download", "caption", "handoff"],
                             _recipe(max_image_bytes=2**20), show_progress=False, stages=stages)  # fmt: skip

    errors = {row["url"]: row["error"] for row in _output_rows(tmp_path / "out") if "error" in row}
    assert errors == {
        urls["passwd"]: f"{urls['passwd']}: URL scheme refused: file URLs are not fetched (only http, https; "
        "--allow-url-schemes file opts in)",
        urls["file image"]: f"{urls['file image']}: URL scheme refused: file URLs are not fetched (only http, https; "
        "--allow-url-schemes file opts in)",
        urls["redirect to file"]: f"{urls['redirect to file']}: redirect refused: {urls['redirect to file']} "
        f"redirects to {outside.as_uri()} (only http, https followed)",
        urls["redirect to ftp"]: f"{urls['redirect to ftp']}: redirect refused: {urls['redirect to ftp']} "
        "redirects to ftp://127.0.0.1/image.png (only http, https followed)",
        urls["huge"]: f"{urls['huge']}: image over the byte cap: {urls['huge']} declares Content-Length 2000000000, "
        "more than 1048576 bytes",
        urls["endless"]: f"{urls['endless']}: image over the byte cap: {urls['endless']} sent more than 1048576 "
        "bytes; stopped reading",
    }
    download = summary.stage("download")
    assert (download.rows_in, download.kept) == (7, 1)
    assert download.failed == {"URL scheme refused": 2, "image over the byte cap": 2, "redirect refused": 2}
    # handed off: the served image and the local one; nothing of the file:// image outside the inputs
    handed = [json.loads(line) for line in (tmp_path / "out" / "handoff" / "captions.jsonl").read_text().splitlines()]
    assert sorted(line["image_hash"] for line in handed) == sorted([url_image_hash(urls["image"]),
                                                                   file_image_hash(local)])  # fmt: skip
    assert len(list((tmp_path / "out" / "handoff" / "images").iterdir())) == 2


def test_the_command_line_opt_in_fetches_file_urls(tmp_path):
    image = write_images(tmp_path / "images", [(40, 30)])[0]
    _write_jsonl(tmp_path / "list.jsonl", [{"url": image.as_uri()}, {"url": "ftp://127.0.0.1/x.png"}])
    (tmp_path / "recipe.yaml").write_text("download: {image_size: 32, threads: 2, timeout: 5}\n")

    summary = main(["run", "--input", str(tmp_path / "list.jsonl"), "--output", str(tmp_path / "out"), "--stages",
                    "download", "--recipe", str(tmp_path / "recipe.yaml"), "--allow-url-schemes", "file"])  # fmt: skip

    download = summary.stage("download")
    assert (download.rows_in, download.kept, download.failed) == (2, 1, {"URL scheme refused": 1})


def test_the_recipe_opts_in_to_schemes_by_list_or_comma_string_and_names_a_bad_value():
    for value in (["file", "ftp"], "file,ftp"):
        policy = run_recipe_from_dict({"download": {"allow_url_schemes": value}}).download.fetch_policy()
        assert policy.schemes == ("http", "https", "file", "ftp") and policy.max_image_bytes == 32 * 2**20
    with pytest.raises(ValueError, match=r"recipe: download: 'file ftp' is not a URL scheme"):
        run_recipe_from_dict({"download": {"allow_url_schemes": ["file ftp"]}})
    with pytest.raises(ValueError, match=r"recipe: download: max_image_bytes must be at least 1, got -1"):
        run_recipe_from_dict({"download": {"max_image_bytes": -1}})


@pytest.mark.parametrize("stages", [["download", "caption"], ["caption"]])
@pytest.mark.parametrize("repeated", ["url", "local file"])
def test_a_repeated_input_gives_one_row_and_is_counted_on_every_route(tmp_path, stages, repeated):
    image = write_images(tmp_path / "images", [(40, 30)])[0]
    with serve_folder(image.parent) as server:
        row = {"url": server.url(image.name)} if repeated == "url" else {"image": str(image)}
        _write_jsonl(tmp_path / "list.jsonl", [row, row])
        summary = run_pipeline(tmp_path / "list.jsonl", tmp_path / "out", stages, _recipe(), show_progress=False,
                             stages=[FixedCaptionStage()])  # fmt: skip

    rows = _output_rows(tmp_path / "out")
    expected = url_image_hash(row["url"]) if repeated == "url" else file_image_hash(image)
    assert [row["image_hash"] for row in rows] == [expected]
    assert summary.duplicate_inputs == 1
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["duplicate_inputs"] == 1


def test_a_repeated_row_of_an_image_shard_folder_is_left_out_and_counted(tmp_path):
    image = write_images(tmp_path / "images", [(40, 30)])[0]
    shards = tmp_path / "shards"
    shards.mkdir()
    row = {"key": "000000000", "url": "https://example.com/a.png", "status": "success", "jpg": image.read_bytes()}
    pq.write_table(pa.Table.from_pylist([row, {**row, "key": "000000001"}]), shards / "00000.parquet")

    summary = run_pipeline(shards, tmp_path / "out", ["caption"], _recipe(), show_progress=False,
                         stages=[FixedCaptionStage()])  # fmt: skip

    assert [row["image_hash"] for row in _output_rows(tmp_path / "out")] == [url_image_hash(row["url"])]
    assert summary.duplicate_inputs == 1
