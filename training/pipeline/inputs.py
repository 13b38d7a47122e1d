"""The pipeline's input rows, from any of three sources, with ids by the one image-hash rule (`training.image_ids`):

- a folder of images (`training.image_folder.scan_image_folder`, recursive): `image_hash` = md5 of the file's bytes;
  files that are not readable images become rows with an `error`, so they are counted, not lost;
- a list of images, `.jsonl` or `.csv`, one row per image with `image` (or `path`: a local file, relative paths
  resolved against the list's folder) and/or `url`, and optionally `image_hash`. Without `image_hash` the id is
  md5(url) when there is a URL (the official formats' rule), else md5 of the file's bytes; a listed file that cannot
  be read gets md5 of its path as written, and an `error`;
- a `datasets` dataset (a saved folder or a Hub id) with an image column: images held as bytes are written once to
  `images_dir/<image_hash>.<ext>` so every row points at a file that any executor can read.

Lists and datasets are also read as iterators (`iter_list_rows`, `iter_dataset_rows`, `iter_input_rows`): a row at a
time, so a sharded run plans a list of any length without holding it (a folder is scanned whole first).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from training.image_folder import scan_image_folder
from training.image_ids import file_image_hash, require_image_hash, url_image_hash
from training.json_lines import read_json_lines
from training.pipeline.stages import Row, failed_row


logger = logging.getLogger(__name__)

LIST_SUFFIXES = (".jsonl", ".csv")


def rows_from_folder(folder: str | Path) -> list[Row]:
    """One row per image file under `folder` (sorted paths; exact duplicates left out, as every folder scan does)."""
    scan = scan_image_folder(folder)
    rows: list[Row] = [{"image_hash": image.image_hash, "image": str(image.path)} for image in scan.images]
    for path, reason in scan.unreadable:
        rows.append(failed_row({"image_hash": _hash_of_file_or_name(path), "image": str(path)}, str(path), reason))
    if scan.duplicates:
        logger.info("%s: %d files repeat an earlier file's bytes and are left out", folder, len(scan.duplicates))
    if scan.unreadable:
        logger.warning(
            "%s: %d files are not readable images; they are reported as failed", folder, len(scan.unreadable)
        )
    return rows


def _hash_of_file_or_name(path: Path, written: str | None = None) -> str:
    try:
        return file_image_hash(path)
    except OSError:
        return url_image_hash(written if written is not None else str(path))


def _list_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) of each row of a `.csv` / `.jsonl` list, read a line at a time."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as file:
            yield from ((number, dict(record)) for number, record in enumerate(csv.DictReader(file), start=2))
        return
    yield from read_json_lines(path)


def iter_list_rows(path: str | Path, allow_outside_list_folder: bool = False) -> Iterator[Row]:
    """One row per line of a `.jsonl` / `.csv` list (see the module docstring for the fields), a line at a time.

    A local `image`/`path` must lead inside the list's folder (links resolved), as in the search index's lists: one
    that leads out becomes a failed row naming the line (counted, never read) unless `allow_outside_list_folder`.

    Raises:
        ValueError: `file:line` for malformed JSON, a row with neither `image`/`path` nor `url`, or an `image_hash`
            that is not 32 lowercase hexadecimal characters.
    """
    path = Path(path)
    if path.suffix.lower() not in LIST_SUFFIXES:
        raise ValueError(f"{path}: an image list must be .jsonl or .csv")
    root = path.parent.resolve()
    for number, record in _list_records(path):
        where = f"{path}:{number}"
        written = record.get("image") or record.get("path") or None
        url = record.get("url") or record.get("url_link") or None
        if written is None and url is None:
            raise ValueError(f"{where}: a row needs `image` (or `path`) or `url`")
        row: Row = {}
        if written is not None:
            file = Path(str(written)).expanduser()
            row["image"] = str(file if file.is_absolute() else path.parent / file)
        if url is not None:
            row["url"] = str(url)
        given_hash = record.get("image_hash") or None
        outside = written is not None and not Path(row["image"]).resolve().is_relative_to(root)
        if given_hash is not None:
            row["image_hash"] = require_image_hash(given_hash, f"{where}: image_hash")
        elif url is not None:
            row["image_hash"] = url_image_hash(str(url))
        elif outside and not allow_outside_list_folder:
            row["image_hash"] = url_image_hash(str(written))  # the file is not read, not even to hash it
        else:
            row["image_hash"] = _hash_of_file_or_name(Path(row["image"]), str(written))
        if outside and not allow_outside_list_folder:
            reason = f"{written} leads outside {root}; left out (--allow-outside-list-folder reads it)"
            row = failed_row(row, where, f"outside the list's folder: {reason}")
        yield row


def iter_dataset_rows(
    name_or_path: str | Path, images_dir: str | Path, image_column: str = "image", split: str = "train"
) -> Iterator[Row]:
    """One row per example of a `datasets` dataset (a `save_to_disk` folder or a Hub id) with an image column,
    an example at a time (Arrow reads its memory-mapped files batch by batch); a `url` column, when present, gives
    the id md5(url)."""
    loaded = _load_image_dataset(name_or_path, image_column, split)
    url_column = next((name for name in ("url", "url_link") if name in loaded.column_names), None)
    images_dir = Path(images_dir)
    for index, example in enumerate(loaded):
        yield _dataset_row(example, index, image_column, url_column, images_dir, (str(name_or_path), split))


def _load_image_dataset(name_or_path: str | Path, image_column: str, split: str) -> Any:
    """The split, checked to have the image column, with its images left undecoded (bytes or paths)."""
    import datasets

    folder = Path(name_or_path)
    if folder.is_dir() and ((folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()):
        loaded = datasets.load_from_disk(str(folder))
    else:
        loaded = datasets.load_dataset(str(name_or_path))
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise ValueError(f"{name_or_path} has no split {split!r}; it has {list(loaded)}")
        loaded = loaded[split]
    if image_column not in loaded.column_names:
        raise ValueError(f"{name_or_path} has no column {image_column!r}; its columns are {loaded.column_names}")
    if not isinstance(loaded.features[image_column], datasets.Image):
        raise ValueError(
            f"{name_or_path}: column {image_column!r} is not an image column ({loaded.features[image_column]})"
        )
    return loaded.cast_column(image_column, datasets.Image(decode=False))


def _dataset_row(
    example: dict[str, Any],
    index: int,
    image_column: str,
    url_column: str | None,
    images_dir: Path,
    source: tuple[str, str],
) -> Row:
    """Example `index` of `source` (dataset name, split) as a row."""
    stored = example[image_column] or {}
    url = example[url_column] if url_column else None
    row: Row = {"url": url} if url else {}
    data, source = stored.get("bytes"), stored.get("path")
    if data:
        content_hash = _bytes_hash(data)
        row["image_hash"] = url_image_hash(url) if url else content_hash
        suffix = Path(source).suffix.lower() if source else ""
        file = images_dir / f"{content_hash}{suffix if suffix[1:].isalnum() else ''}"
        if not file.is_file():
            images_dir.mkdir(parents=True, exist_ok=True)
            file.write_bytes(data)
        row["image"] = str(file)
    elif source:
        row["image"] = source
        row["image_hash"] = url_image_hash(url) if url else _hash_of_file_or_name(Path(source))
    else:
        name, split = source
        row["image_hash"] = url_image_hash(url) if url else url_image_hash(f"{name}#{split}#{index}")
        row = failed_row(row, f"{name}[{index}]", "no image in this example")
    return row


def _bytes_hash(data: bytes) -> str:
    import hashlib

    return hashlib.md5(data).hexdigest()


def iter_input_rows(
    source: str | Path,
    images_dir: str | Path,
    image_column: str = "image",
    split: str = "train",
    allow_outside_list_folder: bool = False,
) -> Iterator[Row]:
    """Input rows from a folder of images, a `.jsonl` / `.csv` list, or a `datasets` dataset (saved folder or id):
    lists and datasets a row at a time (a folder is scanned whole first). See `iter_list_rows` for a list's folder
    rule."""
    path = Path(source)
    if path.is_file():
        return iter_list_rows(path, allow_outside_list_folder)
    if path.is_dir() and not ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        return iter(rows_from_folder(path))
    return iter_dataset_rows(source, images_dir, image_column, split)
