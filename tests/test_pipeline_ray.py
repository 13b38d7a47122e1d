"""The Ray Data executor in Ray's local mode on 2 CPUs: every stage on ~200 images in 5 shards, a worker that dies,
a driver killed between shards, download through img2dataset, the FAISS index, the `run --executor ray` command."""

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import PIL.Image
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from tests.ray_pipeline_helpers import CrashOnceEmbedStage, write_image_folder
from tests.url_server_helpers import serve_folder
from training.image_ids import url_image_hash
from training.pipeline.__main__ import main
from training.pipeline.embed_stage import EmbedStage
from training.pipeline.index_stage import build_shard_index, read_index_ids
from training.pipeline.inputs import rows_from_folder
from training.pipeline.model_stages import CaptionStage, CheckStage, FilterStage
from training.pipeline.recipe import PipelineRecipe
from training.pipeline.run.pipeline_run import read_run_input, run_pipeline
from training.pipeline.run.recipe import (
    ActorSettings,
    DownloadSettings,
    IndexSettings,
    RaySettings,
    RunRecipe,
    run_recipe_from_dict,
)
from training.pipeline.run.sharded import run
from training.pipeline.run.shards import ShardPlan, read_all_shards, shard_path, table_to_rows
from training.pipeline.run.summary import read_stage_rows
from training.tiny_backbone import build_tiny_model, build_tiny_processor
from training.vector_index import VectorIndex, recall_against_exact
from training.vlm.tiny import save_tiny_chat


ROOT = Path(__file__).resolve().parents[1]
THRESHOLD = 0.4712  # about the median P(yes) of the tiny random filter on these images: roughly half are kept
CHAT_PIXELS = 56 * 56


