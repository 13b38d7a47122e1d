"""The pipeline's model stages: thin wrappers that give the filter, the captioner and the checker the `Stage` shape
(load once in `setup`, then batches of rows), so the local and the Ray executor run them unchanged.

- `FilterStage` adds `filter_score` (P(yes) from one forward, `training.pipeline.filter.score_images`) and `kept`
  (score >= threshold); rows below the threshold stop here, their scores kept in `filter.jsonl`.
- `CaptionStage` adds `caption` (the single-image anonymous captioner, `training.pipeline.captioning`).
- `CheckStage` adds `check` (`training.pipeline.leak_check.check_caption`: placeholders, problems, leaked words, ok)
  against the row's `literal_descriptions` when it has them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import PIL.Image

from training.caption_text import normalize_caption
from training.cli import resolve_device, resolve_dtype
from training.pipeline.captioning.prompts import single_image_prompt
from training.pipeline.captioning.single import SingleImageCaptioner
from training.pipeline.filter.scoring import score_images
from training.pipeline.leak_check import check_caption
from training.pipeline.stages import ImageStage, Row, Stage
from training.vlm.chat import QwenVLChat
from training.vlm.decoding import Decoding


if TYPE_CHECKING:
    from training.vlm.chat import QwenVLChat

logger = logging.getLogger(__name__)


def load_chat(model: str, adapter: str | None, device: str, dtype: str, max_pixels: int) -> QwenVLChat:
    """The generating Qwen2.5-VL a stage runs (its LoRA adapter merged in when given)."""
    return QwenVLChat.from_pretrained(
        model, device=resolve_device(device), dtype=resolve_dtype(dtype), max_pixels=max_pixels, adapter=adapter
    )


class ChatStage(ImageStage):
    """An image stage that runs a `QwenVLChat`; `chat` may be given ready (tests, the demo) instead of loaded."""

    def __init__(
        self,
        model: str = "Qwen/Qwen2.5-VL-7B-Instruct",
        adapter: str | None = None,
        device: str = "auto",
        dtype: str = "float32",
        max_pixels: int = 448 * 448,
        batch_size: int | None = None,
        chat: QwenVLChat | None = None,
    ) -> None:
        self.model, self.adapter, self.device, self.dtype, self.max_pixels = model, adapter, device, dtype, max_pixels
        self.batch_size = batch_size
        self.chat = chat

    def output_settings(self) -> dict[str, Any]:
        return {"model": self.model, "adapter": self.adapter, "dtype": self.dtype, "max_pixels": self.max_pixels}

    def setup(self) -> None:
        if self.chat is None:
            logger.info("%s: loading %s%s", self.name, self.model, f" + {self.adapter}" if self.adapter else "")
            self.chat = load_chat(self.model, self.adapter, self.device, self.dtype, self.max_pixels)


class FilterStage(ChatStage):
    """Args (beyond `ChatStage`'s):
    threshold: rows with P(yes) >= threshold are kept.
    """

    name = "filter"
    output_fields = ("filter_score", "kept")

    def __init__(self, *args: Any, threshold: float = 0.5, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold is a probability in [0, 1], got {threshold}")
        self.threshold = threshold

    def process_images(self, rows: list[Row], images: list[PIL.Image.Image]) -> list[Row]:
        scores = score_images(self.chat, images, batch_size=len(images))
        return [
            {**row, "filter_score": float(score), "kept": bool(score >= self.threshold)}
            for row, score in zip(rows, scores, strict=True)
        ]

    def keeps(self, row: Row) -> bool:
        return bool(row.get("kept"))

    def output_settings(self) -> dict[str, Any]:
        return {**super().output_settings(), "threshold": self.threshold}


class CaptionStage(ChatStage):
    """Args (beyond `ChatStage`'s):
    prompt: the captioning prompt's text (None: the captioner's own, `captioning.prompts.SINGLE_IMAGE_PROMPT`; the
        released adapter wants the official wording, the tiny captioner the short prompt it was trained with).
    decoding: `training.vlm.decoding.Decoding` fields (greedy, 128 new tokens by default).
    cache_file: the captioner's own cache of captions (`SingleImageCaptioner`), keyed by weights, prompt version,
        decoding and image: a rerun with other weights or settings never reuses a stale caption.
    """

    name = "caption"
    output_fields = ("caption",)

    def __init__(
        self,
        *args: Any,
        prompt: str | None = None,
        decoding: dict[str, Any] | None = None,
        cache_file: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.prompt = prompt
        self.decoding = dict(decoding or {})
        self.cache_file = cache_file
        self.captioner = None

    def output_settings(self) -> dict[str, Any]:
        return {**super().output_settings(), "prompt": self.prompt, "decoding": self.decoding}

    def setup(self) -> None:
        import tempfile

        super().setup()
        cache_file = self.cache_file or str(Path(tempfile.mkdtemp(prefix="relsim-captions-")) / "captions.jsonl")
        self.captioner = SingleImageCaptioner(
            self.chat,
            cache_file,
            prompt=single_image_prompt(self.prompt),
            decoding=Decoding(**self.decoding),
            batch_size=self.batch_size or 8,
        )

    def process_images(self, rows: list[Row], images: list[PIL.Image.Image]) -> list[Row]:
        run = self.captioner(
            images, image_hashes=[row["image_hash"] for row in rows], sources=[row["image"] for row in rows]
        )
        return [{**row, "caption": caption} for row, caption in zip(rows, run.texts(), strict=True)]


class CheckStage(Stage):
    """The leak and format check of each row's caption against the row's `literal_descriptions` (no image read, no
    model); `relational_vocabulary` adds words never counted as leaks."""

    name = "check"
    output_fields = ("check",)

    def __init__(self, relational_vocabulary: list[str] | None = None, batch_size: int | None = None) -> None:
        self.relational_vocabulary = list(relational_vocabulary or [])
        self.batch_size = batch_size

    def output_settings(self) -> dict[str, Any]:
        return {"relational_vocabulary": self.relational_vocabulary}

    def process(self, rows: list[Row]) -> list[Row]:
        checked = []
        for row in rows:
            descriptions = row.get("literal_descriptions") or []
            if isinstance(descriptions, str):
                descriptions = [descriptions]
            result = check_caption(
                normalize_caption(str(row.get("caption", ""))), descriptions, self.relational_vocabulary
            )
            checked.append({**row, "check": result.to_dict()})
        return checked
