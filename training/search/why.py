"""Why two images match: the captions of a caption bank that fit both of them.

Each caption is scored by the smaller of its two cosines (to the query's vector and to the result's), so a label must
describe both images, not just one; the best few are a short, readable name of the relation the two share. Banks:
the eight synthetic family captions (`synthetic`), the compositional world's relation captions (`relations`), the
seed-group captions (`seed_group.json`), training captions (a jsonl with a `caption` field) or a plain list (one
caption per line).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from training.caption_text import normalize_caption
from training.json_lines import read_json_lines
from training.search.model import SearchModel
from training.synthetic.factors import VALID_RELATIONS
from training.synthetic.families import FAMILIES


SYNTHETIC_BANK = "synthetic"
RELATIONS_BANK = "relations"


@dataclass(frozen=True)
class WhyLabel:
    """A caption that fits a (query, result) pair: `score` = min(`query_cosine`, `result_cosine`)."""

    caption: str
    score: float
    query_cosine: float
    result_cosine: float


def _unique(captions: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(caption for caption in captions if caption))


def read_caption_bank(source: str | Path) -> list[str]:
    """The distinct captions of a bank (normalised: literal quotes removed).

    Args:
        source: "synthetic" (the eight family captions), "relations" (the compositional world's 407), a
            `seed_group.json` (a list of objects with `anonymous_caption`), a jsonl of rows with a `caption` field,
            or a text file with one caption per line.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: a malformed file or row (named with its line or position), or an empty bank.
    """
    if str(source) == SYNTHETIC_BANK:
        return [family.caption for family in FAMILIES.values()]
    if str(source) == RELATIONS_BANK:
        return [relation.caption for relation in VALID_RELATIONS]
    path = Path(source)
    text = path.read_text(encoding="utf-8")
    captions: list[str] = []
    if path.suffix == ".json":
        groups = json.loads(text)
        if not isinstance(groups, list):
            raise ValueError(f"{path}: a seed-group file is a JSON list of objects with 'anonymous_caption'")
        for position, group in enumerate(groups):
            if not isinstance(group, dict) or not isinstance(group.get("anonymous_caption"), str):
                raise ValueError(f"{path}: [{position}].anonymous_caption: missing or not a string")
            captions.append(normalize_caption(group["anonymous_caption"]))
    elif path.suffix == ".jsonl":
        for number, row in read_json_lines(path, text.encode("utf-8")):
            if not isinstance(row.get("caption"), str):
                raise ValueError(f"{path}:{number}: caption: missing or not a string")
            captions.append(normalize_caption(row["caption"]))
    else:
        captions = [normalize_caption(line) for line in text.splitlines() if line.strip()]
    captions = _unique(captions)
    if not captions:
        raise ValueError(f"{path} holds no caption")
    return captions


class CaptionBank:
    """Captions and their unit vectors in relsim's space (encoded once with the model's text encoder).

    Args:
        captions: the labels.
        embeddings: `(len(captions), dim)` unit vectors; default: encoded with `model`.
    """

    def __init__(
        self, captions: Sequence[str], model: SearchModel | None = None, embeddings: torch.Tensor | None = None
    ) -> None:
        self.captions = list(captions)
        if embeddings is None:
            if model is None:
                raise ValueError("a CaptionBank needs a model to encode its captions, or their embeddings")
            embeddings = model.encode_texts(self.captions)
        if embeddings.shape[0] != len(self.captions):
            raise ValueError(f"{embeddings.shape[0]} caption embeddings for {len(self.captions)} captions")
        self.embeddings = embeddings.float()

    @classmethod
    def read(cls, source: str | Path, model: SearchModel) -> CaptionBank:
        """The bank of `read_caption_bank(source)`, encoded with `model`."""
        return cls(read_caption_bank(source), model)

    def scores(self, query: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        """`(..., captions)` min(cos(caption, query), cos(caption, result)) for `(..., dim)` unit vectors."""
        return torch.minimum(query.float() @ self.embeddings.T, result.float() @ self.embeddings.T)


def why(bank: CaptionBank, query: torch.Tensor, result: torch.Tensor, top: int = 3) -> list[WhyLabel]:
    """The `top` captions that best fit both `query` and `result` (`(dim,)` unit vectors), best first."""
    query_cosines = bank.embeddings @ query.float()
    result_cosines = bank.embeddings @ result.float()
    scores = torch.minimum(query_cosines, result_cosines)
    order = scores.argsort(descending=True)[:top].tolist()
    return [
        WhyLabel(bank.captions[i], float(scores[i]), float(query_cosines[i]), float(result_cosines[i])) for i in order
    ]
