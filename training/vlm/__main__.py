"""The generating Qwen2.5-VL's own command:

  python -m training.vlm pretrain-tiny --output training/vlm/pretrained_tiny   # the offline base VLM (~30 CPU-min)

The tiny filter and captioner recipes (`tiny_pretrained: true`) start from the folder this writes.
"""

from __future__ import annotations

import argparse
import logging

from training.cli import add_command, add_commands, command_line, command_parser


MODULE = "training.vlm"
logger = logging.getLogger("relsim.vlm")


def run_pretrain_tiny(args: argparse.Namespace) -> None:
    from training.vlm.tiny_pretraining import TINY_PRETRAIN_RECIPE, pretrain_tiny_chat

    overrides = {} if args.max_steps is None else {"max_steps": args.max_steps}
    pretrain_tiny_chat(args.output, args.recipe or TINY_PRETRAIN_RECIPE, overrides)
    logger.info("wrote the pretrained tiny chat to %s", args.output)


def parser() -> argparse.ArgumentParser:
    top = command_parser(MODULE, __doc__)
    commands = add_commands(top)
    pretrain = add_command(
        commands, "pretrain-tiny", "pretrain the tiny generating Qwen2.5-VL on literal descriptions of generated images"
    )
    pretrain.add_argument("--output", required=True, help="folder to write (QwenVLChat.from_pretrained loads it)")
    pretrain.add_argument("--recipe", help="YAML recipe (default: training/configs/tiny-vlm-pretrain-cpu.yaml)")
    pretrain.add_argument("--max-steps", type=int, help="override the recipe's step count")
    pretrain.set_defaults(run=run_pretrain_tiny)
    return top


main, program = command_line(MODULE, parser)

if __name__ == "__main__":
    raise SystemExit(program())
