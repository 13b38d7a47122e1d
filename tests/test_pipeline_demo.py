"""The pipeline demo on the compositional world: a tiny end-to-end run (few relations, few steps, two seeds) writes
every stage and the report (bars not asserted), and the verdict over seeds is judged on the means."""

import json

import pytest

from training.pipeline.__main__ import main
from training.pipeline.demo_report import PIPELINE_CAPTIONS, TRUE_CAPTIONS, DemoResult, bars, summarise
from training.pipeline.run.summary import read_stage_rows


SPLITS = ("seen relations", "unseen relations")


def test_demo_with_tiny_steps_writes_every_stage_and_the_report_over_two_seeds(tmp_path):
    output = tmp_path / "demo"
    main([
        "demo", "--output", str(output), "--seeds", "0", "1", "--max-relations", "3", "--filter-per-relation", "1",
        "--filter-steps", "1", "--captioner-per-relation", "2", "--captioner-steps", "1", "--heldout-per-relation",
        "1", "--pool-per-relation", "2", "--pool-negatives", "4", "--relsim-steps", "1", "--benchmark-per-relation",
        "2", "--torch-threads", "1",
    ])  # fmt: skip

    pipeline = output / "seed-1" / "pipeline"
    assert len(read_stage_rows(pipeline, "filter")) == 3 * 2 + 4
    summary = json.loads((pipeline / "summary.json").read_text())
    assert [stage["stage"] for stage in summary["stages"]] == ["filter", "caption", "check", "handoff"]
    kept = summary["stages"][0]["kept"]
    assert [stage["rows_in"] for stage in summary["stages"][1:]] == [kept, kept, kept]
    assert (pipeline / "handoff" / "captions.jsonl").is_file()

    results = json.loads((output / "results.json").read_text())
    assert results["seeds"] == [0, 1] and [run["seed"] for run in results["runs"]] == [0, 1]
    figures = results["figures"]
    for split in SPLITS:
        for name in (
            f"filter agreement, {split}", f"captioner exact caption, {split}", f"captioner layout, {split}",
            f"captioner structure, {split}", f"captioner nearest caption, {split}",
            f"relsim mAP ratio pipeline/true, {split}", f"{TRUE_CAPTIONS} mAP, {split}",
        ):  # fmt: skip
            assert len(figures[name]["values"]) == 2 and 0 <= figures[name]["mean"] <= 1.5, name
        assert results["chance"][f"captioner nearest caption, {split}"] == pytest.approx(1 / 407)
        # three relations of one image each: the most common change covers 1, 2 or 3 of them
        assert results["chance"][f"captioner change, {split}"] in (pytest.approx(1 / 3), pytest.approx(2 / 3), 1.0)
    assert "relsim mAP ratio pipeline/true, all relations" in figures
    assert [bar["bar"] for bar in results["bars"]] == [
        ">= 0.9, and 0.2 above untrained", ">= 0.9, and 0.2 above untrained", ">= 0.8", ">= 0.9"
    ]  # fmt: skip
    # one held-out image of each of 3 seen and 3 unseen relations, the filter's beside as many negatives
    first = results["runs"][0]
    assert first["filter"]["unseen relations"]["held-out images"] == 3 + 3
    assert first["captioner"]["unseen relations"]["count"] == 3 and first["captioner"]["seen relations"]["count"] == 3

    report = (output / "report.md").read_text()
    for row in (PIPELINE_CAPTIONS, TRUE_CAPTIONS, "filter agreement, held-out looks of unseen relations",
                "| nearest caption |", "unseen-relation queries", "- seed 1:", "Verdict", "Seeds: [0, 1]"):  # fmt: skip
        assert row in report, row


def _result(seed: int, seen_agreement: float, nearest: float, pipeline_map: float) -> DemoResult:
    composition = {
        "exact": 0.5, "nearest": nearest, "factors": {"layout": 1.0, "change": 0.5, "exception": 0.5, "structure": 1.0},
        "chance": {
            "exact": 1 / 407, "nearest": 1 / 407, "layout": 0.2, "change": 0.5, "exception": 0.5, "structure": 0.4
        },
    }  # fmt: skip
    filtered = {"trained agreement": seen_agreement, "untrained agreement": 0.5, "trained ROC-AUC": 0.9}
    maps = {f"mAP, {split}": 0.5 for split in (*SPLITS, "all relations")}
    return DemoResult(
        seed=seed,
        filter={"seen relations": filtered, "unseen relations": {**filtered, "trained agreement": 0.95}},
        captioner={"seen relations": composition, "unseen relations": composition},
        benchmark={TRUE_CAPTIONS: maps, PIPELINE_CAPTIONS: {**maps, "mAP, all relations": pipeline_map}},
    )


def test_the_bars_are_judged_on_the_mean_over_seeds_and_the_spread_is_the_sample_std():
    summary = summarise([_result(0, 0.85, 0.9, 0.40), _result(1, 0.97, 0.6, 0.52)])
    assert summary["filter agreement, seen relations"]["mean"] == pytest.approx(0.91)
    assert summary["filter agreement, seen relations"]["std"] == pytest.approx(0.0848528, abs=1e-6)
    assert summary["relsim mAP ratio pipeline/true, all relations"]["values"] == pytest.approx([0.8, 1.04])
    checks = bars(summary)
    # seed 0 misses the filter bar and seed 1 the captioner's; the means meet the first two and miss the third
    assert [met for _, _, _, met in checks] == [True, True, False, True]
    assert checks[0][1] == "0.910 ± 0.085 (untrained 0.500)"
    assert checks[3][1] == "0.460 ± 0.085 / 0.500 ± 0.000 = 0.920 ± 0.170"


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--max-relations", "0"], "--max-relations must be at least 1, got 0"),
        (["--heldout-per-relation", "0"], "--heldout-per-relation must be at least 1, got 0"),
        (["--seeds", "1", "1"], "--seeds must differ from each other (each writes seed-<n>/), got [1, 1]"),
    ],
)
def test_a_bad_count_is_one_line_naming_the_option_with_exit_status_2(tmp_path, capsys, option, message):
    from training.cli import run_program

    status = run_program(main, ["demo", "--output", str(tmp_path), *option], has_commands=True)
    assert status == 2
    assert capsys.readouterr().err.strip().endswith(f"demo: error: {message}")
    assert not (tmp_path / "seed-1").exists()
