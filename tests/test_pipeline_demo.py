"""The pipeline demo with tiny step counts: every stage's output and the report's table (bars not asserted)."""

import json

from training.pipeline.__main__ import main
from training.pipeline.run.summary import read_stage_rows


def test_demo_with_tiny_steps_writes_every_stage_and_the_report(tmp_path):
    output = tmp_path / "demo"
    main([
        "demo", "--output", str(output), "--filter-per-family", "2", "--filter-steps", "2",
        "--captioner-per-family", "2", "--captioner-steps", "2", "--heldout-per-family", "1",
        "--pool-per-family", "2", "--pool-negatives", "4", "--relsim-steps", "2", "--benchmark-per-family", "2",
    ])  # fmt: skip

    pipeline = output / "pipeline"
    assert len(read_stage_rows(pipeline, "filter")) == 8 * 2 + 4
    summary = json.loads((pipeline / "summary.json").read_text())
    assert [stage["stage"] for stage in summary["stages"]] == ["filter", "caption", "check", "handoff"]
    assert summary["stages"][0]["rows_in"] == 20
    kept = summary["stages"][0]["kept"]
    assert [stage["rows_in"] for stage in summary["stages"][1:]] == [kept, kept, kept]
    assert (pipeline / "handoff" / "captions.jsonl").is_file()
    report = (output / "report.md").read_text()
    for row in ("relsim (pipeline captions)", "relsim (true captions)", "filter agreement", "captioner:", "Verdict"):
        assert row in report
    results = json.loads((output / "results.json").read_text())
    assert set(results["benchmark"]) >= {"relsim (pipeline captions)", "relsim (true captions)"}
