"""Conceptual distances from a chat model: descriptions sampled at each length budget, scored by teacher forcing
under both images of each pair, batched and cached (`DistanceCache`), then combined by `pair_distance`.

Which chat and which prompt write the descriptions is the whole difference between the variants: a literal describer
(a VLM asked to say what it sees) measures shared objects and layout, the pipeline's anonymous captioner (asked for
the relation with placeholders for the objects) measures shared relations. Both are a `Describer`.

Sampling is repeatable: the N samples of one (image, length) are drawn in one `generate` call of N copies of the
prompt, seeded from the describer, the run's seed, the image and the length, so a resumed run draws exactly the
samples the killed one would have, whatever else is pending.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import PIL.Image
from transformers.utils.logging import tqdm

from training.pipeline.captioning.image_inputs import image_name, read_image
from training.store import model_fingerprint
from training.studies.conceptual_distance import PairDistance, check_lengths, pair_distance
from training.studies.conceptual_distance_cache import DistanceCache, description_key, score_key
from training.vlm.chat import QwenVLChat
from training.vlm.decoding import Decoding


logger = logging.getLogger(__name__)

DEFAULT_LENGTHS = (8, 16, 32, 64)


@dataclass
class Describer:
    """A chat model and the prompt that makes it describe an image.

    Args:
        fingerprint: the weights' fingerprint for the cache keys; computed from the chat (its folder's files, or its
            tensors for a model built in memory) when None.
    """

    chat: QwenVLChat
    prompt: str
    name: str = "describer"
    fingerprint: str | None = None

    def __post_init__(self) -> None:
        if not self.prompt.strip():
            raise ValueError(f"the {self.name} describer's prompt is empty; give the text that asks for a description")
        if self.fingerprint is None:
            self.fingerprint = model_fingerprint(self.chat.model_name_or_path, self.chat.model)

    @property
    def identity(self) -> str:
        """What the cache keys name the describer by: its weights and its prompt."""
        return hashlib.sha256(json.dumps([self.fingerprint, self.prompt]).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class DistanceSettings:
    """Args:
    lengths: description budgets in tokens (`max_new_tokens`), strictly increasing.
    num_samples: descriptions sampled per image and length.
    temperature, top_p: sampling settings (1.0 and 1.0 sample from the model's own distribution).
    seed: with the describer, image and length it fixes every sample.
    batch_size: (description, image) pairs per scoring forward.
    """

    lengths: tuple[int, ...] = DEFAULT_LENGTHS
    num_samples: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "lengths", check_lengths(self.lengths))
        if self.num_samples < 1 or self.batch_size < 1:
            raise ValueError(
                f"num_samples and batch_size must be at least 1, got {self.num_samples}, {self.batch_size}"
            )
        Decoding(do_sample=True, temperature=self.temperature, top_p=self.top_p)  # validates both

    def sampling(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "seed": self.seed}


@dataclass
class DistanceRun:
    """The distances of a run, aligned with its pairs, and what was computed versus reused."""

    distances: list[PairDistance] = field(default_factory=list)
    image_hashes: list[tuple[str, str]] = field(default_factory=list)
    sampled: int = 0
    scored: int = 0

    def summary(self) -> dict[str, int]:
        return {"pairs": len(self.distances), "descriptions_sampled": self.sampled, "scores_computed": self.scored}


class ConceptualDistance:
    """Computes `PairDistance`s with one describer, caching in `cache_dir` (see the module docstring)."""

    def __init__(self, describer: Describer, cache_dir: str | Path, settings: DistanceSettings | None = None) -> None:
        self.describer = describer
        self.settings = settings or DistanceSettings()
        self.cache = DistanceCache(cache_dir)

    def _group_seed(self, image_hash: str, length: int) -> int:
        parts = json.dumps([self.describer.identity, self.settings.seed, image_hash, length]).encode("utf-8")
        return int(hashlib.sha256(parts).hexdigest()[:8], 16) % 2**31

    def _sample_keys(self, image_hash: str, length: int) -> list[str]:
        sampling = self.settings.sampling()
        identity = self.describer.identity
        return [description_key(identity, sampling, image_hash, length, n) for n in range(self.settings.num_samples)]

    def _sample(self, images: dict[str, PIL.Image.Image], run: DistanceRun, show_progress: bool) -> None:
        groups = [
            (image_hash, length)
            for image_hash in images
            for length in self.settings.lengths
            if any(key not in self.cache.descriptions for key in self._sample_keys(image_hash, length))
        ]
        for image_hash, length in tqdm(groups, desc="sampling descriptions", disable=not show_progress):
            decoding = Decoding(
                max_new_tokens=length, do_sample=True, temperature=self.settings.temperature,
                top_p=self.settings.top_p, seed=self._group_seed(image_hash, length),
            )  # fmt: skip
            count = self.settings.num_samples
            conversation = ([images[image_hash]], self.describer.prompt)
            drawn = self.describer.chat.generate_token_ids([conversation] * count, decoding, batch_size=count)
            for sample, (key, token_ids) in enumerate(zip(self._sample_keys(image_hash, length), drawn, strict=True)):
                if key in self.cache.descriptions:
                    continue
                text = self.describer.chat.tokenizer.decode(token_ids, skip_special_tokens=True)
                self.cache.add_description(
                    {"key": key, "image_hash": image_hash, "length": length, "sample": sample, "token_ids": token_ids,
                     "text": text, "describer": self.describer.name, "model": self.describer.fingerprint,
                     "prompt": self.describer.prompt}
                )  # fmt: skip
                run.sampled += 1

    def _score(self, images: dict[str, PIL.Image.Image], pairs: list[tuple[str, str]], run: DistanceRun,
               show_progress: bool) -> None:  # fmt: skip
        identity = self.describer.identity
        pending: dict[str, tuple[str, str]] = {}  # score key -> (description key, image hash)
        for a, b in pairs:
            for own, other in ((a, b), (b, a)):
                for length in self.settings.lengths:
                    for description in self._sample_keys(own, length):
                        for image_hash in (own, other):
                            key = score_key(identity, description, image_hash)
                            if key not in self.cache.scores:
                                pending[key] = (description, image_hash)
        # similar lengths together: less padding per forward
        order = sorted(pending, key=lambda key: len(self.cache.descriptions[pending[key][0]]["token_ids"]))
        size = self.settings.batch_size
        for start in tqdm(range(0, len(order), size), desc="scoring descriptions", disable=not show_progress):
            keys = order[start : start + size]
            conversations = [([images[pending[key][1]]], self.describer.prompt) for key in keys]
            answers = [self.cache.descriptions[pending[key][0]]["token_ids"] for key in keys]
            scores = self.describer.chat.sequence_log_likelihoods(conversations, answers, batch_size=size)
            for key, value in zip(keys, scores.tolist(), strict=True):
                description, image_hash = pending[key]
                self.cache.add_score(key, value, description=description, image_hash=image_hash)
                run.scored += 1

    def __call__(self, pairs: Sequence[tuple[Any, Any]], show_progress: bool = False) -> DistanceRun:
        """The distance of every pair of images (paths, encoded bytes, PIL images, arrays), in order.

        Raises:
            UnreadableImageError: an image could not be read; it names the file (or the pair's position).
        """
        images: dict[str, PIL.Image.Image] = {}
        hashed_pairs = []
        for position, pair in enumerate(pairs):
            if len(pair) != 2:
                raise ValueError(f"pair {position} holds {len(pair)} images; a pair is two images")
            hashes = []
            for side, value in zip("AB", pair, strict=True):
                read = read_image(value, image_name(value, f"pair {position} image {side}"))
                images.setdefault(read.image_hash, read.image)
                hashes.append(read.image_hash)
            hashed_pairs.append(tuple(hashes))
        run = DistanceRun(image_hashes=hashed_pairs)
        needed = {image_hash: images[image_hash] for pair in hashed_pairs for image_hash in pair}
        self._sample(needed, run, show_progress)
        self._score(needed, hashed_pairs, run, show_progress)
        identity = self.describer.identity

        def score(description: str, image_hash: str) -> float:
            return self.cache.scores[score_key(identity, description, image_hash)]

        run.distances = [pair_distance(a, b, self.settings.lengths, self._sample_keys, score) for a, b in hashed_pairs]
        logger.info("conceptual distance (%s): %s", self.describer.name, run.summary())
        return run
