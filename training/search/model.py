"""The model a search index is made with: relsim for images, its configured text encoder for relation text.

Both land in the same space: relsim's image embeddings were trained to match the text encoder's (all-MiniLM-L6-v2
by default, `RelSimConfig.text_encoder`) embeddings of anonymous captions, so a relation written as text is a query
like an image is.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from training.relsim_folder import load_relsim
from training.store import model_fingerprint, tensors_fingerprint
from training.trainer.caption_encoder import CaptionEncoder


logger = logging.getLogger(__name__)


class SearchModel:
    """A relsim model and processor with the identity that an index records (model name, weights fingerprint,
    processor settings, text encoder), and the text encoder loaded on first use.

    Args:
        model: a `RelSimModel` (any dtype and device).
        processor: its `RelSimProcessor`.
        name: how the model is named in the index (its folder or hub id, or a label for a model in memory).
        weights: the weights fingerprint; default: the fingerprint of the tensors in memory.
        text_encoder: a sentence-transformers id or folder; default the model's configured `text_encoder`.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        name: str = "in-memory",
        weights: str | None = None,
        text_encoder: str | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
    ) -> None:
        model.check_processor(processor)
        self.model = model.eval()
        self.processor = processor
        self.name = name
        self.weights = weights or tensors_fingerprint(model.state_dict().items())
        self.text_encoder_name = text_encoder or getattr(
            model.config, "text_encoder", "sentence-transformers/all-MiniLM-L6-v2"
        )
        self.batch_size = batch_size
        self.num_workers = num_workers
        self._text_model: Any = None

    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        trust_remote_code: bool = False,
        **kwargs: Any,
    ) -> SearchModel:
        """A saved relsim folder or hub id (see `training.relsim_folder.load_relsim`), fingerprinted by
        its files."""
        model, processor = load_relsim(model_name_or_path, dtype, trust_remote_code)
        return cls(
            model.to(device), processor, model_name_or_path, model_fingerprint(model_name_or_path, model), **kwargs
        )

    def identity(self) -> dict[str, Any]:
        """What an index's vectors depend on; an index refuses a model with another identity."""
        return {
            "model": self.name,
            "weights": self.weights,
            "processor": self.processor.settings(),
            "text_encoder": self.text_encoder_name,
        }

    def embed_images(self, images: Sequence[Any], show_progress: bool = False) -> Any:
        """`ImageEmbeddings` of `images` (paths, bytes, PIL images): unreadable ones are left out with a reason."""
        return self.model.embed_images(
            list(images),
            self.processor,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            show_progress=show_progress,
            on_error="skip",
        )

    def embed_image(self, image: Any) -> torch.Tensor:
        """`(dim,)` unit vector of one image (path, bytes or PIL image).

        Raises:
            UnreadableImageError: naming the image when it cannot be read.
        """
        return self.model.embed_images([image], self.processor, batch_size=1, show_progress=False)[0]

    @property
    def text_model(self) -> Any:
        """The sentence-transformers text encoder (frozen, on the CPU), loaded on first use."""
        if self._text_model is None:
            self._text_model = CaptionEncoder(self.text_encoder_name).model
        return self._text_model

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """`(len(texts), dim)` unit vectors of relation texts in relsim's space.

        Raises:
            ValueError: no text, an empty text, or a text encoder whose width is not relsim's projection width.
        """
        texts = list(texts)
        if not texts or any(not text.strip() for text in texts):
            raise ValueError(f"relation texts must be non-empty strings, got {texts!r}")
        vectors = self.text_model.encode(
            texts, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False
        )
        vectors = vectors.float().cpu()
        width = self.model.config.projection_dim
        if vectors.shape[1] != width:
            raise ValueError(
                f"text encoder {self.text_encoder_name} gives {vectors.shape[1]}-d vectors, relsim {width}-d: use the "
                "text encoder the model was trained against (its config's text_encoder)"
            )
        return vectors
