"""Errors a user can fix without reading code: a missing optional package, a model that cannot be loaded.

Each message names what is missing and how to get it. The command lines print these as one line (see
`training.cli`); library callers get ordinary `ImportError` / `OSError` subclasses they can catch as before.
This module imports nothing heavy, so every layer (trainer, evaluation, demo) may use it.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType


DISTRIBUTION = "relsim-hf"


class MissingExtraError(ImportError):
    """An optional package is not installed; the message names the extra of this distribution that brings it."""


class ModelLoadError(OSError):
    """A model id or folder could not be loaded (not downloaded, offline, no such folder, unreadable files)."""


def install_hint(extra: str) -> str:
    return f'pip install "{DISTRIBUTION}[{extra}]"'


def import_extra(module: str, extra: str, purpose: str) -> ModuleType:
    """`import module`, or a `MissingExtraError` saying which extra installs it.

    Args:
        module: the import name (e.g. "lpips").
        extra: the extra of this distribution that installs it (e.g. "perceptual").
        purpose: what needs it, for the message (e.g. "the lpips method").
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name is None or module.split(".")[0] != error.name.split(".")[0]:
            raise  # the package is there but one of its own imports is broken: the original error says which
        raise MissingExtraError(
            f"{purpose} needs the {module!r} package, which is not installed: {install_hint(extra)}"
        ) from error


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def model_load_message(
    model: str, what: str, error: BaseException, option: str | None = None, fix: str | None = None
) -> str:
    """One paragraph: which model failed to load, the first line of why, and what to do about it.

    `fix` replaces the Hugging Face Hub advice for weights that come from elsewhere.
    """
    reason = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    where = f" (given with {option})" if option else ""
    if fix is not None:
        return f"could not load {what} {model!r}{where}: {reason}; {fix}"
    if Path(model).exists():
        return f"could not load {what} from the folder {model}{where}: {reason}"
    if Path(model).is_absolute() or model.startswith((".", "~")) or model.count("/") > 1:
        return f"could not load {what} {model!r}{where}: no such folder"
    fix = f"pass a local folder{' with ' + option if option else ''}"
    if _offline():
        return (
            f"could not load {what} {model!r}{where}: it is not in the local Hugging Face cache and HF_HUB_OFFLINE=1 "
            f"forbids downloading it; {fix}, or download it where the Hub is reachable (`hf download {model}`), or "
            "unset HF_HUB_OFFLINE"
        )
    return (
        f"could not load {what} {model!r}{where}: {reason} (no network? {fix}, or check the id on "
        "https://huggingface.co)"
    )


@contextmanager
def loading_model(model: str, what: str = "model", option: str | None = None, fix: str | None = None) -> Iterator[None]:
    """Turns an `OSError` raised while loading `model` into a `ModelLoadError` that names it and the fix.

    transformers' own message for an unreachable hub ("couldn't connect to huggingface.co ...") never names the
    model; this one does, and says which command-line option takes a local folder instead (`fix` replaces that
    advice for weights that do not come from the Hub).
    """
    try:
        yield
    except ModelLoadError:
        raise
    except OSError as error:
        raise ModelLoadError(model_load_message(model, what, error, option, fix)) from error
