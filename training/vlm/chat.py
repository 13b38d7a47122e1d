"""Qwen2.5-VL chat over images: the evaluation's captioner (CLIP-T, Qwen-T) and local judge, the pipeline's filter
and captioners.

The prompt is built from the tokenizer's chat template and the PIL image processor, not the stock Qwen2.5-VL
processor, which cannot be built without torchvision.
"""

from __future__ import annotations

from collections.abc import Sequence

import PIL.Image
import torch
from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration
from transformers.feature_extraction_utils import BatchFeature
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil, smart_resize

from modeling_relsim.image_decoding import decode_image


IMAGE_TOKEN = "<|image_pad|>"
QWEN2_5_VL_DEFAULT = "Qwen/Qwen2.5-VL-7B-Instruct"


class QwenVLChat:
    """Args:
    max_pixels: every image is resized (aspect kept, LANCZOS) to at most this many pixels before patching.
    """

    def __init__(
        self,
        model: Qwen2_5_VLForConditionalGeneration,
        tokenizer,
        image_processor: Qwen2VLImageProcessorPil,
        model_name_or_path: str,
        max_pixels: int = 448 * 448,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.model_name_or_path = model_name_or_path
        self.max_pixels = max_pixels
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)

    @classmethod
    def from_pretrained(
        cls, model_name_or_path: str = QWEN2_5_VL_DEFAULT, device="cpu", dtype=torch.float32, max_pixels=448 * 448
    ) -> QwenVLChat:
        from training.errors import loading_model

        with loading_model(model_name_or_path, "the Qwen2.5-VL model", "--caption-model / --judge-model"):
            model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_name_or_path, dtype=dtype).to(device)
            tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
            image_processor = Qwen2VLImageProcessorPil.from_pretrained(model_name_or_path)
        return cls(model, tokenizer, image_processor, model_name_or_path, max_pixels)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _resized(self, image: PIL.Image.Image) -> PIL.Image.Image:
        """Decoded as every relsim path decodes (transparency on white, 16-bit scaled), then resized keeping the
        aspect ratio: the judge's own resizing."""
        image = decode_image(image)
        factor = self.image_processor.patch_size * self.image_processor.merge_size
        height, width = smart_resize(
            image.height, image.width, factor=factor, min_pixels=factor * factor, max_pixels=self.max_pixels
        )
        return image if image.size == (width, height) else image.resize((width, height), PIL.Image.LANCZOS)

    def build_batch(self, conversations: Sequence[tuple[Sequence[PIL.Image.Image], str]]) -> BatchFeature:
        """One user turn per conversation: its images, then its text; left padded, ready for `generate`."""
        texts, images = [], []
        for conversation_images, prompt in conversations:
            content = [{"type": "image"} for _ in conversation_images] + [{"type": "text", "text": prompt}]
            texts.append(
                self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
                )
            )
            images += [self._resized(image) for image in conversation_images]
        pixels = self.image_processor(images=images, do_resize=False, return_tensors="pt")
        tokens_per_image = (pixels["image_grid_thw"].prod(-1) // self.image_processor.merge_size**2).tolist()
        expanded, image_index = [], 0
        for text in texts:
            pieces = text.split(IMAGE_TOKEN)
            rendered = pieces[0]
            for piece in pieces[1:]:
                rendered += IMAGE_TOKEN * tokens_per_image[image_index] + piece
                image_index += 1
            expanded.append(rendered)
        if image_index != len(images):
            raise ValueError(f"the chat template rendered {image_index} image placeholders for {len(images)} images")
        tokens = self.tokenizer(expanded, padding=True, padding_side="left", return_tensors="pt")
        return BatchFeature(
            {
                "input_ids": tokens["input_ids"],
                "attention_mask": tokens["attention_mask"],
                # image tokens are type 1: without this the model skips the M-RoPE positions of the images
                "mm_token_type_ids": (tokens["input_ids"] == self.image_token_id).int(),
                "pixel_values": pixels["pixel_values"],
                "image_grid_thw": pixels["image_grid_thw"],
            }
        )

    @torch.inference_mode()
    def generate(
        self, conversations: Sequence[tuple[Sequence[PIL.Image.Image], str]], max_new_tokens: int = 64
    ) -> list[str]:
        """Greedy answers (temperature 0), one per conversation."""
        batch = self.build_batch(conversations).to(self.device)
        batch["pixel_values"] = batch["pixel_values"].to(self.model.dtype)
        output = self.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
        answers = output[:, batch["input_ids"].shape[1] :]
        return self.tokenizer.batch_decode(answers, skip_special_tokens=True)
