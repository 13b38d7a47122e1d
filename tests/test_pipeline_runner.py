"""The pipeline's run with the local executor: batches, unreadable images, the summary, a finished run, repeats;
and the Ray executor's batch entry (`StageActor`) on a table, without Ray."""

import json

import pytest

from tests.pipeline_helpers import ImageSizeStage, WideFilterStage, run_locally, write_images
from training.pipeline.inputs import rows_from_folder
from training.pipeline.run.ray_executor import StageActor
from training.pipeline.run.recipe import RaySettings
from training.pipeline.run.sharded import run
from training.pipeline.run.shards import POSITION_COLUMN, SHARD_COLUMN, rows_to_table, table_to_rows
from training.pipeline.run.summary import read_stage_rows


SIZES = [(40, 30), (30, 40), (50, 20), (20, 20), (60, 30), (30, 60), (44, 33)]  # 4 wider than tall


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "images"
    write_images(images, SIZES)
    (images / "broken.png").write_bytes(b"not a png at all")
    return images


def test_each_stage_writes_every_row_once_and_passes_on_only_kept_readable_rows(folder, tmp_path):
    size, wide = ImageSizeStage(), WideFilterStage()
    run_locally(
        rows_from_folder(folder), [size, wide], tmp_path / "out", batch_size=3, settings=RaySettings(shard_size=5)
    )

    size_rows = read_stage_rows(tmp_path / "out", "size")
    assert len(size_rows) == 8 and len({row["image_hash"] for row in size_rows}) == 8
    assert sorted((row["width"], row["height"]) for row in size_rows if "error" not in row) == sorted(SIZES)
    assert len(wide.seen) == 7  # the broken file never reaches the second stage
    wide_rows = read_stage_rows(tmp_path / "out", "wide")
    assert len(wide_rows) == 7 and sum(row["kept"] for row in wide_rows) == 4
    assert size.setups == 1


def test_unreadable_image_is_a_counted_error_row_naming_the_file(folder, tmp_path):
    summary = run_locally(rows_from_folder(folder), [ImageSizeStage()], tmp_path / "out")

    (broken,) = [row for row in read_stage_rows(tmp_path / "out", "size") if "error" in row]
    assert broken["image"].endswith("broken.png")
    assert broken["error"].startswith(f"{folder / 'broken.png'}: ")
    assert "width" not in broken  # never replaced by another image's result
    assert summary.stage("size").failed == {broken["error_kind"]: 1}


def test_summary_counts_rows_in_kept_dropped_and_failed_per_stage(folder, tmp_path):
    run_locally(rows_from_folder(folder), [ImageSizeStage(), WideFilterStage()], tmp_path / "out")

    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert written["rows_in"] == 8 and written["duplicate_inputs"] == 0
    size, wide = written["stages"]
    assert (size["stage"], size["rows_in"], size["kept"], size["dropped"], sum(size["failed"].values())) == (
        "size", 8, 7, 0, 1,
    )  # fmt: skip
    assert (wide["stage"], wide["rows_in"], wide["kept"], wide["dropped"], wide["failed"]) == ("wide", 7, 4, 3, {})
    assert size["computed_now"] == 8 and size["done_before"] == 0


def test_finished_run_reruns_without_loading_any_model(folder, tmp_path):
    rows = rows_from_folder(folder)
    run_locally(rows, [ImageSizeStage(), WideFilterStage()], tmp_path / "out")
    size, wide = ImageSizeStage(), WideFilterStage()

    summary = run_locally(rows, [size, wide], tmp_path / "out")

    assert size.setups == 0 and size.processed_hashes == [] and wide.seen == []
    assert len(read_stage_rows(tmp_path / "out", "size")) == 8
    assert summary.stage("wide").kept == 4 and summary.stage("wide").done_before == 7


def test_repeated_input_hashes_are_processed_once_and_counted(folder, tmp_path):
    rows = rows_from_folder(folder)
    summary = run_locally([*rows, *rows[:3]], [ImageSizeStage()], tmp_path / "out")

    assert summary.duplicate_inputs == 3
    assert len(read_stage_rows(tmp_path / "out", "size")) == 8


def test_run_refuses_an_unknown_executor_and_invalid_ids(tmp_path):
    with pytest.raises(ValueError, match="unknown executor 'spark'"):
        run([], [ImageSizeStage()], tmp_path, executor="spark")
    with pytest.raises(ValueError, match=r"input row 0: image_hash: .\.\./\.\./x. is not an image hash"):
        run([{"image_hash": "../../x", "image": "a.png"}], [ImageSizeStage()], tmp_path)


def test_the_ray_batch_entry_takes_a_table_and_returns_every_row_with_the_stage_fields(folder):
    rows = [{**row, SHARD_COLUMN: 0, POSITION_COLUMN: index} for index, row in enumerate(rows_from_folder(folder)[:3])]
    stage = ImageSizeStage()

    output = table_to_rows(StageActor(stage)(rows_to_table(rows)))

    assert stage.setups == 1
    assert [row["image_hash"] for row in output] == [row["image_hash"] for row in rows]
    assert [(row["width"], row["height"]) for row in output] == SIZES[:3]
    assert [row.get("error") for row in output] == [None, None, None]
