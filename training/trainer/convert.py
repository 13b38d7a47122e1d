"""Convert the official relsim release (PEFT LoRA adapter + tokenizer + `projection_and_config.pt`) to a
standalone relsim folder (safetensors, remote code included) that gives the official embeddings.

  python -m training.trainer convert-official --checkpoint OFFICIAL --base Qwen/Qwen2.5-VL-7B-Instruct --output OUT

The conversion itself is `modeling_relsim.convert_official.convert_official_checkpoint`; this is its command line,
kept outside `modeling_relsim` because importing that package registers the Auto classes with transformers (and
so imports torch), which would make `--help` slow. The command also writes the Sentence Transformers files
(`sentence_transformers_files.py`), so the converted folder loads as `SentenceTransformer(OUT, trust_remote_code=True)`.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from training.cli import DTYPE_NAMES, command_parser, configure_logging, program_of, resolve_dtype


logger = logging.getLogger("relsim.convert")
HELP = "convert the official release (LoRA adapter + projection) to a standalone relsim folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, type=Path, help="official checkpoint folder")
    parser.add_argument("--base", required=True, help="Qwen2.5-VL the adapter was trained on (hub id or folder)")
    parser.add_argument("--output", required=True, type=Path, help="folder to write the relsim model into")
    parser.add_argument("--dtype", default="float32", choices=DTYPE_NAMES, help="dtype of the written weights")


def run(args: argparse.Namespace) -> Path:
    from modeling_relsim.convert_official import convert_official_checkpoint
    from training.trainer.sentence_transformers_files import write_sentence_transformers_files

    output = convert_official_checkpoint(args.checkpoint, args.base, args.output, dtype=resolve_dtype(args.dtype))
    return write_sentence_transformers_files(output)


def main(argv: Sequence[str] | None = None) -> Path:
    """`relsim-convert-official` from Python: parses `argv` and converts; errors propagate."""
    parser = command_parser("training.trainer", __doc__)
    if not parser.prog.startswith("relsim-"):
        parser.prog += " convert-official"
    add_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging(getattr(args, "debug", False))
    return run(args)


program = program_of("training.trainer", main, has_commands=False)
