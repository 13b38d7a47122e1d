"""Which `checkpoint-N` folder of a run can be resumed or exported: the one rule for a complete checkpoint.

A run killed while the Trainer writes a checkpoint leaves a folder with some files missing or cut short. Resuming or
exporting from it fails deep inside torch or transformers with an error that does not say why, so both go through
[`checkpoint_problem`] first, and "the last checkpoint" means the last *complete* one.

A checkpoint is complete when these files are present and readable (JSON parses, safetensors headers cover their
files, torch zip archives have their central directory):
- `trainer_state.json` with a `global_step` (the Trainer writes it last);
- the weights: `adapter_config.json` + `adapter_model.safetensors` (LoRA), or `config.json` + `model.safetensors`
  (or its index and every shard it names), or an FSDP `pytorch_model_fsdp_*` folder;
- the processor: `processor_config.json`, `tokenizer_config.json`, `tokenizer.json`;
- to resume, also `optimizer.pt` (or an FSDP `optimizer_*` folder) and `scheduler.pt`, and whatever the resuming
  run's own `state_problem` check asks of the folder (the train CLI checks the objective options' state file with
  `training.trainer.objectives.state_file`).
"""

from __future__ import annotations

import json
import logging
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

from safetensors import SafetensorError, safe_open


logger = logging.getLogger(__name__)

CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE_FILE = "trainer_state.json"
PROCESSOR_FILES = ("processor_config.json", "tokenizer_config.json", "tokenizer.json")
LAST_CHECKPOINT_WORDS = ("true", "last")
NO_CHECKPOINT_WORDS = ("", "false", "none", "no")


def _json_problem(path: Path, required_key: str | None = None) -> str | None:
    if not path.is_file():
        return f"{path.name} is missing"
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"{path.name} is not readable JSON ({error})"
    if required_key is not None and (not isinstance(content, dict) or required_key not in content):
        return f"{path.name} has no {required_key!r}"
    return None


def _safetensors_problem(path: Path) -> str | None:
    if not path.is_file():
        return f"{path.name} is missing"
    try:
        with safe_open(str(path), framework="pt"):
            pass
    except (SafetensorError, OSError) as error:
        return f"{path.name} is damaged ({error})"
    return None


def _torch_archive_problem(path: Path) -> str | None:
    """torch.save writes a zip archive whose directory sits at the end: a cut-short file has none."""
    if not path.is_file():
        return f"{path.name} is missing"
    if not zipfile.is_zipfile(path):
        return f"{path.name} is damaged (not a complete torch archive)"
    return None


def _weights_problem(folder: Path) -> str | None:
    if (folder / "adapter_config.json").exists():
        return _json_problem(folder / "adapter_config.json") or _safetensors_problem(
            folder / "adapter_model.safetensors"
        )
    if any(path.is_dir() for path in folder.glob("pytorch_model_fsdp_*")):
        return None
    if not (folder / "config.json").exists():
        return "the weights are missing (no adapter_config.json, no config.json)"
    index = folder / "model.safetensors.index.json"
    if not index.exists():
        return _json_problem(folder / "config.json") or _safetensors_problem(folder / "model.safetensors")
    problem = _json_problem(index, "weight_map")
    if problem:
        return problem
    shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    return next((problem for shard in shards if (problem := _safetensors_problem(folder / shard))), None)


# why a checkpoint folder cannot resume this run (one line), or None: the run's own state beside the Trainer's files
StateProblem = Callable[[Path], str | None]


def checkpoint_problem(
    folder: str | Path, for_resume: bool = False, state_problem: StateProblem | None = None
) -> str | None:
    """Why `folder` is not a complete checkpoint, in one line naming the file; None when it is complete.

    Args:
        folder: a `checkpoint-N` folder written by the Trainer.
        for_resume: also require the optimizer and scheduler states (export needs only weights and processor).
        state_problem: with `for_resume`, the resuming run's check of its own state files in the folder (e.g. the
            objective options', see `training.trainer.objectives.state_file`); None: not checked.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return f"{folder} is not a folder"
    checks = [lambda: _json_problem(folder / TRAINER_STATE_FILE, "global_step"), lambda: _weights_problem(folder)]
    checks += [lambda name=name: _json_problem(folder / name) for name in PROCESSOR_FILES]
    if for_resume:
        if not any(path.is_dir() for path in folder.glob("optimizer_*")):
            checks.append(lambda: _torch_archive_problem(folder / "optimizer.pt"))
        checks.append(lambda: _torch_archive_problem(folder / "scheduler.pt"))
        if state_problem is not None:
            checks.append(lambda: state_problem(folder))
    checks += [
        lambda path=path: _torch_archive_problem(path)
        for path in sorted(folder.iterdir())
        if path.suffix in (".pt", ".pth") and path.is_file()
    ]
    return next((problem for check in checks if (problem := check())), None)


def run_checkpoints(run_dir: str | Path) -> list[Path]:
    """The `checkpoint-N` folders of a run, by step."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(match.group(1)), path) for path in run_dir.iterdir() if (match := CHECKPOINT_NAME.match(path.name))]
    return [path for _, path in sorted(found) if path.is_dir()]


