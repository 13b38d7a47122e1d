"""Training examples of (image, caption) from a `datasets` dataset or from the official captions jsonl.

Images are *not* decoded here: the collator decodes them in DataLoader workers, so an unreadable image is reported
and skipped there instead of crashing the loader. Every example carries `image` (a path, or the `{"bytes", "path"}`
of a `datasets.Image(decode=False)` column) and a normalised `caption`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import datasets

from training.caption_text import normalize_caption, still_quoted
from training.image_ids import require_image_hash
from training.json_lines import read_json_lines
from training.synthetic.dataset import synthetic_dataset
from training.synthetic.relations import relation_dataset
from training.trainer.arguments import DataArguments


logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def read_official_captions(jsonl_path: str | Path, image_dir: str | Path) -> datasets.Dataset:
    """Rows `{"image_hash", "caption", "url_link"}` + an image folder of `<image_hash>.<ext>`.

    A row whose image file is absent keeps an empty `image`; the collator reports and skips it, so the missing
    files are listed with the other unreadable images instead of vanishing here.

    Raises:
        ValueError: naming `file:line` for malformed JSON, a missing or non-string field, an `image_hash` that is not
            32 lowercase hexadecimal characters, or an empty caption.
    """
    jsonl_path, image_dir = Path(jsonl_path), Path(image_dir)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image folder {image_dir} does not exist")
    files_by_hash = {path.stem: str(path) for path in image_dir.iterdir() if path.suffix.lower() in IMAGE_EXTENSIONS}
    rows: dict[str, list[str]] = {"image": [], "caption": [], "image_hash": []}
    still_quoted_lines = []
    for line_number, record in read_json_lines(jsonl_path):
        where = f"{jsonl_path}:{line_number}"
        for field in ("image_hash", "caption"):
            if not isinstance(record.get(field), str):
                raise ValueError(f"{where}: field {field!r} is missing or not a string")
        require_image_hash(record["image_hash"], f"{where}: field 'image_hash'")
        caption = normalize_caption(record["caption"])
        if not caption:
            raise ValueError(f"{where}: field 'caption' is empty")
        if still_quoted(caption):
            still_quoted_lines.append(line_number)
        rows["image"].append(files_by_hash.get(record["image_hash"], ""))
        rows["caption"].append(caption)
        rows["image_hash"].append(record["image_hash"])
    if still_quoted_lines:
        logger.warning(
            "%d captions of %s still begin or end with a quote after normalisation (lines %s)",
            len(still_quoted_lines),
            jsonl_path,
            ", ".join(map(str, still_quoted_lines[:10])) + (" ..." if len(still_quoted_lines) > 10 else ""),
        )
    missing = sum(1 for image in rows["image"] if not image)
    if missing:
        logger.warning("%d of %d rows of %s have no image in %s", missing, len(rows["image"]), jsonl_path, image_dir)
    return datasets.Dataset.from_dict(rows)


def image_caption_dataset(
    dataset: datasets.Dataset, image_column: str = "image", caption_column: str = "caption"
) -> datasets.Dataset:
    """Renames the columns to `image` / `caption` and turns off eager image decoding (the collator decodes)."""
    for column in (image_column, caption_column):
        if column not in dataset.column_names:
            raise ValueError(f"the dataset has no column {column!r}; its columns are {dataset.column_names}")
    if image_column != "image":
        dataset = dataset.rename_column(image_column, "image")
    if caption_column != "caption":
        dataset = dataset.rename_column(caption_column, "caption")
    if isinstance(dataset.features["image"], datasets.Image):
        dataset = dataset.cast_column("image", datasets.Image(decode=False))
    return dataset


def _load_splits(name: str, config: str | None) -> datasets.DatasetDict:
    path = Path(name)
    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        loaded = datasets.load_from_disk(str(path))
        return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})
    return datasets.load_dataset(name, config)


def load_training_data(arguments: DataArguments, seed: int) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """The training split and the held-out split (or None) as `image` / `caption` datasets."""
    if arguments.synthetic_num_per_family:
        settings = {
            "seed": arguments.synthetic_seed,
            "image_size": arguments.synthetic_image_size,
            "show_progress": True,
        }
        if arguments.synthetic_world == "relations":
            train = relation_dataset(arguments.synthetic_num_per_family, "train", relations="train", **settings)
            held_out = (
                relation_dataset(arguments.synthetic_eval_num_per_family, "heldout", relations="all", **settings)
                if arguments.synthetic_eval_num_per_family
                else None
            )
        else:
            train = synthetic_dataset(arguments.synthetic_num_per_family, "train", **settings)
            held_out = (
                synthetic_dataset(arguments.synthetic_eval_num_per_family, "heldout", **settings)
                if arguments.synthetic_eval_num_per_family
                else None
            )
        train = image_caption_dataset(train)
        held_out = image_caption_dataset(held_out) if held_out is not None else None
    elif arguments.captions_jsonl:
        train = read_official_captions(arguments.captions_jsonl, arguments.image_dir)
        held_out = (
            read_official_captions(arguments.eval_captions_jsonl, arguments.image_dir)
            if arguments.eval_captions_jsonl
            else None
        )
    elif arguments.dataset_name:
        splits = _load_splits(arguments.dataset_name, arguments.dataset_config)
        for split in filter(None, (arguments.train_split, arguments.eval_split)):
            if split not in splits:
                raise ValueError(f"{arguments.dataset_name} has no split {split!r}; it has {list(splits)}")
        columns = {"image_column": arguments.image_column, "caption_column": arguments.caption_column}
        train = image_caption_dataset(splits[arguments.train_split], **columns)
        held_out = image_caption_dataset(splits[arguments.eval_split], **columns) if arguments.eval_split else None
    else:
        raise ValueError(
            "no training data: set dataset_name, captions_jsonl with image_dir, or synthetic_num_per_family"
        )
    if held_out is None and arguments.eval_fraction > 0:
        parts = train.train_test_split(test_size=arguments.eval_fraction, seed=seed)
        train, held_out = parts["train"], parts["test"]
    if arguments.max_train_samples is not None:
        train = train.select(range(min(arguments.max_train_samples, len(train))))
    if held_out is not None and arguments.max_eval_samples is not None:
        held_out = held_out.select(range(min(arguments.max_eval_samples, len(held_out))))
    return train, held_out
