"""The embedding stage: relsim's 384-d relational embedding of each row's image, through `RelSimModel.embed_images`
(the model's fast path: batched, one-call window attention), so a pipeline embedding equals what a user computes with
the model directly."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import PIL.Image

from training.cli import resolve_device, resolve_dtype
from training.pipeline.stages import ImageStage, Row, failed_row
from training.relsim_folder import load_relsim


if TYPE_CHECKING:
    from modeling_relsim import RelSimModel, RelSimProcessor

logger = logging.getLogger(__name__)


class EmbedStage(ImageStage):
    """Adds `embedding` (a list of float32 values, L2-normalised).

    Args:
        model: a saved relsim folder or hub id (loaded once per process / Ray actor in `setup`).
        device, dtype: where and in which precision the model runs ("auto": CUDA when available).
        embed_batch_size: images per forward inside `embed_images`.
        batch_size: rows per call of `process` (None: the run's default).
    """

    name = "embed"
    output_fields = ("embedding",)

    def __init__(
        self,
        model: str,
        device: str = "auto",
        dtype: str = "float32",
        embed_batch_size: int = 32,
        batch_size: int | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        self.model_name_or_path, self.device, self.dtype = model, device, dtype
        self.embed_batch_size, self.batch_size, self.trust_remote_code = embed_batch_size, batch_size, trust_remote_code
        self.model: RelSimModel | None = None
        self.processor: RelSimProcessor | None = None

    def output_settings(self) -> dict[str, Any]:
        return {"model": self.model_name_or_path, "dtype": self.dtype, "trust_remote_code": self.trust_remote_code}

    def setup(self) -> None:
        logger.info("embed: loading %s", self.model_name_or_path)
        model, self.processor = load_relsim(
            self.model_name_or_path, dtype=resolve_dtype(self.dtype), trust_remote_code=self.trust_remote_code
        )
        self.model = model.to(resolve_device(self.device)).eval()

    def process_images(self, rows: list[Row], images: list[PIL.Image.Image]) -> list[Row]:
        result = self.model.embed_images(
            images, self.processor, batch_size=self.embed_batch_size, show_progress=False, on_error="skip"
        )
        output = [dict(row) for row in rows]
        for position, vector in zip(result.indices, result.embeddings.float().numpy(), strict=True):
            output[position]["embedding"] = vector.tolist()
        for failure in result.failures:
            row = rows[failure.index]
            output[failure.index] = failed_row(row, str(row.get("image")), failure.reason)
        return output
