"""Pushing an exported dataset folder to the Hub; a dry run (the default) only lists what would be uploaded."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from huggingface_hub import HfApi


logger = logging.getLogger(__name__)


def folder_files(folder: str | Path) -> list[str]:
    folder = Path(folder)
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def push_dataset_folder(
    folder: str | Path, repo_id: str, dry_run: bool = True, private: bool = False, token: str | None = None
) -> list[str]:
    """Creates the dataset repository if needed and uploads `folder`; returns the files (to be) uploaded.

    The token comes from `token` or the `HF_TOKEN` environment variable.
    """
    files = folder_files(folder)
    if not files:
        raise FileNotFoundError(f"{folder} holds no files to upload")
    if not (Path(folder) / "README.md").is_file():
        raise FileNotFoundError(f"{folder} has no README.md dataset card; run the export step first")
    if dry_run:
        for name in files:
            logger.info("would upload %s", name)
        logger.info("dry run: %d files for %s (pass --no-dry-run to upload)", len(files), repo_id)
        return files
    token = token or os.environ.get("HF_TOKEN")
    if not token:
        raise ValueError("no Hub token: set HF_TOKEN or pass token=")
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_folder(
        folder_path=str(folder), repo_id=repo_id, repo_type="dataset", commit_message="Update relsim data"
    )
    logger.info("uploaded %d files to https://huggingface.co/datasets/%s", len(files), repo_id)
    return files
