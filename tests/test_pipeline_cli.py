"""The pipeline's commands through `main([...])` on the tiny models: filter train/evaluate, group-caption, caption
train/evaluate, and the local-folder chain images -> hand-off -> `hub_data build` -> the trainer's reader."""

import io
import json
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pytest
import yaml

from tests.pipeline_helpers import run_locally, write_images
from training.image_ids import file_image_hash, url_image_hash
from training.pipeline.__main__ import main
from training.pipeline.run.summary import read_stage_rows
from training.pipeline.stages import Stage


FILTER_RECIPE = "training/configs/filter-tiny-cpu.yaml"
CAPTIONER_RECIPE = "training/configs/captioner-tiny-cpu.yaml"


def image(seed: int, size: int = 56) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def recipe(tmp_path, source: str, **changes) -> str:
    values = {**yaml.safe_load(Path(source).read_text(encoding="utf-8")), **changes}
    path = tmp_path / f"recipe-{len(list(tmp_path.glob('recipe-*')))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_filter_train_on_synthetic_images_saves_the_model_and_both_reports(tmp_path):
    small = recipe(
        tmp_path, FILTER_RECIPE, max_steps=2, warmup_steps=0, synthetic_eval_positives_per_family=1,
        synthetic_eval_negatives=8, synthetic_image_size=56, max_pixels=56 * 56,
    )  # fmt: skip
    report = main(
        ["filter", "train", "--recipe", small, "--synthetic-per-family", "1", "--output", str(tmp_path / "f")]
    )

    assert report["num_train_relational"] == 8 and report["num_train_not_relational"] == 8
    assert report["trained"]["num_images"] == report["untrained"]["num_images"] == 16
    assert (tmp_path / "f" / "model" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "f" / "synthetic_filter.json").read_text())["trained"] == report["trained"]
    assert (tmp_path / "f" / "trained" / "pr_curve.png").is_file()


def test_filter_train_on_built_labels_holds_out_a_stratified_share(tmp_path):
    labels = [1, 0, 0, 0] * 5
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=["not_relational", "relational"]),
         "image_hash": datasets.Value("string")}
    )  # fmt: skip
    built = datasets.Dataset.from_dict(
        {"image": [image(i) for i in range(20)], "label": labels, "image_hash": [f"{i:032x}" for i in range(20)]},
        features=features,
    )
    built.save_to_disk(tmp_path / "built" / "filter_labels")
    small = recipe(tmp_path, FILTER_RECIPE, max_steps=1, warmup_steps=0, eval_fraction=0.2, max_pixels=56 * 56)
    del_synthetic = recipe(tmp_path, small, synthetic_positives_per_family=None, synthetic_negatives=None)

    report = main(
        [
            "filter",
            "train",
            "--recipe",
            del_synthetic,
            "--labels",
            str(tmp_path / "built"),
            "--output",
            str(tmp_path / "f"),
        ]
    )

    held_out = report["trained"]
    assert held_out["num_images"] == 4 and held_out["num_relational"] == 1  # 20% of 20, stratified 1:3
    assert json.loads((tmp_path / "f" / "evaluation" / "filter_report.json").read_text()) == held_out
    assert (tmp_path / "f" / "model" / "model.safetensors").is_file()


def test_filter_evaluate_joins_scores_and_labels_by_image_hash(tmp_path):
    ids = [f"{i:032x}" for i in range(6)]
    scores = write_jsonl(
        tmp_path / "filter.jsonl",
        [
            {"image_hash": ids[0], "filter_score": 0.9, "kept": True},
            {"image_hash": ids[1], "filter_score": 0.7, "kept": True},
            {"image_hash": ids[2], "filter_score": 0.4, "kept": False},
            {"image_hash": ids[3], "filter_score": 0.2, "kept": False},
            {"image_hash": ids[4], "error": "x.png: truncated"},
            {"image_hash": ids[5], "filter_score": 0.99, "kept": True},  # no label: left out
        ],
    )
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "image_hash,label\n" + "".join(f"{i},{v}\n" for i, v in zip(ids[:5], [1, 0, 1, 0, 1], strict=True))
    )

    report = main(
        ["filter", "evaluate", "--scores", str(scores), "--labels", str(labels), "--output", str(tmp_path / "r")]
    )

    assert (report.num_images, report.num_unscored, report.num_relational) == (5, 1, 2)
    assert report.threshold == 0.9 and report.agreement == 0.75  # keep 0.9 only: 0.4 is the one miss (ties: higher)
    assert report.agreement_at_half == 0.5 and report.roc_auc == 0.75
    assert (tmp_path / "r" / "pr_curve.png").is_file()
    labels.write_text("image_hash,label\n" + f"{ids[0]},maybe\n")
    with pytest.raises(ValueError, match=r"labels.csv:2: label 'maybe'"):
        main(["filter", "evaluate", "--scores", str(scores), "--labels", str(labels), "--output", str(tmp_path / "r")])


