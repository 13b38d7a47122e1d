"""Judging retrieved pairs: an OpenAI-compatible endpoint or a local VLM, with cached answers."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import PIL.Image
from transformers.utils.logging import tqdm

from training.evaluation.embed import read_image
from training.evaluation.judges.cache import Judgement, JudgementCache, judgement_key
from training.evaluation.judges.prompt import parse_score
from training.evaluation.pool import PoolItem
from training.evaluation.retrieval import Retrieval


logger = logging.getLogger(__name__)


class Judge(Protocol):
    def identity(self) -> dict[str, Any]: ...

    def ask_many(self, pairs: Sequence[tuple[PIL.Image.Image, PIL.Image.Image]]) -> list[str]: ...


def judge_retrievals(
    judge: Judge,
    retrievals: Sequence[Retrieval],
    items: dict[str, PoolItem],
    cache: JudgementCache,
    top: int = 1,
    batch_size: int = 8,
    show_progress: bool = True,
) -> list[Judgement]:
    """Scores each query against its first `top` neighbours; answers already cached are not asked again."""
    identity = judge.identity()
    wanted = [
        (retrieval, rank, candidate)
        for retrieval in retrievals
        for rank, candidate in enumerate(retrieval.neighbours[:top])
    ]
    todo = [entry for entry in wanted if cache.get(judgement_key(identity, entry[0].query, entry[2])) is None]
    for start in tqdm(range(0, len(todo), batch_size), desc="judging", disable=not show_progress):
        chunk = todo[start : start + batch_size]
        pairs = [(read_image(items[r.query].image)[0], read_image(items[c].image)[0]) for r, _, c in chunk]
        for (retrieval, _, candidate), answer in zip(chunk, judge.ask_many(pairs), strict=True):
            cache.put(
                judgement_key(identity, retrieval.query, candidate),
                answer,
                query=retrieval.query,
                candidate=candidate,
                judge=identity,
            )
    judgements = []
    for retrieval, rank, candidate in wanted:
        answer = cache.get(judgement_key(identity, retrieval.query, candidate))
        judgements.append(Judgement(retrieval.method, retrieval.query, candidate, rank, answer, parse_score(answer)))
    unparsed = sum(judgement.score is None for judgement in judgements)
    if unparsed:
        logger.warning("%d of %d judge answers held no 0-10 score; they count as missing", unparsed, len(judgements))
    return judgements
