"""A short run of the whole demo: generate the compositional world, train with the demo recipe, benchmark seen and
unseen relations, report, search."""

import json

import pytest

from training.demo import RESULTS_FILE, TRAINED, UNTRAINED, main, parser, seeds_markdown
from training.evaluation.relation_benchmark import SEEN_METRICS, UNSEEN_METRICS
from training.evaluation.synthetic_retrieval import COLOUR_HISTOGRAM, PIXEL_COSINE


def test_demo_trains_on_seen_relations_and_its_report_leads_with_unseen_ones(tmp_path):
    run = main(["--output", str(tmp_path), "--max-steps", "6", "--train-per-relation", "1", "--pool-per-relation", "2"])
    assert set(run.table) == {PIXEL_COSINE, COLOUR_HISTOGRAM, UNTRAINED, TRAINED}
    assert len(run.pool) == 814 and sum(run.pool["unseen"]) == 204
    produced = {path.name for path in tmp_path.iterdir() if path.is_file()}
    assert produced == {
        "report.md",
        RESULTS_FILE,
        "text_query.png",
        *(
            f"neighbours_{split}_{name}.png"
            for split in ("unseen", "seen")
            for name in ("relsim-trained", "pixel-cosine")
        ),
    }
    report = (tmp_path / "report.md").read_text()
    unseen, seen, search = report.index("## Unseen relations"), report.index("## Seen relations"), report.index(
        "## Search by image and by relation text"
    )  # fmt: skip
    assert unseen < seen < search
    assert "**Targets for relsim (trained)**" in report and "Training: 6 steps" in report
    assert "- relations training never saw: relation-text mAP" in report
    # both shown search queries are of relations training never saw
    results = json.loads((tmp_path / RESULTS_FILE).read_text())
    unseen_relations = {name for name, flag in zip(run.pool["relation"], run.pool["unseen"], strict=True) if flag}
    shown = [line.rsplit("(", 1)[1].rstrip("):") for line in report.splitlines() if line.startswith(("Image query",
             "Relation-text query"))]  # fmt: skip
    assert len(shown) == 2 and set(shown) <= unseen_relations
    assert results["seed"] == 0 and results["table"][TRAINED]["unseen mAP"] == pytest.approx(
        run.table[TRAINED]["unseen mAP"]
    )
    assert 0 <= results["search"]["unseen why accuracy"] <= 1 and results["search"]["why chance"] == pytest.approx(
        1 / 407
    )
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    assert len((tmp_path / "search-index" / "manifest.jsonl").read_text().splitlines()) == 814


def test_several_seeds_report_each_figure_as_mean_and_spread():
    def result(seed, trained_unseen, trained_seen):
        row = {metric: 0.1 for metric in (*UNSEEN_METRICS, *SEEN_METRICS)}
        return {
            "seed": seed,
            "table": {
                PIXEL_COSINE: dict(row),
                COLOUR_HISTOGRAM: dict(row),
                TRAINED: {**row, "unseen mAP": trained_unseen, "seen mAP": trained_seen, "unseen text mAP": 0.6},
            },
            "chance": {metric: 0.01 for metric in (*UNSEEN_METRICS, *SEEN_METRICS)},
            "search": {"unseen relation-text mAP": trained_unseen, "why chance": 1 / 407},
        }

    text = seeds_markdown([result(0, 0.3, 0.75), result(1, 0.5, 0.95), result(2, 0.4, 0.85)])
    assert "3 seeds (0, 1, 2)" in text
    assert "| relsim (trained) | 0.400 ± 0.100 |" in text  # unseen mAP: mean 0.4, sample std 0.1
    assert "| relsim (trained) | 0.850 ± 0.100 |" in text  # seen mAP
    # the targets are judged on the means: 0.4 >= 2 x 0.1, 0.6 >= 0.5, 0.85 >= 0.8
    assert "(3 of 3 met)" in text and "**missed**" not in text


def test_repeated_seeds_are_refused(capsys):
    with pytest.raises(SystemExit) as stopped:
        parser_run = main(["--seeds", "1", "1"])
        del parser_run
    assert stopped.value.code == 2 and "--seeds repeats a seed: [1, 1]" in capsys.readouterr().err
    assert parser().parse_args([]).seeds == [0]