@pytest.fixture(scope="module")
def ray_address():
    """Ray on 2 CPUs with a small object store, shared by this module's tests (one start, ~10 s; the agent may take
    longer to register on a loaded machine)."""
    os.environ.setdefault("RAY_agent_register_timeout_ms", "180000")
    context = ray.init(num_cpus=2, object_store_memory=160 * 2**20, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield context.address_info["address"]
    ray.shutdown()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    chat = save_tiny_chat(root / "chat", max_pixels=CHAT_PIXELS)
    processor = build_tiny_processor(image_size=56)
    model = build_tiny_model(processor, seed=0)
    model.save_pretrained(root / "relsim")
    processor.save_pretrained(root / "relsim")
    return {"chat": str(chat), "relsim": str(root / "relsim"), "model": model, "processor": processor}


@pytest.fixture(scope="module")
def full_run(ray_address, models, tmp_path_factory):
    """filter -> caption -> check -> embed (its worker dies once) -> index over 200 images and 2 corrupt files."""
    root = tmp_path_factory.mktemp("full")
    write_image_folder(root / "images", 200, corrupt=2)
    marker = root / "embed-crashed"
    half, quarter = ActorSettings(num_cpus=0.5, batch_size=16), ActorSettings(num_cpus=0.25, batch_size=32)
    recipe = RunRecipe(
        pipeline=PipelineRecipe(),
        ray=RaySettings(shard_size=50, actors={"filter": half, "caption": half, "check": quarter, "embed": half}),
        index=IndexSettings(factory="Flat"),
    )
    chat = {"device": "cpu", "max_pixels": CHAT_PIXELS}
    stages = [
        FilterStage(models["chat"], threshold=THRESHOLD, **chat),
        CaptionStage(models["chat"], decoding={"max_new_tokens": 3}, cache_file=str(root / "captions.jsonl"), **chat),
        CheckStage(),
        CrashOnceEmbedStage(models["relsim"], device="cpu", marker=str(marker)),
    ]
    names = ["filter", "caption", "check", "embed", "index"]
    started = time.monotonic()
    summary = run_pipeline(root / "images", root / "out", names, recipe, show_progress=False, stages=stages,
                         executor="ray")  # fmt: skip
    seconds = time.monotonic() - started
    input_rows = rows_from_folder(root / "images")
    plan = ShardPlan.from_rows(input_rows, 50)
    return {"root": root, "output": root / "out", "summary": summary, "input": input_rows, "plan": plan,
            "rows": read_all_shards(root / "out", plan), "marker": marker, "seconds": seconds}  # fmt: skip


def test_every_input_row_is_written_once_and_exactly_the_corrupt_images_fail(full_run):
    rows, input_rows = full_run["rows"], full_run["input"]
    assert len(full_run["plan"].specs) == 5
    assert [row["image_hash"] for row in rows] == [row["image_hash"] for row in input_rows]
    failed = [row for row in rows if "error" in row]
    assert sorted(Path(row["image"]).name for row in failed) == ["corrupt_0.png", "corrupt_1.png"]
    assert all(row["error"].startswith(row["image"] + ": ") for row in failed)
    readable = {row["image_hash"] for row in rows if "error" not in row}
    assert readable == {row["image_hash"] for row in input_rows} - {row["image_hash"] for row in failed}
    assert len(readable) == 200 and all("filter_score" in row for row in rows if "error" not in row)


def test_rows_below_the_threshold_keep_their_score_and_are_neither_captioned_nor_embedded(full_run):
    scored = [row for row in full_run["rows"] if "error" not in row]
    kept = [row for row in scored if row["filter_score"] >= THRESHOLD]
    dropped = [row for row in scored if row["filter_score"] < THRESHOLD]
    assert 40 <= len(kept) <= 160 and len(kept) + len(dropped) == 200
    assert all(row["kept"] and isinstance(row["caption"], str) and len(row["embedding"]) == 384 for row in kept)
    assert all(not row["kept"] and "caption" not in row and "embedding" not in row for row in dropped)
    assert all(isinstance(row["check"], dict) and "ok" in row["check"] for row in kept)


def test_summary_counts_rows_in_kept_dropped_and_failed_per_stage(full_run):
    written = json.loads((full_run["output"] / "summary.json").read_text())
    kept = sum(row.get("kept", False) for row in full_run["rows"])
    stages = {stage["stage"]: stage for stage in written["stages"]}
    assert written["rows_in"] == 202
    assert (stages["filter"]["rows_in"], stages["filter"]["kept"], stages["filter"]["dropped"]) == (
        202,
        kept,
        200 - kept,
    )
    assert stages["filter"]["failed"] == {"UnidentifiedImageError": 2}
    assert (stages["caption"]["rows_in"], stages["embed"]["rows_in"], stages["embed"]["kept"]) == (kept, kept, kept)
    assert stages["embed"]["computed_now"] == kept and stages["embed"]["failed"] == {}


def test_captions_jsonl_for_the_dataset_builders_holds_the_captioned_rows(full_run):
    lines = (full_run["output"] / "captions.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    expected = [row for row in full_run["rows"] if "caption" in row and row["check"]["ok"]]
    assert [record["image_hash"] for record in records] == [row["image_hash"] for row in expected]
    assert all(set(record) == {"image_hash", "caption", "url_link"} for record in records)


def test_a_worker_that_dies_is_restarted_and_its_batch_retried(full_run):
    assert full_run["marker"].is_file()  # the first embedding actor killed itself on its second batch
    assert int(full_run["marker"].read_text()) != os.getpid()
    kept = [row for row in full_run["rows"] if row.get("kept")]
    assert all(len(row["embedding"]) == 384 for row in kept)


def test_ray_embeddings_equal_embed_images(full_run, models):
    kept = [row for row in full_run["rows"] if row.get("kept")]
    expected = models["model"].embed_images([row["image"] for row in kept], models["processor"], batch_size=7)
    actual = np.asarray([row["embedding"] for row in kept], dtype=np.float32)
    np.testing.assert_allclose(actual, expected.numpy(), atol=1e-5, rtol=0)


def test_flat_index_equals_exact_search_and_ivf_pq_reports_its_recall(full_run, tmp_path):
    embedded = [row for row in full_run["rows"] if "embedding" in row]
    vectors = np.asarray([row["embedding"] for row in embedded], dtype=np.float32)
    exact_ids = np.argsort(-(vectors @ vectors.T), axis=1, kind="stable")[:, :10]

    flat = VectorIndex.load(full_run["output"] / "index" / "embeddings.faiss")
    assert [row["image_hash"] for row in read_index_ids(full_run["output"])] == [row["image_hash"] for row in embedded]
    scores, ids = flat.search(vectors, 10)
    similarities = vectors @ vectors.T
    # the same neighbours as exact search: identical ranked scores, each id's exact score the one reported (two
    # neighbours whose scores tie to float rounding may trade places, nothing else)
    np.testing.assert_allclose(scores, np.take_along_axis(similarities, exact_ids, 1), atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(similarities, ids, 1), scores, atol=1e-5)
    assert (ids == exact_ids).mean() >= 0.99

    reported = full_run["summary"].index
    assert (reported["factory"], reported["vectors"], reported["recall_queries"]) == (
        "Flat",
        len(vectors),
        min(100, len(vectors)),
    )
    assert reported["recall"] >= 0.99

    settings = IndexSettings(factory="IVF4,PQ8x4", nprobe=4, recall_queries=len(vectors))  # every vector a query
    report = build_shard_index(full_run["output"], full_run["plan"], settings, folder=tmp_path / "ivfpq")
    approximate = VectorIndex.load(report.path)
    assert (approximate.factory, approximate.count) == ("IVF4,PQ8x4", len(vectors))
    _, found = approximate.search(vectors, 10, nprobe=4)
    recall = recall_against_exact(found, exact_ids)
    (tmp_path / "recall.txt").write_text(f"{report.recall:.3f}")
    # the reported figure is the index's recall@10 against exact search (ties aside). The tiny random model's
    # embeddings are nearly collinear (mean cosine 0.999), so 32-bit codes barely resolve neighbours here: measured
    # 0.22, twice chance (10 of 93: 0.11); test_pipeline_sharded checks the figure on a pool with structure
    assert report.recall == pytest.approx(recall, abs=0.01)
    assert 0.15 <= report.recall <= 0.6, report.recall


def _fingerprints(output: Path) -> dict[str, tuple[int, str]]:
    return {
        path.name: (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
        for path in sorted((output / "shards").glob("part-*.parquet"))
    }


def test_killed_driver_rerun_redoes_only_missing_shards_without_duplicates(ray_address, models, tmp_path):
    write_image_folder(tmp_path / "images", 80, corrupt=0)
    output = tmp_path / "out"
    script = ROOT / "tests" / "ray_pipeline_helpers.py"
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    driver = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "images"), str(output), models["relsim"], ray_address],
        env=environment, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not list((output / "shards").glob("part-*.parquet")):
            assert driver.poll() is None, "the driver ended before writing a shard"
            assert time.monotonic() < deadline, "no shard written in time"
            time.sleep(0.2)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    finished = _fingerprints(output)
    assert 1 <= len(finished) < 4

    rows = rows_from_folder(tmp_path / "images")
    settings = RaySettings(shard_size=20, actors={"embed": ActorSettings(num_cpus=0.5, batch_size=10)})
    summary = run(rows, [EmbedStage(models["relsim"], device="cpu")], output, executor="ray", settings=settings,
                  show_progress=False)  # fmt: skip

    after = _fingerprints(output)
    assert len(after) == 4 and {name: after[name] for name in finished} == finished
    written = read_all_shards(output, ShardPlan.from_rows(rows, 20))
    assert [row["image_hash"] for row in written] == [row["image_hash"] for row in rows]
    assert all(len(row["embedding"]) == 384 for row in written)
    assert summary.stage("embed").done_before == 20 * len(finished)
    assert summary.stage("embed").computed_now == 80 - 20 * len(finished)


def _full_run_stages(models):
    """The full run's stages and settings (another list is refused: test_pipeline_sharded); no model loads."""
    chat = {"device": "cpu", "max_pixels": CHAT_PIXELS}
    return [
        FilterStage(models["chat"], threshold=THRESHOLD, **chat),
        CaptionStage(models["chat"], decoding={"max_new_tokens": 3}, **chat),
        CheckStage(),
        EmbedStage(models["relsim"], device="cpu"),
    ]


def test_a_rerun_of_a_finished_output_recomputes_nothing_and_keeps_every_shard(full_run, models):
    before = _fingerprints(full_run["output"])
    stages = _full_run_stages(models)
    summary = run(full_run["input"], stages, full_run["output"], executor="ray", settings=RaySettings(shard_size=50),
                  show_progress=False)  # fmt: skip
    assert _fingerprints(full_run["output"]) == before
    assert (summary.stage("filter").computed_now, summary.stage("filter").done_before) == (0, 202)
    assert [asdict(stage) for stage in summary.stages] == [
        {**asdict(stage), "computed_now": 0, "done_before": stage.rows_in} for stage in full_run["summary"].stages
    ]


def test_an_output_of_other_inputs_is_refused(full_run, models):
    with pytest.raises(ValueError, match=r"plan\.json records 5 shards of another input"):
        run(full_run["input"][:30], _full_run_stages(models), full_run["output"],
            executor="ray", settings=RaySettings(shard_size=50))  # fmt: skip


@pytest.mark.parametrize("output_format", ["webdataset", "parquet"])
def test_download_with_img2dataset_on_ray_reports_every_failed_url(ray_address, tmp_path, output_format):
    sources = tmp_path / "sources"
    sources.mkdir()
    urls = []
    for index in range(8):
        PIL.Image.fromarray(np.full((40, 60, 3), 25 * index, np.uint8)).save(sources / f"{index}.png")
        urls.append(f"file://{sources / f'{index}.png'}")
    (sources / "broken.png").write_bytes(b"not an image")
    urls += [f"file://{sources / 'gone.png'}", f"file://{sources / 'broken.png'}"]
    recipe = RunRecipe(
        pipeline=PipelineRecipe(),
        ray=RaySettings(shard_size=4),
        download=DownloadSettings(output_format, 32, threads=2, shard_size=4, allow_url_schemes=["file"],
                                  max_image_bytes=2**20),
    )  # fmt: skip
    with serve_folder(sources) as server:  # the byte cap holds in img2dataset's Ray tasks too
        urls.append(server.url("huge.jpg"))
        url_list = tmp_path / "urls.parquet"
        pq.write_table(pa.table({"URL": urls, "TEXT": [f"alt {index}" for index in range(len(urls))]}), url_list)
        summary = run_pipeline(url_list, tmp_path / "out", ["download"], recipe, show_progress=False, executor="ray")

    shards = list(read_run_input(tmp_path / "out" / "download", tmp_path / "again").shards)
    assert [len(shard) for shard in shards] == [4, 4, 3]
    rows = read_all_shards(tmp_path / "out", ShardPlan.from_shards(shards, 4))
    assert sorted(row["image_hash"] for row in rows) == sorted(url_image_hash(url) for url in urls)
    failed = {row["url"].rsplit("/", 1)[1]: row for row in rows if "error" in row}
    assert set(failed) == {"gone.png", "broken.png", "huge.jpg"} and all(
        row["error_stage"] == "download" for row in failed.values()
    )
    assert failed["huge.jpg"]["error_kind"] == "image over the byte cap"
    fetched = [row for row in rows if "error" not in row]
    assert len(fetched) == 8 and all(PIL.Image.open(row["image"]).size == (48, 32) for row in fetched)
    assert {row["source_caption"] for row in fetched} == {f"alt {index}" for index in range(8)}
    download = summary.stage("download")
    assert (download.rows_in, download.kept, sum(download.failed.values())) == (11, 8, 3)


def test_run_command_with_the_ray_executor_embeds_and_indexes(ray_address, models, tmp_path):
    write_image_folder(tmp_path / "images", 20, corrupt=1)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "ray: {shard_size: 10, actors: {embed: {num_cpus: 0.5, batch_size: 8}}}\n"
        f"embed: {{model: {models['relsim']}, device: cpu}}\n"
        "index: {factory: Flat}\n"
    )
    main(["run", "--executor", "ray", "--input", str(tmp_path / "images"), "--output", str(tmp_path / "out"),
          "--stages", "embed,index", "--recipe", str(recipe)])  # fmt: skip

    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [(stage["stage"], stage["rows_in"], stage["kept"]) for stage in written["stages"]] == [("embed", 21, 20)]
    assert sorted(path.name for path in (tmp_path / "out" / "shards").glob("part-*.parquet")) == [
        "part-00000.parquet", "part-00001.parquet", "part-00002.parquet",
    ]  # fmt: skip
    assert VectorIndex.load(tmp_path / "out" / "index" / "embeddings.faiss").count == 20
    assert shard_path(tmp_path / "out", 0).is_file()


