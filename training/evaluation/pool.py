"""The evaluation pool: which images there are, where their files are, and what is known about each.

A pool is a JSON-lines manifest, one image per line:
`{"image_hash": str, "image": path, "split": "test" | "distractor", "caption": str?, "group_id": int?}`.
`caption` is the image's anonymous caption (test split) and `group_id` its seed group, when known. The paper's pool
is the test split plus as many random distractors; `manifest_from_downloads` writes that manifest from the folders
the dataset pipeline builds (`python -m training.hub_data build` + `download`). `manifest_from_folder` makes any
folder of image files a pool (`python -m training.evaluation pool --images DIR --output pool.jsonl`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from training.evaluation.records import iter_objects
from training.hub_data.features import ANONYMOUS_CAPTIONS, RANDOM_POOL, SEED_GROUP_IMAGES
from training.hub_data.images import downloaded_images
from training.hub_data.store import load_built
from training.image_folder import image_file_extensions, scan_image_folder
from training.json_lines import write_json_lines


logger = logging.getLogger(__name__)
SPLITS = ("test", "distractor")


@dataclass(frozen=True)
class PoolItem:
    """One image of the pool; `image_hash` is its key everywhere (caches, retrievals, judgements)."""

    image_hash: str
    image: str
    split: str
    caption: str | None = None
    group_id: int | None = None


def _field(record: dict, name: str, kind: type | tuple[type, ...], where: str, required: bool = True):
    value = record.get(name)
    if value is None:
        if required:
            raise ValueError(f"{where}: field {name!r} is missing")
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{where}: field {name!r} must be {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def read_pool(path: str | Path) -> list[PoolItem]:
    """Reads and checks a manifest; relative image paths are taken from the manifest's folder.

    Raises:
        ValueError: naming the file, line and field of the first bad row, or a repeated `image_hash`.
    """
    path = Path(path)
    items: list[PoolItem] = []
    seen: dict[str, int] = {}
    for number, record in iter_objects(path, "pool"):
        where = f"{path}:{number}"
        image_hash = _field(record, "image_hash", str, where)
        split = _field(record, "split", str, where)
        if split not in SPLITS:
            raise ValueError(f"{where}: field 'split' must be one of {SPLITS}, got {split!r}")
        if image_hash in seen:
            raise ValueError(f"{where}: image_hash {image_hash!r} already on line {seen[image_hash]}")
        seen[image_hash] = number
        image = Path(_field(record, "image", str, where))
        items.append(
            PoolItem(
                image_hash=image_hash,
                image=str(image if image.is_absolute() else path.parent / image),
                split=split,
                caption=_field(record, "caption", str, where, required=False),
                group_id=_field(record, "group_id", int, where, required=False),
            )
        )
    if not items:
        raise ValueError(f"{path} lists no images")
    return items


def write_pool(items: Iterable[PoolItem], path: str | Path) -> Path:
    return write_json_lines(
        path, ({key: value for key, value in asdict(item).items() if value is not None} for item in items)
    )


def manifest_from_downloads(built_root: str | Path, image_folder: str | Path, output: str | Path) -> Path:
    """The paper's pool from the dataset pipeline's folders: the anonymous-caption test split and the seed-group
    images (captions and groups known) plus the random distractors; images that failed to download are left out
    (the download report lists them)."""
    built = load_built(built_root)
    image_folder = Path(image_folder)
    if (image_folder / "images").is_dir():  # the folder given to `training.hub_data download --output`
        image_folder = image_folder / "images"
    files, _ = downloaded_images(image_folder)
    items: dict[str, PoolItem] = {}
    if SEED_GROUP_IMAGES in built:
        for split in built[SEED_GROUP_IMAGES].values():
            for row in split:
                if row["image_hash"] in files:
                    items[row["image_hash"]] = PoolItem(
                        row["image_hash"],
                        str(files[row["image_hash"]]),
                        "test",
                        row["anonymous_caption"],
                        row["group_id"],
                    )
    if ANONYMOUS_CAPTIONS in built and "test" in built[ANONYMOUS_CAPTIONS]:
        for row in built[ANONYMOUS_CAPTIONS]["test"]:
            if row["image_hash"] in files and row["image_hash"] not in items:
                items[row["image_hash"]] = PoolItem(
                    row["image_hash"], str(files[row["image_hash"]]), "test", row["caption"]
                )
    if RANDOM_POOL in built:
        for split in built[RANDOM_POOL].values():
            for row in split:
                if row["image_hash"] in files and row["image_hash"] not in items:
                    items[row["image_hash"]] = PoolItem(row["image_hash"], str(files[row["image_hash"]]), "distractor")
    if not items:
        raise ValueError(f"no downloaded image in {image_folder} belongs to the datasets built under {built_root}")
    return write_pool(items.values(), output)


def by_hash(items: Sequence[PoolItem]) -> dict[str, PoolItem]:
    return {item.image_hash: item for item in items}


def manifest_from_folder(image_folder: str | Path, output: str | Path) -> Path:
    """A pool of every image file under `image_folder` (the shared scan of `training.image_folder`: recursive, in
    sorted path order), all in the test split.

    `image_hash` is the local-file rule of `training.image_ids` (md5 of the file's bytes), so a file keeps its id
    when moved; a file whose bytes repeat an earlier one is left out (retrieval never returns exact duplicates).
    Files without an image extension are skipped; files that cannot be read or that Pillow does not recognise are
    listed in the log and left out. No captions or groups: judge-free metrics need the dataset pipeline's pool.

    Raises:
        NotADirectoryError: when `image_folder` is not a folder.
        ValueError: when no readable image file is found.
    """
    try:
        scan = scan_image_folder(image_folder)
    except NotADirectoryError as error:
        raise NotADirectoryError(f"--images {image_folder} is not a folder of images") from error
    for path, reason in scan.unreadable:
        logger.warning("unreadable image left out of the pool: %s (%s)", path, reason)
    for path, earlier in scan.duplicates:
        logger.info("%s has the same bytes as %s; left out", path, earlier)
    if not scan.images:
        extensions = ", ".join(sorted(image_file_extensions())[:8])
        raise ValueError(f"{image_folder} holds no readable image file (extensions {extensions}, ...)")
    logger.info(
        "%d images from %s; %d unreadable, %d duplicates left out",
        len(scan.images),
        image_folder,
        len(scan.unreadable),
        len(scan.duplicates),
    )
    items = [PoolItem(image.image_hash, str(image.path.resolve()), "test") for image in scan.images]
    return write_pool(items, output)
