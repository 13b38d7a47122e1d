"""The ablate command: variants as data, fail-fast on unknown fields, report rows and columns, resumable runs."""

import json
from pathlib import Path

import pytest
import yaml

from training.evaluation.__main__ import main
from training.evaluation.ablation import read_plan
from training.evaluation.ablation_report import summarise


ROOT = Path(__file__).resolve().parents[1]


def write_plan(folder: Path, variants: list[dict], world: str = "relations") -> Path:
    plan = {
        "recipe": str(ROOT / "training/configs/tiny-cpu.yaml"),
        "steps": 3,
        "warmup_fraction": 0.0,
        "world": world,
        "pool_num_per_relation": 2,
        "pool_num_per_family": 2,
        "pool_seed": 1,
        "overrides": {
            "synthetic_num_per_family": 1 if world == "relations" else 4,
            "synthetic_eval_num_per_family": None,
            "logging_steps": 1,
            "per_device_train_batch_size": 8,
            "dataloader_num_workers": 0,
            "disable_tqdm": True,
        },
        "variants": variants,
    }
    path = folder / "plan.yaml"
    path.write_text(yaml.safe_dump(plan), encoding="utf-8")
    return path


RELATION_METRICS = ["seen mAP", "unseen mAP", "unseen text mAP", "unseen attribute trap"]


