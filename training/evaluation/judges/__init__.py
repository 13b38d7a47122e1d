"""Judging retrieved pairs: an OpenAI-compatible endpoint or a local VLM, with answers cached as they arrive."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import PIL.Image
from transformers.utils.logging import tqdm

from training.evaluation.embed import read_image
from training.evaluation.judges.cache import JudgeFailure, Judgement, JudgementCache, judgement_key
from training.evaluation.judges.prompt import parse_score
from training.evaluation.pool import PoolItem
from training.evaluation.retrieval import Retrieval
from training.image_ids import file_sha256


logger = logging.getLogger(__name__)


class Judge(Protocol):
    def identity(self) -> dict[str, Any]: ...

    def ask_many(self, pairs: Sequence[tuple[PIL.Image.Image, PIL.Image.Image]]) -> Iterator[str | JudgeFailure]:
        """One answer (or failure) per pair, in order, each yielded as soon as it is known."""
        ...


def judge_retrievals(
    judge: Judge,
    retrievals: Sequence[Retrieval],
    items: dict[str, PoolItem],
    cache: JudgementCache,
    top: int = 1,
    batch_size: int = 8,
    show_progress: bool = True,
) -> list[Judgement]:
    """Scores each query against its first `top` neighbours; pairs with a final cached answer are not asked again.

    Each answer is saved the moment it arrives. A pair without a readable answer (a `JudgeFailure`, or an empty
    answer) is recorded as a failure and returned with `answer=""` and no score; the next run asks it again.
    """
    identity = judge.identity()
    content: dict[str, str] = {}

    def key_of(query: str, candidate: str) -> str:
        for image_hash in (query, candidate):
            if image_hash not in content:
                content[image_hash] = file_sha256(items[image_hash].image)
        return judgement_key(identity, content[query], content[candidate])

    wanted = [
        (retrieval, rank, candidate)
        for retrieval in retrievals
        for rank, candidate in enumerate(retrieval.neighbours[:top])
    ]
    todo = [entry for entry in wanted if cache.get(key_of(entry[0].query, entry[2])) is None]
    for start in tqdm(range(0, len(todo), batch_size), desc="judging", disable=not show_progress):
        chunk = todo[start : start + batch_size]
        pairs = [(read_image(items[r.query].image)[0], read_image(items[c].image)[0]) for r, _, c in chunk]
        for (retrieval, _, candidate), answer in zip(chunk, judge.ask_many(pairs), strict=True):
            key = key_of(retrieval.query, candidate)
            context = {"query": retrieval.query, "candidate": candidate, "judge": identity}
            if isinstance(answer, JudgeFailure) or not answer.strip():
                reason = answer.reason if isinstance(answer, JudgeFailure) else f"empty answer {answer!r}"
                logger.warning("judge gave no readable answer for %s vs %s: %s", retrieval.query, candidate, reason)
                cache.put_failure(key, reason, **context)
            else:
                cache.put(key, answer, **context)
    judgements = []
    for retrieval, rank, candidate in wanted:
        answer = cache.get(key_of(retrieval.query, candidate))
        score = None if answer is None else parse_score(answer)
        judgements.append(Judgement(retrieval.method, retrieval.query, candidate, rank, answer or "", score))
    failed = sum(cache.get(key_of(j.query, j.candidate)) is None for j in judgements)
    if failed:
        logger.warning(
            "%d of %d pairs got no readable answer (recorded as failures in %s); a rerun asks them again",
            failed, len(judgements), cache.path,
        )  # fmt: skip
    unparsed = sum(judgement.score is None for judgement in judgements) - failed
    if unparsed:
        logger.warning("%d of %d judge answers held no 0-10 score; they count as missing", unparsed, len(judgements))
    return judgements
