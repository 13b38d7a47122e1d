"""Turns images of any source, size and mode into the prompt + pixel batch that relsim reads.

Image-only on purpose: the stock Qwen2.5-VL processor needs torchvision (its video processor), this one does not.
This file travels as remote code next to saved weights, so it imports only torch, transformers and its siblings
(Pillow comes with transformers' vision support, which any image processor needs).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence
from transformers import AddedToken, AutoTokenizer
from transformers.feature_extraction_utils import BatchFeature
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil, smart_resize
from transformers.processing_utils import ProcessorMixin
from transformers.utils import is_torchvision_available, is_vision_available

from .configuration_relsim import CROP_POLICIES, DEFAULT_INSTRUCTION, PROCESSOR_SETTING_NAMES
from .image_decoding import DEFAULT_MAX_IMAGE_PIXELS, UnreadableImageError, as_image_list, decode_image, image_source


if is_vision_available():
    import PIL.Image

IMAGE_TOKEN = "<|image_pad|>"
USER_TURN_START = "<|im_start|>user"


IMAGE_BACKENDS = ("auto", "pil", "torchvision")
# `from_pretrained` keywords that say where files come from: every part of the processor is loaded with them.
FILE_LOCATING_KWARGS = (
    "cache_dir",
    "force_download",
    "local_files_only",
    "token",
    "revision",
    "subfolder",
    "proxies",
    "trust_remote_code",
    "_from_auto",
    "_commit_hash",
)


def _image_processor_class(image_backend: str) -> type:
    if image_backend not in IMAGE_BACKENDS:
        raise ValueError(f"image_backend must be one of {IMAGE_BACKENDS}, got {image_backend!r}")
    if image_backend == "pil" or (image_backend == "auto" and not is_torchvision_available()):
        return Qwen2VLImageProcessorPil
    if not is_torchvision_available():
        raise ImportError("image_backend='torchvision' needs torchvision installed (matching your torch build)")
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    return Qwen2VLImageProcessor


def add_query_token(tokenizer: Any, query_token: str) -> int:
    """Adds `query_token` as an atomic special token when the tokenizer lacks it; returns its id."""
    if tokenizer.convert_tokens_to_ids(query_token) in (None, tokenizer.unk_token_id):
        tokenizer.add_tokens([AddedToken(query_token, special=True, normalized=False)], special_tokens=True)
    return tokenizer.convert_tokens_to_ids(query_token)


class RelSimProcessor(ProcessorMixin):
    r"""Builds relsim inputs: the chat prompt `[system] user: [instruction] <image> <|query|>` and the image pixels.

    The prompt ends at the query token: attention is causal, so nothing after it can change the read-out.
    `pixel_values` come back per sample, `(batch, max_patches, patch_dim)` zero-padded, so a batch can be sliced
    (GradCache micro-batches, DDP shards); the model drops the padding using `image_grid_thw`.

    Args:
        image_processor (`Qwen2VLImageProcessorPil` or its torchvision twin, *optional*): normalises and patchifies
            the image this processor resized.
        tokenizer (`PreTrainedTokenizerBase`): a Qwen2.5-VL tokenizer; `query_token` is added if it is missing.
        chat_template (`str`, *optional*): Jinja template; defaults to the tokenizer's.
        query_token (`str`): the read-out token.
        instruction (`str`, *optional*): text placed before the image; `None` for none (the official release).
        use_system_prompt (`bool`): keep the template's system turn.
        image_size (`int`): square side (`crop="center"`) or pixel budget `image_size**2` (`crop="none"`).
        crop (`str`): `"center"` (square centre crop) or `"none"` (keep the aspect ratio).
        max_image_pixels (`int`, *optional*): images with more pixels are refused as unreadable before they are
            decoded (default 8192², see `DEFAULT_MAX_IMAGE_PIXELS`); `None` lifts the limit.
    """

    def __init__(
        self,
        image_processor: Qwen2VLImageProcessorPil | None = None,
        tokenizer: Any = None,
        chat_template: str | None = None,
        query_token: str = "<|query|>",
        instruction: str | None = DEFAULT_INSTRUCTION,
        use_system_prompt: bool = True,
        image_size: int = 448,
        crop: str = "center",
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        if tokenizer is None:
            raise ValueError("RelSimProcessor needs a tokenizer (a Qwen2.5-VL tokenizer)")
        if image_processor is None:
            image_processor = Qwen2VLImageProcessorPil()
        if crop not in CROP_POLICIES:
            raise ValueError(f"crop must be one of {CROP_POLICIES}, got {crop!r}")
        if max_image_pixels is not None and max_image_pixels < 1:
            raise ValueError(f"max_image_pixels must be a positive number of pixels or None, got {max_image_pixels}")
        factor = image_processor.patch_size * image_processor.merge_size
        if crop == "center" and (image_size <= 0 or image_size % factor):
            raise ValueError(
                f"image_size must be a positive multiple of patch_size * merge_size = {factor}, got {image_size}"
            )
        add_query_token(tokenizer, query_token)
        if chat_template is None:
            chat_template = getattr(tokenizer, "chat_template", None)
        super().__init__(image_processor, tokenizer, chat_template=chat_template)
        self.query_token = query_token
        self.instruction = instruction
        self.use_system_prompt = use_system_prompt
        self.image_size = image_size
        self.crop = crop
        self.max_image_pixels = max_image_pixels

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, image_backend: str = "auto", **kwargs: Any
    ) -> RelSimProcessor:
        """Loads the image processor of `image_backend` (`"auto"`: torchvision when installed, else PIL).

        Each part comes through its own public `from_pretrained` and the saved settings through `get_processor_dict`,
        so no private `ProcessorMixin` step is overridden (those change between transformers minor releases). Keyword
        arguments that locate files (`revision`, `token`, `subfolder`, ...) go to every part; any other keyword
        overrides a saved setting (`instruction=`, `image_size=`, ...), and an unknown one is refused by `__init__`.

        Resizing is always this processor's own (PIL, LANCZOS, in `prepare_image`); the image processor only
        rescales, normalises and patchifies, where the two backends agree to 1e-6. (Their resizing differs by up to
        0.3, which is why it is never theirs.) So the faster torchvision backend cannot shift the embeddings.
        """
        image_processor_class = _image_processor_class(image_backend)
        kwargs.pop("return_unused_kwargs", None)
        loading = {name: kwargs.pop(name) for name in FILE_LOCATING_KWARGS if name in kwargs}
        image_processor = kwargs.pop("image_processor", None) or image_processor_class.from_pretrained(
            pretrained_model_name_or_path, **loading
        )
        tokenizer = kwargs.pop("tokenizer", None) or AutoTokenizer.from_pretrained(
            pretrained_model_name_or_path, **loading
        )
        processor_dict, _ = cls.get_processor_dict(pretrained_model_name_or_path, **loading)
        settings = {name: processor_dict[name] for name in cls.saved_setting_names() if name in processor_dict}
        return cls(image_processor=image_processor, tokenizer=tokenizer, **{**settings, **kwargs})

    @classmethod
    def saved_setting_names(cls) -> tuple[str, ...]:
        """The `__init__` arguments a saved processor config may hold (the parts are loaded on their own)."""
        names = inspect.signature(cls.__init__).parameters
        return tuple(name for name in names if name not in ("self", "image_processor", "tokenizer"))

    @property
    def query_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(self.query_token)

    @property
    def image_token(self) -> str:
        return getattr(self.tokenizer, "image_token", None) or IMAGE_TOKEN

    @property
    def image_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(self.image_token)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values", "image_grid_thw"]

    def settings(self) -> dict[str, Any]:
        """The prompt and image settings a RelSimConfig must agree with."""
        return {name: getattr(self, name) for name in PROCESSOR_SETTING_NAMES}

    def render_prompt(self) -> str:
        """The prompt text for one image, with a single image placeholder, ending at the query token."""
        template = self.chat_template or getattr(self.tokenizer, "chat_template", None)
        if not template:
            raise ValueError("no chat template: pass chat_template= or use a tokenizer that has one")
        content: list[dict[str, str]] = []
        if self.instruction:
            content.append({"type": "text", "text": self.instruction})
        content += [{"type": "image"}, {"type": "text", "text": self.query_token}]
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], chat_template=template, tokenize=False, add_generation_prompt=False
        )
        if text.count(self.query_token) != 1 or text.count(self.image_token) != 1:
            raise ValueError(
                f"the chat template must render the image as one {self.image_token} and keep the query token "
                f"{self.query_token} once; it rendered: {text!r}"
            )
        if not self.use_system_prompt:
            user_start = text.find(USER_TURN_START)
            if user_start < 0:
                raise ValueError(f"use_system_prompt=False needs a template with a {USER_TURN_START!r} turn")
            text = text[user_start:]
        return text[: text.index(self.query_token) + len(self.query_token)]

    def prompt_token_ids(self) -> tuple[list[int], list[int]]:
        """Token ids before and after the image placeholder; special tokens are atomic, so the split is exact."""
        before, after = self.render_prompt().split(self.image_token)
        before_ids = self.tokenizer(before, add_special_tokens=False)["input_ids"]
        after_ids = self.tokenizer(after, add_special_tokens=False)["input_ids"]
        if after_ids[-1:] != [self.query_token_id] or (before_ids + after_ids).count(self.query_token_id) != 1:
            raise ValueError(f"the query token {self.query_token!r} did not tokenize as a single special token")
        return before_ids, after_ids

    def prepare_image(self, image: Any, index: int = 0) -> PIL.Image.Image:
        """A path, encoded bytes, PIL image or array -> RGB PIL image, cropped and resized as configured (LANCZOS).

        Decoding is [`decode_image`]'s, the one every relsim path shares; `index` names an in-memory image in errors.
        """
        source = image_source(image, f"at batch position {index}")
        rgb = decode_image(image, source=source, max_image_pixels=self.max_image_pixels)
        width, height = rgb.size
        if self.crop == "center":
            side = min(width, height)
            left, top = (width - side) // 2, (height - side) // 2
            rgb = rgb.crop((left, top, left + side, top + side))
            target_height = target_width = self.image_size
        else:
            factor = self.image_processor.patch_size * self.image_processor.merge_size
            try:
                # the same pixel budget for every image: small images are enlarged, large ones reduced
                target_height, target_width = smart_resize(
                    height, width, factor=factor, min_pixels=self.image_size**2, max_pixels=self.image_size**2
                )
            except ValueError as error:
                raise UnreadableImageError(source, str(error)) from error
        if rgb.size != (target_width, target_height):
            rgb = rgb.resize((target_width, target_height), resample=PIL.Image.LANCZOS)
        return rgb

    def __call__(
        self,
        images: Any = None,
        text: Any = None,
        padding_side: str | None = None,
        return_tensors: str = "pt",
    ) -> BatchFeature:
        """Processes a batch of images.

        Args:
            images: one image (path, encoded bytes, PIL image, HW/HWC/CHW array or tensor), a list of them, or a 4-D
                array/tensor stack of images.
            padding_side: `"left"` or `"right"`; defaults to the tokenizer's.

        Returns:
            `BatchFeature` with `input_ids` and `attention_mask` `(batch, seq)`, `pixel_values`
            `(batch, max_patches, patch_dim)` and `image_grid_thw` `(batch, 3)`.
        """
        if text is not None:
            raise ValueError("RelSimProcessor embeds images only; captions go to the text encoder")
        if return_tensors != "pt":
            raise ValueError(f"only return_tensors='pt' is supported, got {return_tensors!r}")
        if images is None:
            raise ValueError("RelSimProcessor got an empty batch: pass at least one image")
        images = as_image_list(images)
        if not images:
            raise ValueError("RelSimProcessor got an empty batch: pass at least one image")
        prepared = [self.prepare_image(image, index) for index, image in enumerate(images)]
        return self.batch_prepared_images(prepared, padding_side=padding_side)

    def batch_prepared_images(
        self, prepared: Sequence[PIL.Image.Image], padding_side: str | None = None
    ) -> BatchFeature:
        """Batches images that already went through [`prepare_image`] (e.g. decoded one by one in a collator, so
        that an unreadable one can be left out); preparing twice could resize twice."""
        if not prepared:
            raise ValueError("RelSimProcessor got an empty batch: pass at least one image")
        pixels = self.image_processor(images=list(prepared), do_resize=False, return_tensors="pt")
        image_grid_thw = pixels["image_grid_thw"]
        patches_per_image = image_grid_thw.prod(-1)
        pixel_values = pad_sequence(
            list(torch.split(pixels["pixel_values"], patches_per_image.tolist())), batch_first=True
        )
        tokens_per_image = (patches_per_image // self.image_processor.merge_size**2).tolist()
        before_ids, after_ids = self.prompt_token_ids()
        input_ids = [before_ids + [self.image_token_id] * count + after_ids for count in tokens_per_image]
        if self.tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token before batching")
        text_inputs = self.tokenizer.pad(
            {"input_ids": input_ids},
            padding=True,
            padding_side=padding_side or self.tokenizer.padding_side,
            return_attention_mask=True,
            return_tensors="pt",
        )
        return BatchFeature(
            data={
                "input_ids": text_inputs["input_ids"],
                "attention_mask": text_inputs["attention_mask"],
                "pixel_values": pixel_values,
                "image_grid_thw": image_grid_thw,
            }
        )


__all__ = ["RelSimProcessor", "UnreadableImageError", "add_query_token"]
