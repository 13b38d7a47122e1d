"""Train relsim, export a training checkpoint, or convert the official release to a standalone relsim folder.

  python -m training.trainer train --config training/configs/tiny-cpu.yaml [--max-steps 60 ...]
  python -m training.trainer export --checkpoint runs/NAME/checkpoint-1000 --output relsim-final
  python -m training.trainer convert-official --checkpoint OFFICIAL --base Qwen/Qwen2.5-VL-7B-Instruct --output OUT

Console script: `relsim-train` (`relsim-convert-official` for the last).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from training.cli import add_cli_command, add_commands, command_parser, prog_name, program_of, run_command
from training.trainer import convert, export_cli


MODULE = "training.trainer"
TRAIN_HELP = "train relsim from a YAML recipe; any recipe field can be overridden on the command line"
TRAIN_DESCRIPTION = """\
Train relsim from a YAML recipe of ModelArguments, DataArguments and RelSimTrainingArguments fields
(training/trainer/arguments.py; RelSimTrainingArguments extends transformers' TrainingArguments).
A recipe that sets any objective option field (ObjectiveTrainingArguments in
training/trainer/objectives/arguments.py) trains with ObjectiveTrainer instead of the paper's RelSimTrainer.
Every field is also an option, spelled with dashes or underscores (--max-steps 60 or --max_steps 60);
options given after the recipe override it. Multi-GPU: run the same command under `accelerate launch -m`
or `torchrun -m`.

options:
  -h, --help            show this help message and exit
  --help-all            list every field with its type and default (imports transformers: a few seconds)
  --config RECIPE.yaml  the recipe (training/configs/*.yaml); keys are field names (max_steps: 60)
  --debug               show tracebacks of expected errors (`--debug VALUE` is TrainingArguments.debug)
  --FIELD VALUE         any field, e.g. --output-dir runs/mine --max-steps 60 --learning-rate 3e-4
"""


def train_help(prog: str) -> str:
    return f"usage: {prog} [--config RECIPE.yaml] [--FIELD VALUE ...] [--debug] [--help-all]\n\n{TRAIN_DESCRIPTION}"


def parser() -> argparse.ArgumentParser:
    top = command_parser(MODULE, __doc__)
    commands = add_commands(top)
    # the train command's options are the dataclass fields, parsed by HfArgumentParser in training.trainer.train
    commands.add_parser("train", help=TRAIN_HELP, add_help=False)

    add_cli_command(commands, "export", export_cli)
    add_cli_command(commands, "convert-official", convert)
    return top


def main(argv: Sequence[str] | None = None) -> Any:
    """Parses `argv` and runs the command; errors propagate (see `program` for the command-line behaviour)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((position for position, token in enumerate(argv) if not token.startswith("-")), None)
    if command is not None and argv[command] == "train":
        train_argv = argv[:command] + argv[command + 1 :]  # a top-level --debug belongs to train too
        if {"-h", "--help"} & set(train_argv):
            print(train_help(f"{prog_name(MODULE)} train"))
            return None
        from training.cpu_threads import prefer_passive_waiting

        prefer_passive_waiting()  # before torch loads: a busy machine then slows training in proportion
        from training.trainer.train import main as train

        return train(train_argv)
    return run_command(parser(), argv)


program = program_of(MODULE, main)


if __name__ == "__main__":
    raise SystemExit(program())
