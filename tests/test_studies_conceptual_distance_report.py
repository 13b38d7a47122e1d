"""The conceptual-distance report on synthetic pairs (tiny models: the files and their shape, not the AUC's level),
the literal describer's training, and the command line."""

import json

import PIL.Image
import pytest

from tests.conftest import random_image
from training.studies.__main__ import main, program
from training.studies.conceptual_distance_describers import load_describer, train_literal_describer
from training.studies.conceptual_distance_evaluation import CURVE_PLOT, REPORT_JSON, REPORT_MARKDOWN
from training.studies.conceptual_distance_runner import Describer, DistanceSettings
from training.vlm.tiny import build_tiny_chat, save_tiny_chat


TINY_PIXELS = ["--max-pixels", "12544", "--device", "cpu"]


@pytest.fixture
def relsim_dir(tmp_path, model, processor):
    model.save_pretrained(tmp_path / "relsim")
    processor.save_pretrained(tmp_path / "relsim")
    return tmp_path / "relsim"


def check_report_files(folder, methods, lengths, pairs, same_family_pairs):
    report = json.loads((folder / REPORT_JSON).read_text())
    assert (report["pairs"], report["same_family_pairs"]) == (pairs, same_family_pairs)
    assert [row["method"] for row in report["methods"]] == methods
    for row in report["methods"]:
        assert 0.0 <= row["auc"] <= 1.0
        if row["method"].startswith("conceptual distance"):
            assert list(row["auc_per_length"]) == [str(length) for length in lengths]
            assert len(row["same_family_mean_curve"]) == len(row["different_family_mean_curve"]) == len(lengths)
    table = (folder / REPORT_MARKDOWN).read_text().splitlines()
    assert table[2].startswith("| method | AUC |")
    assert len([line for line in table if line.startswith("| ")]) == 1 + len(methods)
    with PIL.Image.open(folder / CURVE_PLOT) as plot:
        assert plot.format == "PNG" and plot.width > 300 and plot.height > 200
    return report


def test_the_report_scores_every_synthetic_pair_for_both_describers_and_relsim(tmp_path, relsim_dir):
    from training.studies.conceptual_distance_evaluation import evaluate_conceptual_distance

    describers = [
        Describer(build_tiny_chat(seed=3), "Describe this image literally.", "literal"),
        Describer(build_tiny_chat(seed=4), "Write the anonymous caption of this image.", "anonymous"),
    ]
    settings = DistanceSettings(lengths=(2, 4), num_samples=2, batch_size=64)
    families = ["progression", "radial", "stacking"]
    report = evaluate_conceptual_distance(
        describers, tmp_path / "report", str(relsim_dir), num_per_family=2, settings=settings, families=families
    )
    # 6 images (2 per family, 3 families): 15 pairs, 3 of them same-family
    check_report_files(
        tmp_path / "report",
        ["conceptual distance (literal)", "conceptual distance (anonymous)", "relsim cosine"],
        [2, 4],
        15,
        3,
    )
    assert report["settings"]["num_samples"] == 2 and report["families"] == families


def write_images(folder, count):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(count):
        path = folder / f"image-{seed}.png"
        random_image(48 + 8 * seed, 64, seed).save(path)
        paths.append(path)
    return paths


def test_the_distance_command_compares_every_pair_and_reuses_its_cache(tmp_path):
    describer_dir = save_tiny_chat(tmp_path / "describer", seed=5)
    paths = write_images(tmp_path / "images", 3)
    command = ["distance", "--model", str(describer_dir), "--prompt", "Describe this image.", "--lengths", "2", "4",
               "--num-samples", "2", "--cache-dir", str(tmp_path / "cache"), *TINY_PIXELS]  # fmt: skip
    first = main([*command, "--images", *map(str, paths), "--output", str(tmp_path / "d.json")])
    written = json.loads((tmp_path / "d.json").read_text())
    assert written == first and len(written) == 3  # every pair of three images
    assert [(row["a"], row["b"]) for row in written] == [
        (str(paths[0]), str(paths[1])), (str(paths[0]), str(paths[2])), (str(paths[1]), str(paths[2]))
    ]  # fmt: skip
    assert all(row["lengths"] == [2, 4] and len(row["curve"]) == 2 for row in written)
    scores_before = (tmp_path / "cache" / "scores.jsonl").read_text()
    (tmp_path / "pairs.txt").write_text("# a pairs file\nimage-0.png\timage-2.png\n\n'image-1.png' image-0.png\n")
    (tmp_path / "image-0.png").write_bytes(paths[0].read_bytes())
    (tmp_path / "image-1.png").write_bytes(paths[1].read_bytes())
    (tmp_path / "image-2.png").write_bytes(paths[2].read_bytes())
    from_file = main([*command, "--pairs", str(tmp_path / "pairs.txt")])
    assert [row["area"] for row in from_file] == [written[1]["area"], pytest.approx(written[0]["area"], abs=1e-4)]
    assert (tmp_path / "cache" / "scores.jsonl").read_text() == scores_before  # same image files: all cached


def test_the_distance_command_names_a_bad_pairs_line_in_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "pairs.txt").write_text("a.png b.png\nonly-one.png\n")
    monkeypatch.setattr(
        "sys.argv",
        ["python", "distance", "--model", "unused", "--pairs", str(tmp_path / "pairs.txt"), "--cache-dir", "c"],
    )
    assert program() == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and f"{tmp_path / 'pairs.txt'}:2: a pair line holds two image paths, got 1" in error[0]


def test_a_trained_literal_describer_reloads_with_its_prompt_and_feeds_the_evaluation_command(tmp_path, relsim_dir):
    overrides = {
        "max_steps": 2, "synthetic_num_per_family": 1, "synthetic_negatives": 2, "per_device_train_batch_size": 4,
        "logging_steps": 1,
    }  # fmt: skip
    trained = train_literal_describer(tmp_path / "literal", overrides=overrides)
    reloaded = load_describer(str(tmp_path / "literal"), name="literal", max_pixels=12544)
    assert reloaded.prompt == trained.prompt == "Describe the image."
    assert reloaded.fingerprint == trained.fingerprint
    assert reloaded.fingerprint != Describer(build_tiny_chat(seed=0), "x").fingerprint
    anonymous_dir = save_tiny_chat(tmp_path / "anonymous", seed=6)
    main(["distance-eval", "--literal-model", str(tmp_path / "literal"), "--anonymous-model", str(anonymous_dir),
          "--anonymous-prompt", "Write the anonymous caption of this image.", "--relsim", str(relsim_dir),
          "--num-per-family", "2", "--families", "counting", "mosaic", "--lengths", "2", "--num-samples", "1",
          "--batch-size", "64",
          "--output-dir", str(tmp_path / "report"), *TINY_PIXELS])  # fmt: skip
    check_report_files(
        tmp_path / "report",
        ["conceptual distance (literal)", "conceptual distance (anonymous)", "relsim cosine"],
        [2],
        6,
        2,
    )
