"""A short run of the whole demo pipeline: generate, train with the tiny-cpu recipe, benchmark, report."""

from training.demo import TRAINED, UNTRAINED, main, verdict


def test_demo_pipeline_writes_every_report_file(tmp_path):
    run = main(["--output", str(tmp_path), "--max-steps", "6", "--train-per-family", "6", "--pool-per-family", "4"])
    assert set(run.table) == {"pixel cosine", "colour histogram", UNTRAINED, TRAINED}
    produced = {path.name for path in tmp_path.iterdir() if path.is_file()}
    assert produced == {
        "report.md",
        "neighbours_relsim-trained.png",
        "neighbours_pixel-cosine.png",
        "similarity_space.png",
    }
    report = (tmp_path / "report.md").read_text()
    assert "| relsim (trained) |" in report and "Training: 6 steps" in report and "Bar " in report
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


def test_verdict_applies_the_bar():
    table = {
        "pixel cosine": {"mAP": 0.3, "attribute trap": 0.2},
        "colour histogram": {"mAP": 0.2, "attribute trap": 0.6},
        TRAINED: {"mAP": 0.8, "attribute trap": 0.08},
    }
    assert verdict(table).startswith("**Bar met**")
    table[TRAINED] = {"mAP": 0.4, "attribute trap": 0.08}
    assert verdict(table).startswith("**Bar NOT met**")
