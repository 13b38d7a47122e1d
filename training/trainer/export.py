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
import json
import logging
from pathlib import Path


logger = logging.getLogger("relsim.train")
HELP = "merge a training checkpoint (or a run folder's last complete one) into a standalone relsim folder"


def export_checkpoint(checkpoint: str | Path, output_dir: str | Path) -> Path:
    """Writes the standalone model, its processor and its model card; returns `output_dir`.

    Args:
        checkpoint: a `checkpoint-N` folder, or a run folder (its last complete checkpoint is taken).
        output_dir: the folder for the standalone model.

    Raises:
        FileNotFoundError: the checkpoint is incomplete (naming the missing or damaged file) or the run has none.
    """
    # heavy imports here, not at module level, so that `--help` answers at once
    from peft import PeftModel

    from modeling_relsim import RelSimModel, RelSimProcessor
    from training.trainer.checkpoints import TRAINER_STATE_FILE, require_complete_checkpoint
    from training.trainer.model_card import run_model_card
    from training.trainer.model_factory import build_base, load_model_arguments
    from training.trainer.sentence_transformers_files import write_sentence_transformers_files

    checkpoint = require_complete_checkpoint(checkpoint)
    output_dir = Path(output_dir)
    processor = RelSimProcessor.from_pretrained(checkpoint)
    if (checkpoint / "adapter_config.json").is_file():
        _, base = build_base(load_model_arguments(checkpoint.parent))
        model = PeftModel.from_pretrained(base, checkpoint).merge_and_unload()
    else:
        model = RelSimModel.from_pretrained(checkpoint)
    model.check_processor(processor)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    write_sentence_transformers_files(output_dir)
    step = json.loads((checkpoint / TRAINER_STATE_FILE).read_text(encoding="utf-8"))["global_step"]
    run_model_card(checkpoint.parent, model.config, step, checkpoint=checkpoint).save(output_dir / "README.md")
    logger.info("wrote %s from %s", output_dir, checkpoint)
    return output_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", required=True, type=Path, help="a checkpoint-N folder, or a run folder (its last complete one)"
    )
    parser.add_argument("--output", required=True, type=Path, help="folder for the standalone model")


def run(args: argparse.Namespace) -> Path:
    return export_checkpoint(args.checkpoint, args.output)
