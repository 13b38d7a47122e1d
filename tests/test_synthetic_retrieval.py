import numpy as np
import PIL.Image
import pytest
import torch

from training.evaluation.methods.attribute_baselines import (
    RelSimEmbedder,
    colour_histogram_embeddings,
    pixel_embeddings,
)
from training.evaluation.synthetic_cli import main, parse_models
from training.evaluation.synthetic_report import markdown_table
from training.evaluation.synthetic_retrieval import held_out_pool, run_benchmark
from training.tiny_backbone import build_tiny_model, build_tiny_processor


def test_baselines_give_unit_rows_with_the_expected_invariances():
    rng = np.random.default_rng(0)
    image = PIL.Image.fromarray(rng.integers(0, 256, (64, 48, 3), dtype=np.uint8))
    mirrored = image.transpose(PIL.Image.Transpose.FLIP_LEFT_RIGHT)
    pixels = pixel_embeddings([image, mirrored, image])
    histograms = colour_histogram_embeddings([image, mirrored])
    assert pixels.shape == (3, 32 * 32 * 3) and histograms.shape == (2, 512)
    torch.testing.assert_close(pixels.norm(dim=-1), torch.ones(3))
    assert (pixels[0] @ pixels[2]).item() == pytest.approx(1.0)
    assert (pixels[0] @ pixels[1]).item() < 0.5
    assert (histograms[0] @ histograms[1]).item() == pytest.approx(1.0)


def test_the_benchmark_scores_every_method_on_held_out_attributes():
    pool = held_out_pool(4, seed=1, image_size=112)
    processor = build_tiny_processor(image_size=112, instruction=None, use_system_prompt=False)
    run = run_benchmark(
        {"pixel cosine": pixel_embeddings, "relsim": RelSimEmbedder(build_tiny_model(processor), processor)}, pool
    )
    assert set(run.table) == {"pixel cosine", "relsim"}
    for metrics in run.table.values():
        assert set(metrics) == {"recall@1", "recall@5", "mAP", "attribute trap"}
        assert all(0.0 <= value <= 1.0 for value in metrics.values())
    assert run.similarities["relsim"].shape == (32, 32)
    assert "| relsim |" in markdown_table(run.table)


def test_cli_writes_every_report_file(tmp_path):
    processor = build_tiny_processor(image_size=112, instruction=None, use_system_prompt=False)
    build_tiny_model(processor).save_pretrained(tmp_path / "tiny")
    processor.save_pretrained(tmp_path / "tiny")
    run = main(
        ["--model", f"tiny-relsim={tmp_path / 'tiny'}", "--num-per-family", "3", "--output", str(tmp_path / "r")]
    )
    assert set(run.table) == {"pixel cosine", "colour histogram", "tiny-relsim"}
    produced = {path.name for path in (tmp_path / "r").iterdir()}
    assert produced == {
        "report.md",
        "neighbours_tiny-relsim.png",
        "neighbours_pixel-cosine.png",
        "similarity_space.png",
    }
    report = (tmp_path / "r" / "report.md").read_text()
    assert "| tiny-relsim |" in report and "held-out images" in report
    assert PIL.Image.open(tmp_path / "r" / "neighbours_tiny-relsim.png").size[1] == 8 * 72


def test_model_names_default_to_the_folder():
    assert parse_models(["runs/final", "base=Qwen/relsim"]) == {"final": "runs/final", "base": "Qwen/relsim"}
