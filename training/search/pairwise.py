"""Pairwise relational similarity in one call, as users of the official package (and of LPIPS / DreamSim) expect:

    from training.search.pairwise import relsim

    model, preprocess = relsim(pretrained=True, checkpoint_dir="relsim-official")  # a converted folder or hub id
    score = model(preprocess(PIL.Image.open("a.jpg")), preprocess(PIL.Image.open("b.jpg")))  # a float, higher = closer
    scores = model(images_a, images_b)  # (n,) cosines of paired lists; one image on a side is compared with all

The official weights must first be converted to a relsim folder (`python -m training.trainer convert-official`).
`resolution="native"` feeds each image at its own size rounded to the patch grid, as the official quick start does
(its `qwen_vl_utils` preprocessing), instead of the model's configured centre crop; the official README's example
scores were made that way (`training/search/official_example.py` checks them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import PIL.Image
import torch
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

from modeling_relsim import RelSimModel, RelSimProcessor, decode_image, move_batch
from modeling_relsim.image_decoding import as_image_list, image_source
from training.relsim_folder import load_relsim


logger = logging.getLogger(__name__)

RESOLUTIONS = ("model", "native")
# the official quick start's image sizing: qwen_vl_utils 0.0.14 `fetch_image` defaults, in merged patches
NATIVE_MIN_TOKENS = 4
NATIVE_MAX_TOKENS = 16384
OFFICIAL_EXTRAS_FILE = "projection_and_config.pt"


def native_resolution_image(image: Any, processor: RelSimProcessor, index: int = 0) -> PIL.Image.Image:
    """An image at its own size rounded to the patch grid, resized as the official quick start resizes it.

    `qwen_vl_utils.fetch_image` rounds each side to a multiple of `patch_size * merge_size` (between 4 and 16384
    merged patches) and resizes with Pillow's default (bicubic); the image processor then applies its own pixel
    bounds, resizing again (bicubic) only where they are tighter.
    """
    source = image_source(image, f"at position {index}")
    rgb = decode_image(image, source=source, max_image_pixels=processor.max_image_pixels)
    image_processor = processor.image_processor
    factor = image_processor.patch_size * image_processor.merge_size
    height, width = smart_resize(
        rgb.height,
        rgb.width,
        factor=factor,
        min_pixels=NATIVE_MIN_TOKENS * factor**2,
        max_pixels=NATIVE_MAX_TOKENS * factor**2,
    )
    height, width = smart_resize(
        height,
        width,
        factor=factor,
        min_pixels=image_processor.size["shortest_edge"],
        max_pixels=image_processor.size["longest_edge"],
    )
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), resample=PIL.Image.BICUBIC)
    return rgb


def preprocess(images: Any) -> PIL.Image.Image | list[PIL.Image.Image]:
    """The official `preprocess`: an image (path, bytes, PIL, array) -> RGB PIL image; a list -> a list.

    Decoding is relsim's one image decoder (EXIF rotation applied, transparency onto white); sizing is left to the
    scorer, so a preprocessed image can be scored at either resolution.
    """
    if isinstance(images, (list, tuple)):
        return [preprocess(image) for image in images]
    return decode_image(images, source=image_source(images, "the image"))


class RelSimScorer:
    """Scores image pairs by the cosine of their relsim embeddings (1 = same relational logic).

    Args:
        model: a RelSimModel.
        processor: its RelSimProcessor.
        resolution: `"model"` (the processor's configured crop and size, as relsim was trained) or `"native"` (each
            image at its own size, as the official quick start scores).
        batch_size: images per forward.
    """

    def __init__(
        self, model: RelSimModel, processor: RelSimProcessor, resolution: str = "model", batch_size: int = 32
    ) -> None:
        if resolution not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {resolution!r}")
        model.check_processor(processor)
        self.model = model.eval()
        self.processor = processor
        self.resolution = resolution
        self.batch_size = batch_size

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    def to(self, device: torch.device | str) -> RelSimScorer:
        self.model.to(device)
        return self

    def eval(self) -> RelSimScorer:
        self.model.eval()
        return self

    @torch.no_grad()
    def embed(self, images: Any) -> torch.FloatTensor:
        """L2-normalised relsim embeddings `(N, projection_dim)` on the CPU; one image gives one row."""
        if self.resolution == "model":
            return self.model.embed_images(images, self.processor, batch_size=self.batch_size)
        images = as_image_list(images)
        if not images:
            raise ValueError("embed got no images")
        rows = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            prepared = [native_resolution_image(image, self.processor, start + i) for i, image in enumerate(chunk)]
            batch = self.processor.batch_prepared_images(prepared)
            rows.append(self.model.get_image_features(**move_batch(batch, self.device)).float().cpu())
        return torch.cat(rows)

    @torch.no_grad()
    def __call__(self, images_a: Any, images_b: Any) -> float | torch.FloatTensor:
        """The similarity of `images_a[i]` and `images_b[i]`.

        Returns:
            a float for two single images (the official `model(img1, img2)`); otherwise a `(n,)` tensor of paired
            cosines, a side of one image being compared with every image of the other.

        Raises:
            ValueError: the sides hold different numbers of images and neither holds exactly one.
        """
        single = not isinstance(images_a, (list, tuple)) and not isinstance(images_b, (list, tuple))
        list_a, list_b = as_image_list(images_a), as_image_list(images_b)
        if len(list_a) != len(list_b) and 1 not in (len(list_a), len(list_b)):
            raise ValueError(
                f"pairs images_a[i] with images_b[i]: got {len(list_a)} and {len(list_b)} images (give equal "
                "numbers, or one image on a side to compare it with all of the other)"
            )
        if single and len(list_a) == len(list_b) == 1:
            # one forward for both, as the official scorer runs a pair
            embeddings = self.embed([list_a[0], list_b[0]])
            return float(embeddings[0] @ embeddings[1])
        return (self.embed(list_a) * self.embed(list_b)).sum(dim=-1)


def _refuse_unconverted(checkpoint_dir: str) -> None:
    folder = Path(checkpoint_dir)
    if (folder / OFFICIAL_EXTRAS_FILE).is_file() and not (folder / "config.json").is_file():
        raise ValueError(
            f"{checkpoint_dir} is an official relsim checkpoint (LoRA adapter + {OFFICIAL_EXTRAS_FILE}); convert it "
            "first: python -m training.trainer convert-official --checkpoint "
            f"{checkpoint_dir} --base Qwen/Qwen2.5-VL-7B-Instruct --output relsim-official"
        )


def relsim(
    pretrained: bool = True,
    checkpoint_dir: str | Path | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    resolution: str = "model",
    batch_size: int = 32,
    trust_remote_code: bool = False,
) -> tuple[RelSimScorer, Callable[[Any], Any]]:
    """`model, preprocess = relsim(pretrained=True, checkpoint_dir=...)`, the official quick start's one call.

    Args:
        pretrained: must be True: relsim scores mean nothing with untrained weights (the official API refuses
            False too).
        checkpoint_dir: a relsim folder or hub id (e.g. the official release after `convert-official`).
        device: where the model runs; default cuda when available.
        dtype: weights' dtype (the official quick start runs bfloat16).
        resolution: `"model"` or `"native"`, see `RelSimScorer`.
        batch_size: images per forward.
        trust_remote_code: load through the code saved beside the weights instead of this package's classes.

    Returns:
        `(RelSimScorer, preprocess)`.

    Raises:
        ValueError: `pretrained` is False, `checkpoint_dir` is missing, or names an unconverted official checkpoint.
        ModelLoadError: the folder or hub id cannot be loaded.
    """
    if not pretrained:
        raise ValueError("relsim(pretrained=False) is not supported: give pretrained=True and a checkpoint_dir")
    if checkpoint_dir is None:
        raise ValueError("checkpoint_dir is required: a relsim folder or hub id (e.g. a converted official release)")
    _refuse_unconverted(str(checkpoint_dir))
    model, processor = load_relsim(str(checkpoint_dir), dtype=dtype, trust_remote_code=trust_remote_code)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    logger.info("loaded relsim from %s on %s", checkpoint_dir, device)
    return RelSimScorer(model.to(device), processor, resolution=resolution, batch_size=batch_size), preprocess


__all__ = ["RESOLUTIONS", "RelSimScorer", "native_resolution_image", "preprocess", "relsim"]