def test_ablate_writes_a_report_with_one_row_per_variant_and_resumes(tmp_path, caplog):
    plan = write_plan(
        tmp_path,
        [
            {"name": "relsim", "about": "the default loss", "overrides": {}},
            {
                "name": "tuned-clip",
                "about": "tiny CLIP",
                "overrides": {"tiny_backbone": False, "tiny_image_encoder": "clip"},
            },
        ],
    )
    output = tmp_path / "report"
    main(["ablate", "--plan", str(plan), "--output", str(output), "--seeds", "1", "--steps", "2"])

    report = json.loads((output / "report.json").read_text())
    assert [variant["name"] for variant in report["variants"]] == ["relsim", "tuned-clip"]
    assert report["steps"] == 2 and report["seeds"] == 1 and report["world"] == "relations"
    assert report["pool"] == {"num_per_relation": 2, "seed": 1}
    for variant in report["variants"]:
        assert list(variant["summary"]) == [*RELATION_METRICS, "seconds per step"]
        assert [run["seed"] for run in variant["runs"]] == [0] and variant["runs"][0]["steps"] == 2
        assert variant["summary"]["unseen mAP"]["std"] == 0.0
        for metric in RELATION_METRICS:  # both are in the caption space: the text metric is a number too
            assert 0.0 <= variant["summary"][metric]["mean"] <= 1.0, metric
        assert variant["runs"][0]["seconds_per_step"] > 0
        assert 0.0 <= variant["runs"][0]["metrics"]["unseen layout mAP"] <= 1.0  # every metric is kept
    stored = json.loads((output / "runs/relsim/seed-0/result.json").read_text())
    assert stored["settings"]["synthetic_world"] == "relations"
    markdown = (output / "report.md").read_text()
    assert "| variant | seen mAP | unseen mAP | unseen text mAP | unseen attribute trap | s/step |" in markdown
    assert "never appear in training (unseen)" in markdown
    rows = [line for line in markdown.splitlines() if line.startswith(("| relsim |", "| tuned-clip |"))]
    assert len(rows) == 2 and all(line.count("|") == 7 for line in rows)
    assert (output / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (output / "runs/tuned-clip/seed-0/result.json").is_file()

    caplog.set_level("INFO", logger="training.evaluation.ablation")
    main(["ablate", "--plan", str(plan), "--output", str(output), "--seeds", "1", "--steps", "2"])
    assert "relsim seed 0: already done" in caplog.text and "tuned-clip seed 0: already done" in caplog.text
    assert json.loads((output / "report.json").read_text())["variants"] == report["variants"]

    # --seeds and --variants: seed 0 is reused, seed 1 trained; the table gets a spread
    main(
        [
            "ablate",
            "--plan",
            str(plan),
            "--output",
            str(output),
            "--seeds",
            "2",
            "--steps",
            "2",
            "--variants",
            "tuned-clip",
        ]
    )
    (clip,) = json.loads((output / "report.json").read_text())["variants"]
    assert [run["seed"] for run in clip["runs"]] == [0, 1] and (output / "runs/tuned-clip/seed-1/result.json").is_file()
    assert clip["runs"][0] == report["variants"][1]["runs"][0]
    seen = [run["metrics"]["seen mAP"] for run in clip["runs"]]
    assert clip["summary"]["seen mAP"]["mean"] == pytest.approx(sum(seen) / 2)
    assert clip["summary"]["seen mAP"]["std"] == pytest.approx(abs(seen[0] - seen[1]) / 2**0.5)


def test_the_families_world_still_runs(tmp_path):
    plan = write_plan(tmp_path, [{"name": "relsim", "overrides": {}}], world="families")
    output = tmp_path / "report"
    main(["ablate", "--plan", str(plan), "--output", str(output), "--seeds", "1", "--steps", "1"])
    report = json.loads((output / "report.json").read_text())
    assert report["world"] == "families" and report["pool"] == {"num_per_family": 2, "seed": 1}
    assert list(report["variants"][0]["summary"]) == ["mAP", "recall@1", "attribute trap", "seconds per step"]
    assert "| variant | mAP | recall@1 | attribute trap | s/step |" in (output / "report.md").read_text()


def test_an_unknown_field_stops_the_ablation_before_any_training(tmp_path):
    plan = write_plan(
        tmp_path,
        [
            {"name": "relsim", "overrides": {}},
            {"name": "mystery", "overrides": {"not_a_trainer_field": 1.0}},
        ],
    )
    with pytest.raises(ValueError, match="variant 'mystery': unknown field 'not_a_trainer_field'"):
        main(["ablate", "--plan", str(plan), "--output", str(tmp_path / "out"), "--seeds", "1"])
    assert not (tmp_path / "out" / "runs").exists()


def test_the_default_plan_lists_the_issues_variants():
    plan = read_plan(ROOT / "training/configs/ablation-tiny-cpu.yaml")
    assert [variant.name for variant in plan.variants] == [
        "relsim",
        "intra-image",
        "distillation",
        "caption-queue",
        "prototypes",
        "all-options",
        "tuned-clip",
        "tuned-dinov2",
    ]
    with pytest.raises(ValueError, match="no variant 'nope'"):
        plan.select(["nope"])
    from training.synthetic.relations import relation_split

    assert plan.world == "relations" and plan.reported_metrics == tuple(RELATION_METRICS)
    # prototypes are initialised by k-means of the distinct training captions: one per seen relation
    prototypes = {variant.overrides.get("num_prototypes", 0) for variant in plan.variants}
    assert prototypes == {0, 32} and 32 < len(relation_split("train")) == 305


def test_the_summary_is_the_mean_and_sample_standard_deviation():
    runs = [
        {"metrics": {"mAP": 0.2, "recall@1": 0.5, "attribute trap": 0.1}, "seconds_per_step": 1.0},
        {"metrics": {"mAP": 0.4, "recall@1": 0.5, "attribute trap": 0.3}, "seconds_per_step": 3.0},
    ]
    summary = summarise(runs, ["mAP", "recall@1", "attribute trap"])
    assert summary["mAP"]["mean"] == pytest.approx(0.3)
    assert summary["mAP"]["std"] == pytest.approx(0.1414213562)  # sqrt(((0.1)^2 + (0.1)^2) / (2 - 1))
    assert summary["recall@1"] == {"mean": pytest.approx(0.5), "std": 0.0}
    assert summary["seconds per step"]["mean"] == pytest.approx(2.0)
