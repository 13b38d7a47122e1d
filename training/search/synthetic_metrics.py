"""How well search by relation text and the "why" labels work, measured on a synthetic pool (held-out shapes and
colours), where every image's relation is known. Two worlds: the eight families (`held_out_pool`) and the
compositional relations (`relation_pool`), where everything is also measured on relations training never saw.

- relation-text mAP: each relation's anonymous caption, encoded by the text encoder, queries the whole pool; the
  relation's images are the relevant ones. Beside it, image->image mAP (every image queries all the others) for scale.
- why accuracy: for each image as the query, the result is the best-ranked other image of its relation (a pair that
  does share a relation); the "why" label is the top caption of the bank of every relation caption of the world (8
  families, or all 407 relations), and it is right when it is the query's own caption. Chance is one over the bank.
"""

from __future__ import annotations

from typing import Any

import torch

from training.metrics import relational_retrieval_metrics
from training.search.model import SearchModel
from training.search.why import CaptionBank
from training.synthetic.factors import VALID_NAMES, VALID_RELATIONS
from training.synthetic.families import FAMILIES


RELATION_TEXT_MAP = "relation-text mAP"
IMAGE_MAP = "image mAP"
WHY_ACCURACY = "why accuracy"


def family_captions(pool: Any) -> list[str]:
    """The anonymous caption of each family label of a synthetic pool, in label order."""
    return [FAMILIES[name].caption for name in pool.features["family"].names]


def synthetic_search_metrics(
    model: SearchModel, pool: Any, image_embeddings: torch.Tensor | None = None
) -> dict[str, float]:
    """Relation-text mAP, image mAP and why accuracy of `model` on a family pool (`held_out_pool`).

    Args:
        image_embeddings: `(len(pool), dim)` embeddings already computed for the pool; default: embedded here.
    """
    captions = family_captions(pool)
    families = torch.tensor(pool["family"])
    images = _pool_embeddings(model, pool, image_embeddings)
    everyone = torch.ones(len(captions), dtype=torch.bool)
    return _search_metrics(images, families, model.encode_texts(captions), everyone)


def relation_search_metrics(
    model: SearchModel, pool: Any, image_embeddings: torch.Tensor | None = None
) -> dict[str, float]:
    """The same figures on a compositional pool (`relation_pool`: a `relation` and an `unseen` column), once for the
    relations training saw and once for those it never saw (`"seen ..."`, `"unseen ..."`). The why bank holds every
    valid relation's caption, so a label is right only when the exact combination of factors is named."""
    relations = list(pool["relation"])
    unseen_relations = {name for name, unseen in zip(relations, pool["unseen"], strict=True) if unseen}
    order = {name: number for number, name in enumerate(VALID_NAMES)}
    labels = torch.tensor([order[name] for name in relations])
    images = _pool_embeddings(model, pool, image_embeddings)
    texts = model.encode_texts([relation.caption for relation in VALID_RELATIONS])
    metrics = {}
    for split in ("seen", "unseen"):
        queried = torch.tensor([(name in unseen_relations) == (split == "unseen") for name in VALID_NAMES])
        queried &= torch.isin(torch.arange(len(VALID_NAMES)), labels)
        for name, value in _search_metrics(images, labels, texts, queried).items():
            metrics[f"{split} {name}"] = value
    metrics["why chance"] = 1 / len(VALID_NAMES)
    return metrics


def _pool_embeddings(model: SearchModel, pool: Any, image_embeddings: torch.Tensor | None) -> torch.Tensor:
    if image_embeddings is None:
        result = model.embed_images(pool["image"])
        if result.failures:
            raise ValueError(f"{len(result.failures)} synthetic images could not be embedded: {result.failures[:3]}")
        image_embeddings = result.embeddings
    return image_embeddings.float()


def _search_metrics(
    images: torch.Tensor, labels: torch.Tensor, texts: torch.Tensor, queried: torch.Tensor
) -> dict[str, float]:
    """The figures for the relations `queried` marks.

    Args:
        images: `(pool, dim)` image embeddings; `labels`: `(pool,)` each image's relation, an index into `texts`.
        texts: `(relations, dim)` every relation caption's embedding, the why bank.
        queried: `(relations,)` which relations query (by caption, and by their images).
    """
    caption_rows = queried.nonzero().squeeze(1)
    text_metrics = relational_retrieval_metrics(texts[caption_rows] @ images.T, caption_rows, labels)
    query_rows = queried[labels].nonzero().squeeze(1)
    similarity = images[query_rows] @ images.T
    image_metrics = relational_retrieval_metrics(similarity, labels[query_rows], labels, exclude=query_rows)
    # the best-ranked other image of the query's own relation: a pair that truly shares a relation
    same = labels[query_rows][:, None] == labels[None, :]
    same[torch.arange(len(query_rows)), query_rows] = False
    partner = similarity.masked_fill(~same, float("-inf")).argmax(dim=1)
    bank = CaptionBank([str(row) for row in range(len(texts))], embeddings=texts)
    top_label = bank.scores(images[query_rows], images[partner]).argmax(dim=1)
    return {
        RELATION_TEXT_MAP: text_metrics["mAP"],
        "relation-text recall@1": text_metrics["recall@1"],
        IMAGE_MAP: image_metrics["mAP"],
        WHY_ACCURACY: float((top_label == labels[query_rows]).float().mean()),
    }
