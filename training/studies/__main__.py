"""Studies with relsim (each command resumes from its cache):

python -m training.studies distance --model DESCRIBER --images a.png b.png --cache-dir cd-cache
python -m training.studies distance-eval --literal-model L --anonymous-model A --relsim R --output-dir cd-report
python -m training.studies train-literal-describer --output-dir runs/literal-describer-tiny-cpu
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from training.cli import add_command, add_commands, command_parser, configure_logging, prog_name, run_program


MODULE = "training.studies"


def parser() -> argparse.ArgumentParser:
    from training.studies import conceptual_distance_cli as distance

    top = command_parser(MODULE, __doc__)
    commands = add_commands(top)
    command = add_command(commands, "distance", distance.DISTANCE_HELP, distance.__doc__)
    distance.add_distance_arguments(command)
    command.set_defaults(run=distance.run_distance)
    command = add_command(commands, "distance-eval", distance.EVALUATE_HELP, distance.__doc__)
    distance.add_evaluate_arguments(command)
    command.set_defaults(run=distance.run_evaluate)
    command = add_command(commands, "train-literal-describer", distance.TRAIN_HELP, distance.__doc__)
    distance.add_train_arguments(command)
    command.set_defaults(run=distance.run_train)
    return top


def main(argv: Sequence[str] | None = None):
    """Parses `argv` and runs the command; errors propagate (see `program` for the command-line behaviour)."""
    args = parser().parse_args(argv)
    configure_logging(getattr(args, "debug", False))
    return args.run(args)


def program() -> int:
    """Console script `relsim-studies`: expected errors as one line (exit status 2), tracebacks with --debug."""
    return run_program(main, prog=prog_name(MODULE), has_commands=True)


if __name__ == "__main__":
    raise SystemExit(program())
