"""The leak and format check of anonymous captions: placeholders well formed, and no object named outright.

A caption fails the format check when it has no `{Placeholder}`, braces that do not pair up or nest, or an empty
`{}`. It leaks when it shares a content word with a literal description of one of its own images (from the user,
or from the evaluation's literal captioner): every word outside the placeholders, apart from `STOP_WORDS`,
`PICTURE_WORDS` and `RELATIONAL_VOCABULARY` (see `training.pipeline.leak_vocabulary`), compared in singular and
plural. A caption with no literal description can only fail the format check; the leak rate counts the captions
that had descriptions.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from training.pipeline.leak_vocabulary import RELATIONAL_VOCABULARY, is_ignored, word_forms


__all__ = [
    "RELATIONAL_VOCABULARY",
    "CaptionCheck",
    "LeakReport",
    "check_caption",
    "check_captions",
    "content_words",
]

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_WORD = re.compile(r"[a-z]+")
FORMAT_PROBLEMS = ("empty caption", "no placeholder", "unbalanced braces", "nested braces", "empty placeholder")


@dataclass(frozen=True)
class CaptionCheck:
    """What the check found in one caption.

    Attributes:
        placeholders: the non-empty `{...}` names, in order of first use.
        problems: format problems (`FORMAT_PROBLEMS`) then one `"leaks 'word'"` per leaked word.
        leaked_words: the caption's words (lowercase, as written) that a literal description also uses.
        described: whether the caption had at least one literal description to check leaks against.
        ok: no problem at all (a field, not a property, so `dataclasses.asdict` carries it into a row's `check`).
    """

    caption: str
    placeholders: tuple[str, ...]
    problems: tuple[str, ...]
    leaked_words: tuple[str, ...]
    described: bool
    ok: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ok", not self.problems)

    @property
    def format_problems(self) -> tuple[str, ...]:
        return tuple(problem for problem in self.problems if problem in FORMAT_PROBLEMS)

    @property
    def leaks(self) -> bool:
        return bool(self.leaked_words)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, `ok` included: what a pipeline row stores under `check`."""
        fields = asdict(self)
        lists = {name: list(fields[name]) for name in ("placeholders", "problems", "leaked_words")}
        return {**fields, **lists}


def _brace_problems(caption: str) -> list[str]:
    depth, deepest, unbalanced = 0, 0, False
    for character in caption:
        if character == "{":
            depth += 1
            deepest = max(deepest, depth)
        elif character == "}":
            if depth == 0:
                unbalanced = True
            else:
                depth -= 1
    problems = ["unbalanced braces"] if unbalanced or depth else []
    return problems + (["nested braces"] if deepest > 1 else [])


def content_words(text: str, extra_relational_words: Iterable[str] = ()) -> list[str]:
    """The words of `text` outside `{...}` placeholders that a leak check compares (lowercase, first use order)."""
    extra = {form for word in extra_relational_words for form in word_forms(word)}
    outside = _PLACEHOLDER.sub(" ", text.lower()).replace("{", " ").replace("}", " ")
    words = [
        word
        for word in _WORD.findall(outside)
        if len(word) > 1 and not is_ignored(word) and word_forms(word).isdisjoint(extra)
    ]
    return list(dict.fromkeys(words))


def check_caption(
    caption: str, literal_descriptions: Sequence[str] = (), extra_relational_words: Iterable[str] = ()
) -> CaptionCheck:
    """Checks one anonymous caption's format and its leaks against literal descriptions of its own images.

    Args:
        caption: the caption, already normalised (`training.caption_text.normalize_caption`).
        literal_descriptions: literal, object-naming descriptions of the caption's images.
        extra_relational_words: words never counted as leaks beside `RELATIONAL_VOCABULARY` (a recipe's
            domain words, e.g. "ripening" for a study of fruit over time).
    """
    if isinstance(literal_descriptions, str):
        raise TypeError("literal_descriptions must be a sequence of strings, not one string")
    problems = []
    names = [name.strip() for name in _PLACEHOLDER.findall(caption)]
    placeholders = tuple(dict.fromkeys(name for name in names if name))
    if not caption.strip():
        problems.append("empty caption")
    elif not placeholders:
        problems.append("no placeholder")
    problems += _brace_problems(caption)
    if any(not name for name in names):
        problems.append("empty placeholder")
    extra = tuple(extra_relational_words)
    described_forms = set()
    for description in literal_descriptions:
        for word in content_words(description, extra):
            described_forms |= word_forms(word)
    leaked = tuple(word for word in content_words(caption, extra) if not word_forms(word).isdisjoint(described_forms))
    problems += [f"leaks {word!r}" for word in leaked]
    return CaptionCheck(caption, placeholders, tuple(problems), leaked, bool(literal_descriptions))


@dataclass(frozen=True)
class LeakReport:
    """The checks of many captions, in input order, and their rates.

    Attributes:
        checks: one `CaptionCheck` per caption.
        image_hashes: the image each caption belongs to (None where the record named none).
        errors: `(image_hash, "file: reason")` for images that could not be described (they are checked for
            format only), reported rather than skipped silently.
    """

    checks: tuple[CaptionCheck, ...]
    image_hashes: tuple[str | None, ...]
    errors: tuple[tuple[str, str], ...] = field(default=())

    @property
    def num_captions(self) -> int:
        return len(self.checks)

    @property
    def num_described(self) -> int:
        return sum(check.described for check in self.checks)

    @property
    def leak_rate(self) -> float:
        """Share of the described captions that leak at least one word (0.0 when none was described)."""
        return sum(check.leaks for check in self.checks) / self.num_described if self.num_described else 0.0

    @property
    def format_problem_rate(self) -> float:
        """Share of all captions with at least one format problem (0.0 for no captions)."""
        flawed = sum(bool(check.format_problems) for check in self.checks)
        return flawed / self.num_captions if self.num_captions else 0.0

    @property
    def ok_rate(self) -> float:
        return sum(check.ok for check in self.checks) / self.num_captions if self.num_captions else 0.0

    def problem_counts(self) -> Counter[str]:
        """Captions per format problem, and `"leak"` for the captions that leak."""
        counts: Counter[str] = Counter()
        for check in self.checks:
            counts.update(check.format_problems)
            counts["leak"] += check.leaks
        return +counts

    def leaked_word_counts(self) -> Counter[str]:
        return Counter(word for check in self.checks for word in check.leaked_words)

    def summary(self) -> dict[str, Any]:
        return {
            "captions": self.num_captions,
            "described": self.num_described,
            "ok": sum(check.ok for check in self.checks),
            "leaking": sum(check.leaks for check in self.checks),
            "with_format_problems": sum(bool(check.format_problems) for check in self.checks),
            "leak_rate": self.leak_rate,
            "format_problem_rate": self.format_problem_rate,
            "ok_rate": self.ok_rate,
            "problems": dict(self.problem_counts().most_common()),
            "most_leaked_words": dict(self.leaked_word_counts().most_common(20)),
            "undescribed_images": len(self.errors),
        }

    def to_dict(self) -> dict[str, Any]:
        """The summary and every caption's check (with its `image_hash`), JSON-ready."""
        rows = [
            {"image_hash": image_hash, **check.to_dict()}
            for image_hash, check in zip(self.image_hashes, self.checks, strict=True)
        ]
        errors = [{"image_hash": image_hash, "error": error} for image_hash, error in self.errors]
        return {"summary": self.summary(), "captions": rows, "errors": errors}


def check_captions(records: Iterable[Mapping[str, Any]], extra_relational_words: Iterable[str] = ()) -> LeakReport:
    """Checks many captions.

    Args:
        records: mappings with `caption` (str), optional `literal_descriptions` (a sequence of str, or one str)
            and optional `image_hash`.
        extra_relational_words: see `check_caption`.

    Raises:
        ValueError: naming the record's position (and image hash) when `caption` is missing or not a string.
    """
    extra = tuple(extra_relational_words)
    checks, image_hashes = [], []
    for position, record in enumerate(records):
        caption = record.get("caption")
        if not isinstance(caption, str):
            where = f"record {position}" + (f" ({record['image_hash']})" if record.get("image_hash") else "")
            raise ValueError(f"{where}: 'caption' must be a string, got {type(caption).__name__}")
        descriptions = record.get("literal_descriptions") or ()
        descriptions = (descriptions,) if isinstance(descriptions, str) else tuple(descriptions)
        checks.append(check_caption(caption, descriptions, extra))
        image_hashes.append(record.get("image_hash"))
    return LeakReport(tuple(checks), tuple(image_hashes))
