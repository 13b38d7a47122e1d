"""Merge a training checkpoint into a standalone RelSimModel folder (e.g. after an FSDP or multi-node run).

    python -m training.trainer export --checkpoint runs/NAME/checkpoint-1000 --output relsim-final
    python -m training.trainer export --checkpoint runs/NAME --output relsim-final   # its last complete checkpoint

A LoRA checkpoint is applied to the base model rebuilt from the run's saved model arguments (the base is
reproducible: backbone weights plus seeded new parameters); a full checkpoint is loaded as it is. The export writes
the same model card as the trainer's `final/` folder, and the files that let the folder load as a
`SentenceTransformer(..., trust_remote_code=True)` (see `sentence_transformers_files.py`).
"""

from __future__ import annotations

import argparse
from pathlib import Path


HELP = "merge a training checkpoint (or a run folder's last complete one) into a standalone relsim folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", required=True, type=Path, help="a checkpoint-N folder, or a run folder (its last complete one)"
    )
    parser.add_argument("--output", required=True, type=Path, help="folder for the standalone model")


def run(args: argparse.Namespace) -> Path:
    # imported here, not at the top, so that `--help` answers at once
    from training.trainer.export import export_checkpoint

    return export_checkpoint(args.checkpoint, args.output)