def test_run_recipe_refuses_unknown_settings_by_name():
    with pytest.raises(ValueError, match=r"ray.actors.embed: unknown settings \['gpus'\]"):
        run_recipe_from_dict({"ray": {"actors": {"embed": {"gpus": 1}}}})
    recipe = run_recipe_from_dict({"ray": {"actors": {"filter": {"num_gpus": 1}}}, "filter": {"threshold": 0.7}})
    assert recipe.ray.actor("filter").num_gpus == 1 and recipe.pipeline.filter.threshold == 0.7


def _output_rows(output: Path) -> list[dict]:
    return [
        row for path in sorted((output / "shards").glob("part-*.parquet")) for row in table_to_rows(pq.read_table(path))
    ]


def _assert_same_rows(local: list[dict], on_ray: list[dict], ignored: tuple[str, ...] = ()) -> None:
    assert [row["image_hash"] for row in on_ray] == [row["image_hash"] for row in local]
    for expected, actual in zip(local, on_ray, strict=True):
        assert set(actual) == set(expected), expected["image_hash"]
        for key, value in expected.items():
            if key == "embedding":
                np.testing.assert_allclose(actual[key], value, atol=1e-5, rtol=0)
            elif key == "filter_score":
                assert actual[key] == pytest.approx(value, abs=1e-5)
            elif key not in ignored:
                assert actual[key] == value, (key, expected["image_hash"])


