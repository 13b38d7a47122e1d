"""The one reader of YAML recipes (trainer, ablation plans, pipeline, filter, captioner, tiny pretraining): every
recipe file reports a missing file, broken YAML or a top level that is not a mapping the same way, naming the file
(and the line and column of broken YAML)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def read_recipe(path: str | Path, what: str = "recipe", hint: str = "") -> dict[str, Any]:
    """The mapping at the top of the YAML file `path` (an empty file is an empty mapping).

    Args:
        what: what the file is, for the messages ("recipe", "ablation plan").
        hint: added to the missing-file message, e.g. where the shipped recipes are.

    Raises:
        FileNotFoundError: `<what> <path> does not exist`.
        ValueError: `<path>:<line>:<column>: not valid YAML (...)`, or a top level that is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist{hint}")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ValueError(f"{where}: not valid YAML ({getattr(error, 'problem', None) or error})") from error
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a {what} is a mapping of field names to values, got {type(values).__name__}")
    return values