def _last_complete(
    run_dir: str | Path, for_resume: bool, state_problem: StateProblem | None = None
) -> tuple[Path | None, list[str]]:
    """The last complete checkpoint (or None) and, newest first, each newer one with its problem."""
    skipped = []
    for checkpoint in reversed(run_checkpoints(run_dir)):
        problem = checkpoint_problem(checkpoint, for_resume=for_resume, state_problem=state_problem)
        if problem is None:
            return checkpoint, skipped
        skipped.append(f"{checkpoint.name} ({problem})")
    return None, skipped


def last_complete_checkpoint(
    run_dir: str | Path, for_resume: bool = False, state_problem: StateProblem | None = None
) -> Path:
    """The run's last complete checkpoint; each newer incomplete one is logged as skipped, with its problem.

    Raises:
        FileNotFoundError: the run has no complete checkpoint (the message lists what each one lacks).
    """
    checkpoint, skipped = _last_complete(run_dir, for_resume, state_problem)
    if checkpoint is None:
        found = f"; incomplete: {', '.join(skipped)}" if skipped else " (no checkpoint-N folder)"
        raise FileNotFoundError(f"{run_dir} has no complete checkpoint{found}")
    for entry in skipped:
        logger.warning("skipped the incomplete checkpoint %s", entry)
    logger.info("using the last complete checkpoint %s", checkpoint)
    return checkpoint


def require_complete_checkpoint(
    folder: str | Path, for_resume: bool = False, state_problem: StateProblem | None = None
) -> Path:
    """`folder` itself when it is a complete checkpoint; a run folder resolves to its last complete checkpoint.

    Raises:
        FileNotFoundError: one line naming the missing or damaged file, and the run's last complete checkpoint when
            there is one.
    """
    folder = Path(folder)
    if folder.is_dir() and not CHECKPOINT_NAME.match(folder.name) and run_checkpoints(folder):
        logger.info("%s is a run folder: taking its last complete checkpoint", folder)
        return last_complete_checkpoint(folder, for_resume=for_resume, state_problem=state_problem)
    problem = checkpoint_problem(folder, for_resume=for_resume, state_problem=state_problem)
    if problem is None:
        return folder
    if CHECKPOINT_NAME.match(folder.name):
        last, _ = _last_complete(folder.parent, for_resume, state_problem)
        hint = f"; the run's last complete checkpoint is {last}" if last else "; the run has no complete checkpoint"
    elif folder.is_dir():
        hint = "; nor is it a run folder with checkpoint-N folders"
        if (folder / "final").is_dir():
            hint += f" ({folder / 'final'} is already a standalone model)"
    else:
        hint = ""
    raise FileNotFoundError(f"{folder} is not a complete checkpoint: {problem}{hint}")


def resolve_resume_checkpoint(
    value: str | bool | None, output_dir: str | Path, state_problem: StateProblem | None = None
) -> str | None:
    """`--resume_from_checkpoint` as the Trainer needs it: `true` or `last` -> the last complete checkpoint of
    `output_dir`; a folder -> itself once checked complete (a run folder -> its last complete checkpoint);
    empty, `false` or `none` -> None (start afresh). `state_problem` adds the run's check of its own state files."""
    if value is None or value is False:
        return None
    word = str(value).strip().lower()
    if word in NO_CHECKPOINT_WORDS:
        return None
    if word in LAST_CHECKPOINT_WORDS:
        return str(last_complete_checkpoint(output_dir, for_resume=True, state_problem=state_problem))
    return str(require_complete_checkpoint(value, for_resume=True, state_problem=state_problem))