def _seed_groups(tmp_path, count=3):
    """A seed_group.json of `count` groups of two URL images, the images named md5(url).png in one folder."""
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    captions = ["{Object}s stacked into a tower", "a {Object} beside its mirror image"]
    groups = []
    for group in range(count):
        urls = [f"https://example.org/{group}/{index}.png" for index in range(2)]
        for index, url in enumerate(urls):
            image(10 * group + index).save(folder / f"{url_image_hash(url)}.png")
        groups.append({"anonymous_caption": captions[group % 2], "image_urls": urls})
    path = tmp_path / "seed_group.json"
    path.write_text(json.dumps(groups))
    return path, folder


def test_group_caption_writes_one_caption_per_group_and_a_rerun_asks_nothing(tmp_path):
    from training.vlm.tiny import save_tiny_chat

    seed_groups, images = _seed_groups(tmp_path)
    save_tiny_chat(tmp_path / "vlm", max_pixels=56 * 56)
    pipeline_recipe = tmp_path / "pipeline.yaml"
    pipeline_recipe.write_text(yaml.safe_dump({
        "device": "cpu", "group_caption": {"model": str(tmp_path / "vlm"), "max_pixels": 56 * 56,
                                           "decoding": {"max_new_tokens": 4}},
    }))  # fmt: skip
    command = ["group-caption", "--seed-groups", str(seed_groups), "--images", str(images)]
    command += ["--output", str(tmp_path / "groups"), "--recipe", str(pipeline_recipe)]

    first, second = main(command), main(command)

    assert (first["generated"], first["reused"]) == (3, 0) and (second["generated"], second["reused"]) == (0, 3)
    written = json.loads((tmp_path / "groups" / "seed_group.json").read_text())
    assert [group["image_urls"] for group in written] == [
        group["image_urls"] for group in json.loads(seed_groups.read_text())
    ]
    rows = [json.loads(line) for line in (tmp_path / "groups" / "group_captions.jsonl").read_text().splitlines()]
    assert [row["group_id"] for row in rows] == ["0", "1", "2"]
    assert all(len(row["image_hashes"]) == 2 for row in rows)


def test_caption_train_on_a_seed_group_json_reports_held_out_groups(tmp_path):
    seed_groups, images = _seed_groups(tmp_path)
    small = recipe(
        tmp_path, CAPTIONER_RECIPE, output_dir=str(tmp_path / "captioner"), max_steps=1, warmup_steps=0,
        max_new_tokens=4, heldout_group_fraction=0.34, synthetic_num_per_family=0, synthetic_eval_num_per_family=0,
        max_pixels=56 * 56,
    )  # fmt: skip

    quality = main(["caption", "train", "--recipe", small, "--seed-groups", str(seed_groups), "--images", str(images)])

    assert quality["count"] == 2  # one held-out group of two images
    assert -1.0 <= quality["mean_cosine"] <= 1.0
    assert json.loads((tmp_path / "captioner" / "quality.json").read_text())["count"] == 2
    assert (tmp_path / "captioner" / "model.safetensors").is_file()


def test_caption_train_on_synthetic_seed_groups(tmp_path):
    small = recipe(
        tmp_path, CAPTIONER_RECIPE, output_dir=str(tmp_path / "captioner"), max_steps=1, warmup_steps=0,
        max_new_tokens=4, synthetic_num_per_family=2, synthetic_eval_num_per_family=1, synthetic_group_size=2,
        synthetic_image_size=56, max_pixels=56 * 56,
    )  # fmt: skip

    quality = main(["caption", "train", "--recipe", small])

    assert quality["count"] == 8 and 0.0 <= quality["family_accuracy"] <= 1.0
    assert json.loads((tmp_path / "captioner" / "quality.json").read_text())["training_rows"] == 16


