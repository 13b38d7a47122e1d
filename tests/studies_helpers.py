"""The studies app under test: the search app with the study tabs over a small synthetic collection, seed groups
to verify (files of the collection, one web URL), literal descriptions for the leak check, and two annotators."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from web_app_helpers import RunningApp, free_port

from training.image_ids import url_image_hash


SIDE_SEED = "studies-test-seed"
SEED_GROUPS = [
    ("{Object}s in a row, growing larger step by step", ["progression/00.png", "progression/01.png"]),
    ("stars and crosses side by side", ["mirror_symmetry/00.png", "mirror_symmetry/01.png"]),  # no placeholder
    ("{Object}s around a teal ring", ["radial/00.png", "radial/01.png", "https://example.com/r.jpg"]),  # leaks
]


@dataclass
class StudiesAppUnderTest:
    """The running app, its database, the annotators' tokens, the collection and the seed-group file."""

    app: RunningApp
    db: Path
    tokens: dict[str, str]
    collection: Path
    seed_groups: Path
    index: Any
    model: Any
    scratch: Path

    @property
    def url(self) -> str:
        return self.app.url


def write_seed_groups(folder: Path, collection: Path) -> tuple[Path, Path]:
    """`seed_group.json` (captions wrapped in quotes, image paths relative to it) and a descriptions jsonl that
    names each local image's colour, so the leak checker flags a caption that says it."""
    groups, descriptions = [], []
    for caption, names in SEED_GROUPS:
        urls = [name if "://" in name else str((collection / name).relative_to(folder)) for name in names]
        groups.append({"anonymous_caption": f'"{caption}"', "image_urls": urls})
        for url in urls:
            descriptions.append({"image_hash": url_image_hash(url), "description": "three teal stars in a ring"})
    seed_groups = folder / "seed_group.json"
    seed_groups.write_text(json.dumps(groups, indent=2))
    described = folder / "descriptions.jsonl"
    described.write_text("".join(json.dumps(row) + "\n" for row in descriptions))
    return seed_groups, described


@contextmanager
def serve_studies_app(index_dir: Path, db: Path, model: Any, **settings: Any) -> Iterator[RunningApp]:
    """`launch_studies_app` (non-blocking) on a free port of 127.0.0.1, closed afterwards."""
    from training.studies.app import launch_studies_app

    blocks = launch_studies_app(index_dir, db, port=free_port(), model=model, block=False, **settings)
    try:
        yield RunningApp(blocks.local_url.rstrip("/"), blocks)
    finally:
        blocks.close()
