"""Merge a training checkpoint into a standalone RelSimModel folder (e.g. after an FSDP or multi-node run): a LoRA
checkpoint onto the base rebuilt from the run's saved model arguments, a full one as it is; its command line, and
what the folder holds, is `export_cli.py` (`python -m training.trainer export`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from peft import PeftModel

from modeling_relsim import RelSimModel, RelSimProcessor
from training.trainer.checkpoints import TRAINER_STATE_FILE, require_complete_checkpoint
from training.trainer.model_card import run_model_card
from training.trainer.model_factory import build_base, load_model_arguments
from training.trainer.sentence_transformers_files import write_sentence_transformers_files


logger = logging.getLogger("relsim.train")


def export_checkpoint(checkpoint: str | Path, output_dir: str | Path) -> Path:
    """Writes the standalone model, its processor and its model card; returns `output_dir`.

    Args:
        checkpoint: a `checkpoint-N` folder, or a run folder (its last complete checkpoint is taken).
        output_dir: the folder for the standalone model.

    Raises:
        FileNotFoundError: the checkpoint is incomplete (naming the missing or damaged file) or the run has none.
    """
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
