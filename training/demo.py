"""Offline demo of the package plumbing: no weights can be downloaded here, so a tiny *random* relsim model embeds a
few generated images, is saved with its remote code, reloaded through the Auto classes, and must agree with itself.

The similarities it prints are those of an untrained model; the trained, benchmarked demo replaces this one.

    python -m training.demo --output relsim-demo
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import PIL.Image
import PIL.ImageDraw
from transformers import AutoModel, AutoProcessor

from training.tiny_backbone import build_tiny_model, build_tiny_processor


logger = logging.getLogger("relsim.demo")

PALETTE = ((220, 60, 60), (60, 160, 80), (60, 90, 220))


def progression_image(colour: tuple[int, int, int], size: int = 160) -> PIL.Image.Image:
    """Three discs growing from left to right."""
    image = PIL.Image.new("RGB", (size, size), "white")
    draw = PIL.ImageDraw.Draw(image)
    for step, radius in enumerate((10, 18, 26)):
        centre = 30 + step * 50
        draw.ellipse((centre - radius, size // 2 - radius, centre + radius, size // 2 + radius), fill=colour)
    return image


def odd_one_out_image(colour: tuple[int, int, int], size: int = 160) -> PIL.Image.Image:
    """A 3x3 grid of squares with one disc."""
    image = PIL.Image.new("RGB", (size, size), "white")
    draw = PIL.ImageDraw.Draw(image)
    for row in range(3):
        for column in range(3):
            left, top = 15 + column * 50, 15 + row * 50
            box = (left, top, left + 30, top + 30)
            (draw.ellipse if (row, column) == (1, 2) else draw.rectangle)(box, fill=colour)
    return image


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="relsim offline plumbing demo (tiny random model)")
    parser.add_argument(
        "--output", type=Path, default=Path("relsim-demo"), help="folder for the saved model and report"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    names = [f"{kind}-{index}" for kind in ("progression", "odd-one-out") for index in range(len(PALETTE))]
    images = [progression_image(colour) for colour in PALETTE] + [odd_one_out_image(colour) for colour in PALETTE]
    processor = build_tiny_processor(image_size=112)
    model = build_tiny_model(processor, seed=0)
    embeddings = model.embed_images(images, processor, batch_size=4)

    model_dir = args.output / "relsim-tiny-random"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    reloaded = AutoModel.from_pretrained(model_dir, trust_remote_code=True)
    reloaded_processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    difference = (reloaded.embed_images(images, reloaded_processor, batch_size=4) - embeddings).abs().max().item()
    if difference > 1e-5:
        raise RuntimeError(f"the reloaded model disagrees with the saved one by {difference:.2e}")

    similarity = embeddings @ embeddings.T
    width = max(len(name) for name in names)
    rows = [" " * width + " " + " ".join(f"{name[:6]:>7}" for name in names)]
    rows += [
        f"{name:<{width}} " + " ".join(f"{value:7.3f}" for value in row)
        for name, row in zip(names, similarity.tolist(), strict=True)
    ]
    report = args.output / "similarity.txt"
    report.write_text("\n".join(rows) + "\n", encoding="utf-8")
    for row in rows:
        logger.info(row)
    logger.info(
        "embedded %d images to %s; saved and reloaded %s (max difference %.1e); report %s",
        len(images),
        tuple(embeddings.shape),
        model_dir,
        difference,
        report,
    )
    logger.info("this model is untrained: the similarities show the plumbing, not relational understanding")


if __name__ == "__main__":
    main()
