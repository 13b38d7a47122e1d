"""Embedding throughput: the official one-image loop and plain batched transformers against relsim's forward.

    python benchmarks/bench_embed.py --preset tiny                      # CPU smoke run (seconds)
    python benchmarks/bench_embed.py --preset 7b --device cuda --dtype bfloat16 --batch-size 64 --json out.json
    python benchmarks/bench_embed.py --preset 7b --narrow --batch-size 32   # 7b's layout at head width 8, CPU

Paths, all on the same random-weight model and the same preprocessed 448x448 (preset default) images:
- `official_loop`: one image per forward through transformers' Qwen2_5_VLModel, reading `output_hidden_states`
  (how the official code embeds), transformers' per-window vision attention;
- `transformers_batched`: a plain batched Qwen2_5_VLModel forward, per-window vision attention;
- `relsim`: RelSimModel's forward on a batch sent as `embed_images` sends it (`move_batch`): batched window
  attention, vision layout computed on the host, no hidden-state stack, no lm_head (optionally with
  `--compile`, torch.compile of the vision blocks; `--compile-mode reduce-overhead` adds CUDA graphs).
Preprocessing is done once, before timing (it runs in DataLoader workers in `embed_images`).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import logging
import platform
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import torch
import transformers
from presets import (
    DEFAULT_IMAGE_SIZE,
    PRESETS,
    AttentionCallCounter,
    achieved,
    image_forward_flops,
    median_seconds_interleaved,
    peak_memory_gib,
    peak_tflops,
    preset_sizes,
    prompt_token_count,
    reset_peak_memory,
    synchronize,
)

from modeling_relsim import RelSimConfig, RelSimModel, move_batch
from modeling_relsim.modeling_relsim import unpad_pixel_values
from training.tiny_backbone import TinyBackboneSizes, build_tiny_processor, tiny_backbone_config


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


logger = logging.getLogger("relsim.benchmarks")


def build_model(
    sizes: TinyBackboneSizes, processor, device: torch.device, dtype: torch.dtype, attention: str
) -> RelSimModel:
    config = RelSimConfig(
        backbone_config=tiny_backbone_config(processor.tokenizer, sizes),
        query_token_id=processor.query_token_id,
        **processor.settings(),
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = RelSimModel._from_config(config, dtype=dtype, attn_implementation=attention)
    return model.eval()


def random_images(count: int, size: int) -> list[PIL.Image.Image]:
    rng = np.random.default_rng(0)
    return [PIL.Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(count)]


def backbone_inputs(model: RelSimModel, batch) -> dict[str, torch.Tensor]:
    """The stock Qwen2.5-VL inputs of a relsim batch: flat pixels, image token types, and a real vocabulary token in
    place of relsim's query token (whose id may lie past the tiny vocabulary; it costs the same)."""
    input_ids = batch["input_ids"].masked_fill(batch["input_ids"] == model.config.query_token_id, 0)
    return {
        "input_ids": input_ids,
        "attention_mask": batch["attention_mask"],
        "pixel_values": unpad_pixel_values(batch["pixel_values"], batch["image_grid_thw"]).to(model.dtype),
        "image_grid_thw": batch["image_grid_thw"],
        "mm_token_type_ids": (input_ids == model.config.backbone_config.image_token_id).int(),
    }


def sharing_weights(model: RelSimModel, vision_attention: str) -> RelSimModel:
    """A second RelSimModel on the very same parameter and buffer tensors (no memory), with its own modules, so the
    reference path's attention classes never touch (or recompile) relsim's."""
    shared = {id(tensor): tensor for tensor in itertools.chain(model.parameters(), model.buffers())}
    twin = copy.deepcopy(model, memo=shared)
    twin.set_vision_attention(vision_attention)
    return twin


def first_synchronizing_call(run) -> str | None:
    """None when `run` makes no call that waits for the GPU (CUDA's sync debug mode raises at the first one)."""
    torch.cuda.set_sync_debug_mode("error")
    try:
        run()
    except RuntimeError as error:
        return str(error).splitlines()[0]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return None


