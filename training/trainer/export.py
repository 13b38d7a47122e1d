"""Merge a training checkpoint into a standalone RelSimModel folder (e.g. after an FSDP or multi-node run).

    python -m training.trainer export --checkpoint runs/NAME/checkpoint-1000 --output relsim-final

A LoRA checkpoint is applied to the base model rebuilt from the run's saved model arguments (the base is
reproducible: backbone weights plus seeded new parameters); a full checkpoint is loaded as it is.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


logger = logging.getLogger("relsim.train")
HELP = "merge a training checkpoint into a standalone relsim folder"


def export_checkpoint(checkpoint: str | Path, output_dir: str | Path) -> Path:
    # heavy imports here, not at module level, so that `--help` answers at once
    from peft import PeftModel

    from modeling_relsim import RelSimModel, RelSimProcessor
    from training.trainer.model_factory import build_base, load_model_arguments

    checkpoint, output_dir = Path(checkpoint), Path(output_dir)
    if not checkpoint.is_dir():
        raise FileNotFoundError(f"checkpoint folder {checkpoint} does not exist")
    processor = RelSimProcessor.from_pretrained(checkpoint)
    if (checkpoint / "adapter_config.json").is_file():
        _, base = build_base(load_model_arguments(checkpoint.parent))
        model = PeftModel.from_pretrained(base, checkpoint).merge_and_unload()
    else:
        model = RelSimModel.from_pretrained(checkpoint)
    model.check_processor(processor)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    logger.info("wrote %s", output_dir)
    return output_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, type=Path, help="a checkpoint-N folder of a run")
    parser.add_argument("--output", required=True, type=Path, help="folder for the standalone model")


def run(args: argparse.Namespace) -> Path:
    return export_checkpoint(args.checkpoint, args.output)
