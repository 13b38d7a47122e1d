"""The benchmark scripts' tiny presets run on CPU and report consistent numbers (no timing is asserted)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_benchmark(script: str, tmp_path: Path, *options: str, preset: str = "tiny") -> dict:
    output = tmp_path / f"{script}.json"
    subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--preset", preset, "--device", "cpu", "--json", str(output),
         *options],
        check=True, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600,
    )  # fmt: skip
    return json.loads(output.read_text())


def test_bench_embed_tiny_reports_every_path(tmp_path):
    report = run_benchmark("bench_embed.py", tmp_path, "--batch-size", "4", "--repeats", "1", "--loop-images", "2")
    paths = report["paths"]
    assert set(paths) == {"official_loop", "transformers_batched", "relsim"}
    assert all(entry["images_per_second"] > 0 and entry["achieved_tflops"] > 0 for entry in paths.values())
    assert all(entry["roofline_fraction"] is None for entry in paths.values())  # no known peak on a CPU
    # tiny preset at 112 px: 2 vision blocks (1 windowed with 4 windows per image, 1 full) + 2 language layers
    assert paths["transformers_batched"]["attention_calls"] == 4 * 4 + 4 + 2
    assert paths["relsim"]["attention_calls"] == 1 + 1 + 2
    assert paths["relsim"]["min_cosine_to_reference"] > 0.99999
    assert paths["relsim"]["max_abs_diff_to_reference"] < 1e-5
    assert report["speedup_vs_official_loop"] > 0 and report["speedup_vs_transformers_batched"] > 0
    flops = report["flops_per_image"]
    assert flops["total"] == pytest.approx(flops["vision"] + flops["language"])


def test_bench_train_tiny_reports_both_paths(tmp_path):
    report = run_benchmark("bench_train.py", tmp_path, "--reference-batch", "2", "--contrastive-batch", "4",
                           "--micro-batch", "2", "--repeats", "1")  # fmt: skip
    reference, relsim = report["paths"]["reference"], report["paths"]["relsim"]
    assert (reference["batch"], relsim["batch"], relsim["micro_batch"]) == (2, 4, 2)
    assert reference["samples_per_second"] > 0 and relsim["samples_per_second"] > 0
    assert report["speedup"] == pytest.approx(relsim["samples_per_second"] / reference["samples_per_second"])
    assert 0 < reference["first_loss"] < 10 and 0 < relsim["first_loss"] < 10
    # model FLOPs: vision forward + language forward and its activation gradients, the same per sample on both paths
    sys.path.insert(0, str(BENCHMARKS))
    import numpy as np
    from presets import PRESETS, image_forward_flops, prompt_token_count

    from training.tiny_backbone import build_tiny_processor

    batch = build_tiny_processor(image_size=112)(np.zeros((112, 112, 3), dtype=np.uint8))
    prompt_tokens = prompt_token_count(batch["attention_mask"], 112)
    assert prompt_tokens == int(batch["attention_mask"].sum()) - 16  # 112 px: 8x8 patches, merged 2x2
    flops = image_forward_flops(PRESETS["tiny"], 112, prompt_tokens)
    assert report["flops_per_sample"] == pytest.approx(flops.vision + 2 * flops.language)
    for entry in (reference, relsim):
        expected_tflops = entry["samples_per_second"] * report["flops_per_sample"] / 1e12
        assert entry["achieved_tflops"] == pytest.approx(expected_tflops)
        assert entry["roofline_fraction"] is None


@pytest.mark.parametrize(("preset", "billions", "tflop"), [("3b", 3.45, 2.94), ("7b", 7.21, 5.10)])
def test_big_presets_have_qwen2_5_vl_sizes_and_flops(preset, billions, tflop):
    """Qwen2.5-VL-7B has 8.29B parameters, 1.09B of them vocabulary rows (embedding + lm_head) that relsim's
    benchmark model lacks; the issue's roofline counts about 5.0 TFLOP per 448x448 image."""
    import torch

    sys.path.insert(0, str(BENCHMARKS))
    from bench_embed import build_model
    from presets import PRESETS, image_forward_flops

    from training.tiny_backbone import build_tiny_processor

    processor = build_tiny_processor(image_size=448)
    model = build_model(PRESETS[preset], processor, torch.device("meta"), torch.bfloat16, "sdpa")
    assert sum(parameter.numel() for parameter in model.parameters()) / 1e9 == pytest.approx(billions, abs=0.01)
    assert image_forward_flops(PRESETS[preset], 448, 30).total / 1e12 == pytest.approx(tflop, abs=0.01)


def test_narrow_7b_keeps_the_layout_and_makes_the_7b_attention_calls(tmp_path):
    """At head width 8 the 7b preset launches what the real 7b launches: transformers makes one attention call per
    window (224 px: 4 windows of 64 tokens per image in each of 28 windowed blocks) and one per image in each of 4
    full blocks, plus one per language layer; relsim one per vision block and one per language layer."""
    sys.path.insert(0, str(BENCHMARKS))
    from presets import PRESETS, narrowed

    full, narrow = PRESETS["7b"], narrowed(PRESETS["7b"])
    keep = ("vision_depth", "vision_heads", "fullatt_block_indexes", "window_size", "text_layers", "text_heads",
            "text_kv_heads")  # fmt: skip
    assert {name: getattr(narrow, name) for name in keep} == {name: getattr(full, name) for name in keep}
    assert (narrow.vision_hidden_size, narrow.text_hidden_size) == (16 * 8, 28 * 8)

    report = run_benchmark("bench_embed.py", tmp_path, "--narrow", "--image-size", "224", "--batch-size", "2",
                           "--repeats", "1", "--loop-images", "1", preset="7b")  # fmt: skip
    images, windowed_blocks, full_blocks, language_layers = 2, 28, 4, 28
    paths = report["paths"]
    assert report["narrow"] is True
    assert paths["transformers_batched"]["attention_calls"] == (
        windowed_blocks * 4 * images + full_blocks * images + language_layers
    )
    assert paths["relsim"]["attention_calls"] == windowed_blocks + full_blocks + language_layers
    assert paths["relsim"]["max_abs_diff_to_reference"] < 1e-5