def peak_memory_of(device: torch.device, run) -> float:
    reset_peak_memory(device)
    run()
    synchronize(device)
    return peak_memory_gib(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--narrow", action="store_true", help="the preset's layout at head width 8 (see presets.py)")
    parser.add_argument("--image-size", type=int, help="default: 112 for tiny, 448 for 3b/7b")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (after one warm-up each); the median")
    parser.add_argument("--loop-images", type=int, default=4, help="images timed through the one-image loop")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--attention", default="sdpa", help="attention backend of the language model and reference")
    parser.add_argument("--compile", action="store_true", help="torch.compile relsim's vision blocks")
    parser.add_argument("--compile-mode", help="torch.compile mode with --compile, e.g. reduce-overhead (CUDA graphs)")
    parser.add_argument("--peak-tflops", type=float, help="for the roofline fraction (default: known GPUs)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)

    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    image_size = args.image_size or DEFAULT_IMAGE_SIZE[args.preset]
    processor = build_tiny_processor(image_size=image_size)
    sizes = preset_sizes(args.preset, args.narrow)
    model = build_model(sizes, processor, device, dtype, args.attention)
    host_batch = processor(random_images(args.batch_size, image_size))
    batch = host_batch.to(device)
    stock_inputs = backbone_inputs(model, batch)
    reference = sharing_weights(model, "reference")
    if args.compile:
        model.compile_vision(**({"mode": args.compile_mode} if args.compile_mode else {}))
    singles = [processor(image).to(device) for image in random_images(args.loop_images, image_size)]
    single_inputs = [backbone_inputs(reference, single) for single in singles]
    relsim_batch = move_batch(host_batch, device)  # as embed_images sends it: grid on the host, no needless mask

    @torch.inference_mode()
    def official_loop() -> None:
        """One image at a time, the whole hidden-state stack returned."""
        for inputs in single_inputs:
            reference.backbone(**inputs, output_hidden_states=True, use_cache=False)

    @torch.inference_mode()
    def transformers_batched() -> None:
        reference.backbone(**stock_inputs, use_cache=False)

    @torch.inference_mode()
    def relsim_forward() -> None:
        model(**relsim_batch)

    paths = {"official_loop": official_loop, "transformers_batched": transformers_batched, "relsim": relsim_forward}
    images = {"official_loop": len(single_inputs), "transformers_batched": args.batch_size, "relsim": args.batch_size}
    seconds = median_seconds_interleaved(device, paths, args.repeats)
    results: dict[str, dict] = {}
    for name, run in paths.items():
        results[name] = {
            "images_per_second": images[name] / seconds[name],
            "peak_memory_gib": peak_memory_of(device, run),
        }
        if name != "official_loop":
            with AttentionCallCounter() as counter:
                run()
            results[name]["attention_calls"] = counter.calls
    if device.type == "cuda":
        results["relsim"]["synchronizing_call"] = first_synchronizing_call(relsim_forward)
    with torch.inference_mode():
        reference_embeds = reference(**batch).image_embeds.float()
        embeds = model(**relsim_batch).image_embeds.float()
    results["relsim"]["max_abs_diff_to_reference"] = float((embeds - reference_embeds).abs().max())
    cosine = torch.nn.functional.cosine_similarity(embeds, reference_embeds)
    results["relsim"]["min_cosine_to_reference"] = float(cosine.min())

    flops = image_forward_flops(sizes, image_size, prompt_token_count(batch["attention_mask"], image_size))
    peak = args.peak_tflops or peak_tflops(device)
    for entry in results.values():
        entry.update(achieved(entry["images_per_second"], flops.total, peak))
    ours = results["relsim"]["images_per_second"]
    summary = {
        "speedup_vs_official_loop": ours / results["official_loop"]["images_per_second"],
        "speedup_vs_transformers_batched": ours / results["transformers_batched"]["images_per_second"],
        "roofline_images_per_second": peak * 1e12 / flops.total if peak else None,
    }
    report = {
        "benchmark": "embed",
        "preset": args.preset, "narrow": args.narrow, "image_size": image_size, "batch_size": args.batch_size,
        "dtype": args.dtype, "attention": args.attention, "compile": args.compile, "compile_mode": args.compile_mode,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "flops_per_image": {"vision": flops.vision, "language": flops.language, "total": flops.total},
        "paths": results,
        **summary,
    }  # fmt: skip
    logger.info(f"{'path':<22}{'img/s':>10}{'attn calls':>12}{'TFLOP/s':>10}{'roofline':>10}{'peak GiB':>10}")
    for name, entry in results.items():
        roofline = f"{entry['roofline_fraction']:.1%}" if entry["roofline_fraction"] is not None else "-"
        calls = entry.get("attention_calls", "-")
        logger.info(f"{name:<22}{entry['images_per_second']:>10.2f}{calls:>12}{entry['achieved_tflops']:>10.3f}"
              f"{roofline:>10}{entry['peak_memory_gib']:>10.2f}")  # fmt: skip
    logger.info(f"relsim vs official loop: {summary['speedup_vs_official_loop']:.2f}x; "
          f"vs transformers batched: {summary['speedup_vs_transformers_batched']:.2f}x; "
          f"min cosine to reference {results['relsim']['min_cosine_to_reference']:.7f}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