def test_caption_evaluate_scores_captions_against_group_references(tmp_path):
    ids = [f"{i:032x}" for i in range(4)]
    references = write_jsonl(
        tmp_path / "group_captions.jsonl",
        [
            {"group_id": "0", "caption": "{Object}s stacked into a tower", "image_hashes": ids[:2]},
            {"group_id": "1", "caption": "a {Object} beside its mirror image", "image_hashes": ids[2:3]},
        ],
    )
    captions = write_jsonl(
        tmp_path / "caption.jsonl",
        [
            {"image_hash": ids[0], "caption": "{Object}s stacked into a tower", "literal_descriptions": ["red stars"]},
            {"image_hash": ids[1], "caption": "red stars stacked", "literal_descriptions": ["three red stars"]},
            {"image_hash": ids[2], "caption": "a {Object} beside its mirror image", "literal_descriptions": "a cat"},
            {"image_hash": ids[3], "caption": "no reference", "literal_descriptions": ["x"]},
            {"image_hash": f"{9:032x}", "error": "gone.png: file not found"},
        ],
    )

    quality = main(
        [
            "caption",
            "evaluate",
            "--captions",
            str(captions),
            "--references",
            str(references),
            "--output",
            str(tmp_path / "q"),
        ]
    )

    assert quality.count == 3 and quality.placeholder_rate == pytest.approx(2 / 3)
    assert quality.leak_rate == pytest.approx(1 / 3)  # "red stars stacked" names what its image shows
    cosines = [row["cosine"] for row in quality.per_caption]
    assert cosines[0] == pytest.approx(1.0, abs=1e-5) and cosines[2] == pytest.approx(1.0, abs=1e-5)
    assert cosines[1] < 0.9
    saved = json.loads((tmp_path / "q" / "caption_quality.json").read_text())
    assert saved["left_out"] == 1 and [row["image_hash"] for row in saved["per_caption"]] == ids[:3]


class FixedCaptionStage(Stage):
    name = "caption"

    def process(self, rows):
        return [{**row, "caption": "{Object}s in a row"} for row in rows]


def test_local_folder_hand_off_is_built_by_hub_data_and_read_by_the_trainer(tmp_path):
    """images -> (caption) -> hand-off -> `hub_data build anonymous-captions --image-dir` -> the trainer's data."""
    from training.hub_data.__main__ import main as hub_data
    from training.pipeline.handoff import HandoffStage
    from training.pipeline.inputs import iter_input_rows
    from training.trainer.arguments import DataArguments
    from training.trainer.data import load_training_data

    paths = write_images(tmp_path / "folder", [(30, 20), (40, 20)])
    rows = list(iter_input_rows(tmp_path / "folder", tmp_path / "materialised"))
    run_locally(rows, [FixedCaptionStage(), HandoffStage(tmp_path / "out" / "handoff")], tmp_path / "out")
    handoff = tmp_path / "out" / "handoff"

    hub_data(["build", "anonymous-captions", "--train", str(handoff / "captions.jsonl"), "--image-dir",
              str(handoff / "images"), "--output", str(tmp_path / "built"), "--strict"])  # fmt: skip
    train, _ = load_training_data(
        DataArguments(dataset_name=str(tmp_path / "built" / "anonymous_captions"), eval_fraction=0.0), seed=0
    )

    by_hash = {file_image_hash(path): path for path in paths}
    built = datasets.load_from_disk(str(tmp_path / "built" / "anonymous_captions"))["train"]
    assert sorted(built["image_hash"]) == sorted(by_hash) and built["url"] == ["", ""]
    assert sorted(train["caption"]) == ["{Object}s in a row"] * 2
    for image_hash, cell in zip(built["image_hash"], train["image"], strict=True):
        assert PIL.Image.open(io.BytesIO(cell["bytes"])).tobytes() == PIL.Image.open(by_hash[image_hash]).tobytes()


@pytest.fixture(scope="module")
def tiny_recipe(tmp_path_factory):
    """A pipeline recipe over two saved tiny chats: a filter (Yes/No tokens) keeping everything, a captioner."""
    from training.vlm.tiny import save_tiny_chat

    folder = tmp_path_factory.mktemp("tiny")
    save_tiny_chat(folder / "filter", max_pixels=56 * 56)
    save_tiny_chat(folder / "captioner", extra_tokens=(), seed=1, max_pixels=56 * 56)
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump({
        "device": "cpu", "batch_size": 2,
        "filter": {"model": str(folder / "filter"), "max_pixels": 56 * 56, "threshold": 0.0},
        "caption": {"model": str(folder / "captioner"), "max_pixels": 56 * 56, "prompt": "Caption.",
                    "decoding": {"max_new_tokens": 4}},
        "handoff": {"require_check_ok": False},
    }))  # fmt: skip
    return path


def _image_folder(tmp_path):
    paths = write_images(tmp_path / "images", [(40, 30), (30, 40), (36, 36)])
    (tmp_path / "images" / "broken.png").write_bytes(b"not a png")
    return paths


def test_run_chains_the_stages_and_a_rerun_redoes_nothing(tmp_path, tiny_recipe):
    paths = _image_folder(tmp_path)
    command = [
        "run",
        "--input",
        str(tmp_path / "images"),
        "--output",
        str(tmp_path / "out"),
        "--recipe",
        str(tiny_recipe),
    ]

    first = main(command)
    second = main(command)

    assert [stage.stage for stage in first.stages] == ["filter", "caption", "check", "handoff"]
    assert first.stage("filter").rows_in == 4 and sum(first.stage("filter").failed.values()) == 1
    assert first.stage("filter").kept == 3 and first.stage("handoff").kept == 3  # threshold 0: all readable kept
    assert [stage.done_before for stage in second.stages] == [stage.rows_in for stage in first.stages]
    assert [stage.computed_now for stage in second.stages] == [0, 0, 0, 0]
    handed = [json.loads(line) for line in (tmp_path / "out" / "handoff" / "captions.jsonl").read_text().splitlines()]
    assert sorted(row["image_hash"] for row in handed) == sorted(file_image_hash(path) for path in paths)
    assert len((tmp_path / "out" / "filter.jsonl").read_text().splitlines()) == 4  # no duplicates after the rerun


