"""Contrastive training throughput: a plain LoRA loop against relsim's GradCache step with its speed-ups.

    python benchmarks/bench_train.py --preset tiny                       # CPU smoke run (seconds)
    python benchmarks/bench_train.py --preset 7b --narrow                # 7b's layout at head width 8, CPU
    python benchmarks/bench_train.py --preset 7b --device cuda --dtype bfloat16 --reference-batch 16 \
        --contrastive-batch 256 --micro-batch 32 --json out.json

Both paths train LoRA r16 on q_proj/v_proj of the language model plus the query vector, projection and temperature
(the paper's recipe), with InfoNCE against fixed caption embeddings (the frozen text tower is cached in training, so
it is left out), on the same random-weight model and images:
- `reference`: a plain step over `--reference-batch` samples, gradient checkpointing on the whole backbone,
  transformers' per-window vision attention, AdamW;
- `relsim`: one GradCache step over `--contrastive-batch` samples in micro-batches of `--micro-batch`: batched window
  attention; the frozen vision tower runs once per micro-batch without autograd and its features serve both GradCache
  passes; non-reentrant checkpointing on the language model only; fused AdamW on GPU; bf16 autocast on GPU with the
  trainable parts in fp32.
TFLOP/s count model FLOPs (`FlopCount.training_step`: vision forward, language forward and its activation gradients);
recomputation is overhead and not counted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import platform
import sys
from pathlib import Path

import torch
import transformers
from bench_embed import DTYPES, build_model, random_images
from peft import get_peft_model
from presets import (
    DEFAULT_IMAGE_SIZE,
    PRESETS,
    achieved,
    image_forward_flops,
    median_seconds_interleaved,
    peak_memory_gib,
    peak_tflops,
    preset_sizes,
    prompt_token_count,
    reset_peak_memory,
)

from training.tiny_backbone import build_tiny_processor
from training.trainer.grad_cache import grad_cache_loss, reuse_frozen_vision_features, split_batch
from training.trainer.lora import relsim_lora_config
from training.trainer.losses import relational_info_nce
from training.trainer.model_factory import keep_trainable_parameters_in_float32


logger = logging.getLogger("relsim.benchmarks")


def lora_model(sizes, processor, device, dtype, vision_attention: str):
    model = build_model(sizes, processor, device, dtype, "sdpa")
    model.set_vision_attention(vision_attention)
    model = get_peft_model(model, relsim_lora_config())
    keep_trainable_parameters_in_float32(model)  # fp32 master weights for the small trainable parts
    return model


def enable_checkpointing(module, options: dict | None = None) -> None:
    """transformers 5.23 renamed gradient to activation checkpointing; 5.17 has only the old name."""
    if hasattr(module, "activation_checkpointing_enable"):
        module.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
    else:
        module.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)


def caption_targets(count: int, dimension: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    embeds = torch.nn.functional.normalize(torch.randn(count, dimension, generator=generator), dim=-1).to(device)
    return embeds, torch.arange(count, device=device)


def timed_steps(device, step, repeats: int) -> tuple[float, float]:
    """(median seconds per step after one warm-up step, the warm-up step's loss). The two paths hold different
    models (both at once may not fit a GPU), so they run one after the other; the median drops disturbed steps."""
    first_loss = step()
    return median_seconds_interleaved(device, {"step": step}, repeats, warm_up=False)["step"], first_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--narrow", action="store_true", help="the preset's layout at head width 8 (see presets.py)")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--reference-batch", type=int, default=4)
    parser.add_argument("--contrastive-batch", type=int, default=16)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per path (after one warm-up); the median")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="dtype of the frozen backbone")
    parser.add_argument("--peak-tflops", type=float, help="for the roofline fraction (default: known GPUs)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)

    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    image_size = args.image_size or DEFAULT_IMAGE_SIZE[args.preset]
    sizes = preset_sizes(args.preset, args.narrow)
    processor = build_tiny_processor(image_size=image_size)
    images = random_images(max(args.reference_batch, args.contrastive_batch), image_size)
    results = {}

    # reference: a plain loop
    model = lora_model(sizes, processor, device, dtype, "reference")
    enable_checkpointing(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = processor(images[: args.reference_batch]).to(device)
    targets, caption_ids = caption_targets(args.reference_batch, model.config.projection_dim, device)

    def reference_step() -> float:
        output = model(**batch)
        loss = relational_info_nce(output.image_embeds.float(), targets, caption_ids, output.logit_scale).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    reset_peak_memory(device)
    seconds, reference_loss = timed_steps(device, reference_step, args.repeats)
    results["reference"] = {"samples_per_second": args.reference_batch / seconds, "batch": args.reference_batch,
                            "peak_memory_gib": peak_memory_gib(device), "first_loss": reference_loss}  # fmt: skip
    del model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # relsim: GradCache at the full contrastive batch
    model = lora_model(sizes, processor, device, dtype, "batched")
    relsim = model.get_base_model()
    enable_checkpointing(relsim.backbone.language_model, {"use_reentrant": False})
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, fused=device.type == "cuda")
    batch = processor(images[: args.contrastive_batch]).to(device)
    targets, caption_ids = caption_targets(args.contrastive_batch, relsim.config.projection_dim, device)

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()

    def relsim_step() -> float:
        micro_batches = split_batch(batch, args.micro_batch)
        with autocast():
            reuse_frozen_vision_features(relsim, micro_batches)
            result = grad_cache_loss(
                model,
                micro_batches,
                lambda embeds, scale: relational_info_nce(embeds, targets, caption_ids, scale),
                no_sync=contextlib.nullcontext,
                forward_context=autocast,  # the replays run in backward, outside this block
            )
        result.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(result.loss.detach())

    reset_peak_memory(device)
    seconds, relsim_loss = timed_steps(device, relsim_step, args.repeats)
    results["relsim"] = {"samples_per_second": args.contrastive_batch / seconds, "batch": args.contrastive_batch,
                         "micro_batch": args.micro_batch, "peak_memory_gib": peak_memory_gib(device),
                         "first_loss": relsim_loss}  # fmt: skip

    flops = image_forward_flops(sizes, image_size, prompt_token_count(batch["attention_mask"], image_size))
    peak = args.peak_tflops or peak_tflops(device)
    for entry in results.values():
        entry.update(achieved(entry["samples_per_second"], flops.training_step, peak))
    speedup = results["relsim"]["samples_per_second"] / results["reference"]["samples_per_second"]
    report = {
        "benchmark": "train",
        "preset": args.preset, "narrow": args.narrow, "image_size": image_size, "dtype": args.dtype,
        "flops_per_sample": flops.training_step,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "paths": results,
        "speedup": speedup,
    }  # fmt: skip
    logger.info(f"{'path':<12}{'batch':>7}{'samples/s':>12}{'TFLOP/s':>10}{'roofline':>10}{'peak GiB':>10}"
                f"{'first loss':>12}")  # fmt: skip
    for name, entry in results.items():
        roofline = f"{entry['roofline_fraction']:.1%}" if entry["roofline_fraction"] is not None else "-"
        logger.info(f"{name:<12}{entry['batch']:>7}{entry['samples_per_second']:>12.2f}{entry['achieved_tflops']:>10.3f}"
                    f"{roofline:>10}{entry['peak_memory_gib']:>10.2f}{entry['first_loss']:>12.4f}")  # fmt: skip
    logger.info(f"relsim vs reference: {speedup:.2f}x samples/s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
