"""How well search by relation text and the "why" labels work, measured on the synthetic benchmark (held-out shapes
and colours), where every image's relation is known.

- relation-text mAP: each family's anonymous caption, encoded by the text encoder, queries the pool; the family's
  images are the relevant ones. Beside it, image->image mAP (every image queries all the others) for scale.
- why accuracy: for each image as the query, the result is the best-ranked other image of its family (a pair that
  does share a relation); the "why" label is the top caption of the bank of the eight family captions, and it is
  right when it is the query's family caption. Chance is 1/8.
"""

from __future__ import annotations

from typing import Any

import torch

from training.metrics import relational_retrieval_metrics
from training.search.model import SearchModel
from training.search.why import CaptionBank
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
    """Relation-text mAP, image mAP and why accuracy of `model` on a synthetic pool (`held_out_pool`).

    Args:
        image_embeddings: `(len(pool), dim)` embeddings already computed for the pool; default: embedded here.
    """
    families = torch.tensor(pool["family"])
    if image_embeddings is None:
        result = model.embed_images(pool["image"])
        if result.failures:
            raise ValueError(f"{len(result.failures)} synthetic images could not be embedded: {result.failures[:3]}")
        image_embeddings = result.embeddings
    images = image_embeddings.float()
    captions = family_captions(pool)
    texts = model.encode_texts(captions)
    text_metrics = relational_retrieval_metrics(texts @ images.T, list(range(len(captions))), families)
    everyone = torch.arange(len(images))
    similarity = images @ images.T
    image_metrics = relational_retrieval_metrics(similarity, families, families, exclude=everyone)
    # the best-ranked other image of the query's own family: a pair that truly shares a relation
    same_family = (families[:, None] == families[None, :]).float()
    same_family[everyone, everyone] = 0
    partner = (similarity.masked_fill(same_family == 0, float("-inf"))).argmax(dim=1)
    bank = CaptionBank(captions, embeddings=texts)
    top_label = bank.scores(images, images[partner]).argmax(dim=1)
    return {
        RELATION_TEXT_MAP: text_metrics["mAP"],
        "relation-text recall@1": text_metrics["recall@1"],
        IMAGE_MAP: image_metrics["mAP"],
        WHY_ACCURACY: float((top_label == families).float().mean()),
    }