def test_filter_score_and_caption_generate_are_the_single_stages(tmp_path, tiny_recipe):
    from training.pipeline.filter.scoring import score_images
    from training.pipeline.run.summary import read_stage_rows
    from training.vlm.chat import QwenVLChat

    paths = _image_folder(tmp_path)
    common = ["--input", str(tmp_path / "images"), "--recipe", str(tiny_recipe)]

    scored = main(["filter", "score", *common, "--output", str(tmp_path / "scores")])
    captioned = main(["caption", "generate", *common, "--output", str(tmp_path / "captions")])

    assert [stage.stage for stage in scored.stages] == ["filter"] and scored.stage("filter").computed_now == 4
    rows = {row["image_hash"]: row for row in read_stage_rows(tmp_path / "scores", "filter")}
    config = yaml.safe_load(tiny_recipe.read_text())["filter"]
    chat = QwenVLChat.from_pretrained(config["model"], max_pixels=config["max_pixels"])
    expected = score_images(chat, [str(path) for path in paths])
    measured = [rows[file_image_hash(path)]["filter_score"] for path in paths]
    assert measured == pytest.approx(expected.tolist(), abs=1e-5)
    assert [stage.stage for stage in captioned.stages] == ["caption"]
    captions = read_stage_rows(tmp_path / "captions", "caption")
    assert sum(isinstance(row.get("caption"), str) for row in captions) == 3
    assert sum("error" in row for row in captions) == 1


def test_check_reports_leaks_and_format_problems(tmp_path):
    ids = [f"{i:032x}" for i in range(3)]
    captions = write_jsonl(
        tmp_path / "captions.jsonl",
        [
            {"image_hash": ids[0], "caption": "{Object}s stacked into a tower", "url_link": ""},
            {"image_hash": ids[1], "caption": "three red stars in a row", "url_link": ""},
            {"image_hash": ids[2], "caption": "a {Object beside its mirror", "url_link": ""},
        ],
    )
    descriptions = write_jsonl(tmp_path / "descriptions.jsonl", [{"image_hash": ids[1], "description": "red stars"}])

    report = main(
        ["check", "--captions", str(captions), "--descriptions", str(descriptions), "--output", str(tmp_path / "r")]
    )

    summary = report.summary()
    assert (summary["captions"], summary["ok"], summary["leaking"]) == (3, 1, 1)
    assert summary["with_format_problems"] == 2  # no placeholder; unbalanced braces
    assert (tmp_path / "r" / "leak_check.md").is_file()


def test_a_lists_images_outside_its_folder_are_failed_rows_never_read_unless_allowed(tmp_path, tiny_recipe):
    inside = write_images(tmp_path / "collection" / "images", [(40, 30)])
    outside = write_images(tmp_path / "private", [(30, 40), (36, 36)])
    (tmp_path / "collection" / "link.png").symlink_to(outside[1])
    listing = write_jsonl(
        tmp_path / "collection" / "list.jsonl",
        [{"image": "images/image_00.png"}, {"image": str(outside[0])}, {"path": "../private/image_01.png"},
         {"image": "link.png"}],
    )  # fmt: skip
    command = ["run", "--input", str(listing), "--recipe", str(tiny_recipe)]

    refused = main([*command, "--output", str(tmp_path / "refused")])

    assert refused.stage("filter").rows_in == 4
    assert refused.stage("filter").failed == {"outside the list's folder": 3}
    errors = [row["error"] for row in read_stage_rows(tmp_path / "refused", "filter") if "error" in row]
    root = listing.parent.resolve()
    assert sorted(errors) == sorted(
        f"{listing}:{line}: outside the list's folder: {written} leads outside {root}; left out "
        "(--allow-outside-list-folder reads it)"
        for line, written in ((2, outside[0]), (3, "../private/image_01.png"), (4, "link.png"))
    )
    handed = (tmp_path / "refused" / "handoff" / "captions.jsonl").read_text().splitlines()
    assert [json.loads(line)["image_hash"] for line in handed] == [file_image_hash(inside[0])]

    allowed = main([*command, "--output", str(tmp_path / "allowed"), "--allow-outside-list-folder"])
    assert allowed.stage("filter").failed == {} and allowed.stage("handoff").kept == 3  # the link repeats image_01