def test_run_command_writes_the_same_output_on_the_local_and_the_ray_executor(ray_address, models, tmp_path):
    write_image_folder(tmp_path / "sources", 14, corrupt=1)
    urls = [f"file://{path}" for path in sorted((tmp_path / "sources").iterdir())] + [f"file://{tmp_path / 'gone.png'}"]
    pq.write_table(pa.table({"url": urls}), tmp_path / "urls.parquet")
    chat = {"model": models["chat"], "max_pixels": CHAT_PIXELS}
    half = {"num_cpus": 0.5, "batch_size": 4}
    caption = {**chat, "decoding": {"max_new_tokens": 3}}
    actors = {"filter": half, "caption": half, "check": {"num_cpus": 0.25}, "embed": half}
    (tmp_path / "recipe.yaml").write_text(json.dumps({
        "device": "cpu", "filter": {**chat, "threshold": THRESHOLD}, "caption": caption,
        "embed": {"model": models["relsim"], "device": "cpu"}, "index": {"factory": "Flat"},
        "download": {"image_size": 32, "threads": 2, "shard_size": 8, "allow_url_schemes": ["file"]},
        "ray": {"shard_size": 8, "actors": actors},
    }))  # fmt: skip
    command = ["run", "--input", str(tmp_path / "urls.parquet"), "--recipe", str(tmp_path / "recipe.yaml"),
               "--stages", "download,filter,caption,check,embed,index"]  # fmt: skip

    local = main([*command, "--output", str(tmp_path / "local")])
    on_ray = main([*command, "--output", str(tmp_path / "ray"), "--ray-address", ray_address])

    # img2dataset writes a shard's rows in the order their downloads finish: compare by image hash
    local_rows, ray_rows = (sorted(_output_rows(tmp_path / side), key=lambda row: row["image_hash"]) for side in
                            ("local", "ray"))  # fmt: skip
    assert len(local_rows) == 16 and sum("error" in row for row in local_rows) == 2  # gone.png, corrupt_0.png
    assert sum("embedding" in row for row in local_rows) >= 3
    _assert_same_rows(local_rows, ray_rows, ignored=("image",))  # each output has its own downloaded images
    assert [asdict(stage) for stage in on_ray.stages] == [asdict(stage) for stage in local.stages]
    assert {**on_ray.index, "path": ""} == {**local.index, "path": ""} and local.index["recall"] == 1.0
    for name in ("captions.jsonl", "index/ids.jsonl"):  # captions.jsonl: the captions passing the check
        lines = [sorted((tmp_path / side / name).read_text().splitlines()) for side in ("local", "ray")]
        assert lines[0] == lines[1] and (name == "captions.jsonl" or len(lines[0]) > 0), name
    captions = [sorted((row["image_hash"], row["caption"]) for row in read_stage_rows(tmp_path / side, "caption"))
                for side in ("local", "ray")]  # fmt: skip
    assert len(captions[0]) == local.stage("caption").rows_in > 0 and captions[0] == captions[1]
    assert not (tmp_path / "local" / "embed.jsonl").exists()  # the vectors live in the shards and the index


