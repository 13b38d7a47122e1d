"""Writing the Hub repository layout: parquet shards under `data/<config>/` and the dataset card."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path

import datasets

from hub_cards.render import render_dataset_card
from training.hub_data.features import IMAGE_COLUMNS


logger = logging.getLogger(__name__)


def export_hub_folder(
    built: Mapping[str, datasets.DatasetDict], output: str | Path, repo_id: str, max_rows_per_shard: int = 10_000
) -> list[Path]:
    """Writes `data/<config>/<split>-NNNNN-of-NNNNN.parquet` and `README.md`; returns the files written."""
    output = Path(output)
    written = []
    for config, splits in built.items():
        for split, dataset in splits.items():
            shards = max(1, math.ceil(len(dataset) / max_rows_per_shard))
            for index in range(shards):
                path = output / "data" / config / f"{split}-{index:05d}-of-{shards:05d}.parquet"
                path.parent.mkdir(parents=True, exist_ok=True)
                dataset.shard(shards, index, contiguous=True).to_parquet(str(path))
                written.append(path)
    card = render_dataset_card(
        built, repo_id, image_columns={config: column for config, (column, _) in IMAGE_COLUMNS.items()}
    )
    card.save(output / "README.md")
    written.append(output / "README.md")
    logger.info("exported %d files to %s", len(written), output)
    return written
