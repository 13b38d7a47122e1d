"""Caption baselines: each image becomes its Qwen2.5-VL caption, compared in CLIP's text space (CLIP-T) or with a
sentence-transformers text model (Qwen-T, all-MiniLM-L6-v2 by default)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, CLIPModel

from training.errors import import_extra, loading_model
from training.evaluation.captioner import Captioner
from training.evaluation.methods.base import EmbeddingMethod
from training.evaluation.methods.vision_encoders import CLIP_DEFAULT
from training.store import model_fingerprint
from training.trainer.caption_encoder import resolve_text_encoder


class _CaptionMethod(EmbeddingMethod):
    def __init__(self, captioner: Captioner, device) -> None:
        super().__init__(device)
        self.captioner = captioner

    def _captioner_identity(self) -> dict[str, Any]:
        return {
            "captioner": self.captioner.chat.model_name_or_path,
            "captioner_weights": self.captioner.weights,
            "caption_prompt": self.captioner.prompt,
        }

    def embed(self, batch: Any, image_hashes: Sequence[str]) -> torch.Tensor:
        return self.embed_texts(self.captioner(batch, image_hashes))

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        raise NotImplementedError


class ClipTextMethod(_CaptionMethod):
    name = "clip-t"

    def __init__(self, captioner: Captioner, clip_name_or_path: str = CLIP_DEFAULT, device="cpu") -> None:
        super().__init__(captioner, device)
        self.clip_name_or_path = clip_name_or_path
        with loading_model(clip_name_or_path, "the clip-t text model", "--model"):
            self.model = CLIPModel.from_pretrained(clip_name_or_path).to(self.device).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(clip_name_or_path)
        self.text_weights = model_fingerprint(clip_name_or_path, self.model)

    def identity(self) -> dict[str, Any]:
        return {"text_model": self.clip_name_or_path, "text_weights": self.text_weights, **self._captioner_identity()}

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        max_length = self.model.config.text_config.max_position_embeddings
        tokens = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        features = self.model.get_text_features(**tokens.to(self.device))
        features = getattr(features, "pooler_output", features)
        return F.normalize(features.float(), dim=-1).cpu()


class QwenTextMethod(_CaptionMethod):
    name = "qwen-t"

    def __init__(
        self, captioner: Captioner, text_encoder: str = "sentence-transformers/all-MiniLM-L6-v2", device="cpu"
    ) -> None:
        super().__init__(captioner, device)
        sentence_transformers = import_extra("sentence_transformers", "eval", "the qwen-t method")

        self.text_encoder = text_encoder
        with loading_model(text_encoder, "the qwen-t text model", "--text-encoder"):
            self.model = sentence_transformers.SentenceTransformer(
                resolve_text_encoder(text_encoder), device=str(self.device)
            )
        self.text_weights = model_fingerprint(resolve_text_encoder(text_encoder), self.model)

    def identity(self) -> dict[str, Any]:
        return {"text_model": self.text_encoder, "text_weights": self.text_weights, **self._captioner_identity()}

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        return self.model.encode(list(texts), convert_to_tensor=True, normalize_embeddings=True).float().cpu()