def test_filter_score_and_caption_generate_run_on_ray_with_the_local_files(ray_address, models, tmp_path, caplog):
    write_image_folder(tmp_path / "images", 6, corrupt=1)
    chat = {"model": models["chat"], "max_pixels": CHAT_PIXELS}
    caption = {**chat, "decoding": {"max_new_tokens": 3}}
    (tmp_path / "recipe.yaml").write_text(json.dumps({
        "device": "cpu", "filter": {**chat, "threshold": THRESHOLD}, "caption": caption,
        "ray": {"shard_size": 4, "actors": {"filter": {"num_cpus": 0.5}, "caption": {"num_cpus": 0.5}}},
    }))  # fmt: skip
    common = ["--input", str(tmp_path / "images"), "--recipe", str(tmp_path / "recipe.yaml")]
    for command, stage, on_ray in (
        (["filter", "score"], "filter", ["--executor", "ray"]),
        (["caption", "generate"], "caption", ["--ray-address", ray_address]),
    ):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="training.pipeline.run.sharded"):
            ray_summary = main([*command, *common, "--output", str(tmp_path / f"{stage}-ray"), *on_ray])
        assert "shards to compute" in caplog.text and "(ray executor)" in caplog.text
        local_summary = main([*command, *common, "--output", str(tmp_path / f"{stage}-local")])

        local_rows = read_stage_rows(tmp_path / f"{stage}-local", stage)
        assert len(local_rows) == 7 and sum("error" in row for row in local_rows) == 1
        _assert_same_rows(local_rows, read_stage_rows(tmp_path / f"{stage}-ray", stage))
        assert ray_summary == local_summary
        assert len(list((tmp_path / f"{stage}-ray" / "shards").glob("part-*.parquet"))) == 2
