"""Turns a list of (image, caption) examples into a relsim batch, in DataLoader workers.

An unreadable image (missing, truncated, not an image) is left out of the batch and returned in
`unreadable_images`, so the trainer can count it, list it in its report and stop past a threshold; it is never
replaced by a stand-in image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from modeling_relsim import RelSimProcessor, UnreadableImageError
from modeling_relsim.image_decoding import decode_image
from training.trainer.data import normalize_caption
from training.trainer.losses import caption_id


def _image_source(image: Any, example: Mapping[str, Any]) -> str:
    if isinstance(image, Mapping) and image.get("path"):
        return str(image["path"])
    if isinstance(image, str) and image:
        return image
    return str(example.get("image_hash") or example.get("id") or "an example without a file name")


class RelSimCollator:
    """Decodes, crops and tokenizes a batch; adds `captions`, `caption_ids` and the unreadable images."""

    def __init__(self, processor: RelSimProcessor, padding_side: str | None = None) -> None:
        self.processor = processor
        self.padding_side = padding_side

    def _prepare(self, example: Mapping[str, Any]) -> Any:
        image = example["image"]
        source = _image_source(image, example)
        if isinstance(image, Mapping):
            image = image.get("bytes") or image.get("path")
        if not image:
            raise UnreadableImageError(source, "no image file for this example")
        try:
            return self._prepare_image(image)
        except UnreadableImageError as error:
            raise UnreadableImageError(source, error.reason) from error

    def _prepare_image(self, image: Any) -> Any:
        return self.processor.prepare_image(image)

    def _batch(self, prepared: list[Any]) -> dict[str, Any]:
        return dict(self.processor.batch_prepared_images(prepared, padding_side=self.padding_side))

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        prepared, captions, unreadable = [], [], []
        for example in examples:
            try:
                prepared.append(self._prepare(example))
            except UnreadableImageError as error:
                unreadable.append({"source": error.source, "reason": error.reason})
                continue
            captions.append(normalize_caption(example["caption"]))
        if not prepared:
            reasons = "; ".join(f"{item['source']}: {item['reason']}" for item in unreadable[:3])
            raise RuntimeError(
                f"all {len(examples)} images of a batch are unreadable ({reasons}); is the image folder right?"
            )
        batch = self._batch(prepared)
        batch["captions"] = captions
        batch["caption_ids"] = torch.tensor([caption_id(caption) for caption in captions], dtype=torch.long)
        batch["unreadable_images"] = unreadable
        batch["num_examples"] = len(examples)
        return batch


class ImageEncoderCollator(RelSimCollator):
    """The same batches for a tuned CLIP/DINOv2 encoder: images decoded by relsim's one decoder, then the encoder's own
    image processor (resize, crop, normalise) gives `pixel_values`; captions and unreadable images as above."""

    def __init__(self, image_processor: Any) -> None:
        super().__init__(image_processor)

    def _prepare_image(self, image: Any) -> Any:
        return decode_image(image)

    def _batch(self, prepared: list[Any]) -> dict[str, Any]:
        return {"pixel_values": self.processor(images=prepared, return_tensors="pt")["pixel_values"]}


def build_collator(processor: Any) -> RelSimCollator:
    """The collator for a processor: `RelSimCollator` for relsim's, `ImageEncoderCollator` for an image processor."""
    return RelSimCollator(processor) if isinstance(processor, RelSimProcessor) else ImageEncoderCollator(processor)
