"""The local pipeline runner: batches, resume after an interruption, unreadable images, the summary."""

import json

import pytest

from tests.pipeline_helpers import ImageSizeStage, WideFilterStage, write_images
from training.pipeline.inputs import rows_from_folder
from training.pipeline.runner import read_stage_rows, run, run_stages


SIZES = [(40, 30), (30, 40), (50, 20), (20, 20), (60, 30), (30, 60), (44, 33)]  # 4 wider than tall


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "images"
    write_images(images, SIZES)
    (images / "broken.png").write_bytes(b"not a png at all")
    return images


def test_each_stage_writes_every_row_once_and_passes_on_only_kept_readable_rows(folder, tmp_path):
    size, wide = ImageSizeStage(), WideFilterStage()
    run_stages(rows_from_folder(folder), [size, wide], tmp_path / "out", batch_size=3, show_progress=False)

    size_rows = read_stage_rows(tmp_path / "out", "size")
    assert len(size_rows) == 8 and len({row["image_hash"] for row in size_rows}) == 8
    assert sorted((row["width"], row["height"]) for row in size_rows if "error" not in row) == sorted(SIZES)
    assert len(wide.seen) == 7  # the broken file never reaches the second stage
    wide_rows = read_stage_rows(tmp_path / "out", "wide")
    assert sum(row["kept"] for row in wide_rows) == 4
    assert size.setups == 1


def test_unreadable_image_is_a_counted_error_row_naming_the_file(folder, tmp_path):
    summary = run_stages(rows_from_folder(folder), [ImageSizeStage()], tmp_path / "out", show_progress=False)

    (broken,) = [row for row in read_stage_rows(tmp_path / "out", "size") if "error" in row]
    assert broken["image"].endswith("broken.png")
    assert broken["error"].startswith(f"{folder / 'broken.png'}: ")
    assert "width" not in broken  # never replaced by another image's result
    assert summary.stage("size").failed == {broken["error_kind"]: 1}


def test_summary_counts_rows_in_kept_dropped_and_failed_per_stage(folder, tmp_path):
    run_stages(rows_from_folder(folder), [ImageSizeStage(), WideFilterStage()], tmp_path / "out", show_progress=False)

    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert written["rows_in"] == 8 and written["duplicate_inputs"] == 0
    size, wide = written["stages"]
    assert (size["stage"], size["rows_in"], size["kept"], size["dropped"], sum(size["failed"].values())) == (
        "size", 8, 7, 0, 1,
    )  # fmt: skip
    assert (wide["stage"], wide["rows_in"], wide["kept"], wide["dropped"], wide["failed"]) == ("wide", 7, 4, 3, {})
    assert size["computed_now"] == 8 and size["done_before"] == 0


def test_interrupted_run_resumes_without_recomputing_or_duplicating_rows(folder, tmp_path):
    rows = rows_from_folder(folder)
    reference_dir, resumed_dir = tmp_path / "reference", tmp_path / "resumed"
    run_stages(rows, [ImageSizeStage(), WideFilterStage()], reference_dir, batch_size=2, show_progress=False)

    interrupted = ImageSizeStage(fail_after=4)  # two batches of two, then the third raises
    with pytest.raises(KeyboardInterrupt):
        run_stages(rows, [interrupted, WideFilterStage()], resumed_dir, batch_size=2, show_progress=False)
    assert len(read_stage_rows(resumed_dir, "size")) == 4
    assert not (resumed_dir / "wide.jsonl").exists()

    rerun = ImageSizeStage()
    summary = run_stages(rows, [rerun, WideFilterStage()], resumed_dir, batch_size=2, show_progress=False)

    assert set(rerun.processed_hashes).isdisjoint(interrupted.processed_hashes)
    assert len(rerun.processed_hashes) == 7 - 4  # the broken file is recorded without calling the stage
    for stage in ("size", "wide"):
        assert read_stage_rows(resumed_dir, stage) == read_stage_rows(reference_dir, stage)
    assert (summary.stage("size").done_before, summary.stage("size").computed_now) == (4, 4)


def test_finished_run_reruns_without_loading_any_model(folder, tmp_path):
    rows = rows_from_folder(folder)
    run_stages(rows, [ImageSizeStage(), WideFilterStage()], tmp_path / "out", show_progress=False)
    size, wide = ImageSizeStage(), WideFilterStage()

    summary = run_stages(rows, [size, wide], tmp_path / "out", show_progress=False)

    assert size.setups == 0 and size.processed_hashes == [] and wide.seen == []
    assert len(read_stage_rows(tmp_path / "out", "size")) == 8
    assert summary.stage("wide").kept == 4 and summary.stage("wide").done_before == 7


def test_repeated_input_hashes_are_processed_once_and_counted(folder, tmp_path):
    rows = rows_from_folder(folder)
    summary = run_stages([*rows, *rows[:3]], [ImageSizeStage()], tmp_path / "out", show_progress=False)

    assert summary.duplicate_inputs == 3
    assert len(read_stage_rows(tmp_path / "out", "size")) == 8


def test_run_refuses_an_unknown_executor_and_invalid_ids(tmp_path):
    with pytest.raises(ValueError, match="unknown executor 'spark'"):
        run([], [ImageSizeStage()], tmp_path, executor="spark")
    with pytest.raises(ValueError, match=r"input row 0: image_hash: .\.\./\.\./x. is not an image hash"):
        run([{"image_hash": "../../x", "image": "a.png"}], [ImageSizeStage()], tmp_path)


def test_stage_called_with_columns_returns_columns_as_ray_map_batches_expects(folder):
    rows = rows_from_folder(folder)[:3]
    columns = {"image_hash": [row["image_hash"] for row in rows], "image": [row["image"] for row in rows]}
    stage = ImageSizeStage()

    output = stage(columns)

    assert stage.setups == 1
    assert output["image_hash"] == columns["image_hash"]
    assert list(zip(output["width"], output["height"], strict=True)) == SIZES[:3]
    assert output["error"] == [None, None, None]
