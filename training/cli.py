"""One style for every relsim command line: parsers, sub-commands, logging, `--debug`, and expected errors.

Rules every command follows:
- options are kebab-case (`--eval-dir`, `--max-steps`); the trainer's options are its dataclass fields and accept
  both spellings (`--max-steps` and `--max_steps`: transformers' `HfArgumentParser` registers both), while YAML
  recipes use the field names (`max_steps:`);
- usage lines show the command as it was started: `python -m training.evaluation embed ...` or, through a console
  script, `relsim-eval embed ...`;
- `--device` / `--dtype` only on commands that load a model;
- loggers are named `relsim.<area>` (`relsim.train`, `relsim.data`, `relsim.eval`, `relsim.demo`,
  `relsim.convert`); library modules log under their module names; both print at INFO, `--debug` adds DEBUG;
- an *expected* error prints one line, `<prog>: error: <message>`, and exits with status 2 (as argparse does for
  a bad option); `--debug` shows its traceback instead. Expected errors are the ones bad input or a missing
  resource raises: `ValueError` (validation, malformed files, `--strict` rejections, refused remote code),
  `OSError` (missing files and folders, a model that cannot be loaded, a network failure) and `ImportError` (a
  missing optional package; the project's own say which extra installs it). Anything else is a bug and keeps
  its traceback (exit status 1).

This module imports only the standard library, so `--help` and argument errors answer at once; heavy libraries
(torch, transformers, datasets) are imported by the commands that use them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any


EXPECTED_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, ImportError)
EXPECTED_ERROR_STATUS = 2
INTERRUPTED_STATUS = 130
PROJECT_LOGGERS = ("relsim", "training", "modeling_relsim", "hub_cards")
DTYPE_NAMES = ("float32", "bfloat16", "float16")
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"


def prog_name(module: str) -> str:
    """`relsim-xxx` when started through a console script, else `python -m <module>`."""
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return script if script.startswith("relsim-") else f"python -m {module}"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the hand-wrapped descriptions (they hold example command lines) and shows meaningful defaults."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help = action.help
        default = action.default
        shown = default is not None and default is not False and default is not argparse.SUPPRESS
        if help and action.option_strings and shown and "%(default)" not in help:
            help += " (default: %(default)s)"
        return help


def add_debug_option(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: the top-level parser and each sub-command both accept --debug without one's default
    # overwriting the other's value
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show tracebacks of expected errors and DEBUG logging",
    )


def command_parser(module: str, description: str | None) -> argparse.ArgumentParser:
    """The top-level parser of `python -m <module>`: real prog, description kept as written, `--debug`."""
    parser = argparse.ArgumentParser(prog=prog_name(module), description=description, formatter_class=HelpFormatter)
    add_debug_option(parser)
    return parser


def add_commands(parser: argparse.ArgumentParser, dest: str = "command") -> argparse._SubParsersAction:
    return parser.add_subparsers(dest=dest, required=True, metavar="COMMAND")


def add_command(
    commands: argparse._SubParsersAction, name: str, help: str, description: str | None = None
) -> argparse.ArgumentParser:
    """A sub-command with `--debug` and the shared formatter; `description` defaults to `help`."""
    parser = commands.add_parser(name, help=help, description=description or help, formatter_class=HelpFormatter)
    add_debug_option(parser)
    return parser


def add_cli_command(
    commands: argparse._SubParsersAction,
    name: str,
    cli: ModuleType,
    help: str | None = None,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    run: Callable[[argparse.Namespace], Any] | None = None,
) -> argparse.ArgumentParser:
    """The sub-command a `*_cli` module defines: help `cli.HELP`, description its docstring, options
    `cli.add_arguments`, body `cli.run` (a module with several commands names each one's own)."""
    parser = add_command(commands, name, help or cli.HELP, cli.__doc__)
    (add_arguments or cli.add_arguments)(parser)
    parser.set_defaults(run=run or cli.run)
    return parser


def run_sub_command(
    module: str,
    command: str,
    description: str | None,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], Any],
    argv: Sequence[str] | None = None,
) -> Any:
    """`python -m <module> <command> ARGV` from Python (tests, notebooks): parse, set up logging, run; errors
    propagate."""
    parser = command_parser(module, description)
    parser.prog += f" {command}"
    add_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging(getattr(args, "debug", False))
    return run(args)


def add_device_options(parser: argparse.ArgumentParser, dtype: bool = True) -> None:
    """`--device` (default: cuda when available) and `--dtype`, for commands that load a model."""
    parser.add_argument("--device", default="auto", help="torch device: auto (cuda when available), cpu, cuda, cuda:1")
    if dtype:
        parser.add_argument("--dtype", choices=DTYPE_NAMES, default="float32", help="dtype the model is loaded in")


def resolve_device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(name: str) -> Any:
    """The torch dtype called `name` (one of `DTYPE_NAMES`)."""
    if name not in DTYPE_NAMES:
        raise ValueError(f"dtype {name!r} is not one of {', '.join(DTYPE_NAMES)}")
    import torch

    return getattr(torch, name)


def debug_requested(args: argparse.Namespace | Sequence[str]) -> bool:
    if isinstance(args, argparse.Namespace):
        return bool(getattr(args, "debug", False))
    return "--debug" in args


def configure_logging(debug: bool = False) -> None:
    """INFO (DEBUG with `--debug`) for the project's loggers; other libraries stay at WARNING."""
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.INFO)


def error_line(error: BaseException) -> str:
    """The error as one line: an `OSError` with a file name as `file: reason`, else its message's first line."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    more = f" [{len(lines) - 1} more lines: rerun with --debug]" if len(lines) > 1 else ""
    return lines[0] + more


def run_program(
    main: Callable[[list[str]], Any],
    argv: Sequence[str] | None = None,
    prog: str | None = None,
    has_commands: bool = False,
) -> int:
    """Runs `main(argv)` as a program: the exit status, expected errors as one line on stderr.

    `main` parses its own arguments (argparse exits with status 2 on a bad option) and raises on failure;
    this wrapper is what console scripts and `python -m` call. With `has_commands` the message names the
    sub-command too (`python -m training.evaluation report: error: ...`).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog or prog_name("relsim")
    if has_commands and argv and not argv[0].startswith("-"):
        prog = f"{prog} {argv[0]}"
    try:
        main(argv)
    except EXPECTED_ERRORS as error:
        if debug_requested(argv):
            raise
        print(f"{prog}: error: {error_line(error)}", file=sys.stderr)
        return EXPECTED_ERROR_STATUS
    except KeyboardInterrupt:
        if debug_requested(argv):
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return INTERRUPTED_STATUS
    return 0


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> Any:
    """Parses `argv` (the process's own when None), sets the project's logging (DEBUG with `--debug`) and runs the
    chosen sub-command's `run`; errors propagate (`program_of` turns them into the command-line behaviour)."""
    args = parser.parse_args(argv)
    configure_logging(getattr(args, "debug", False))
    return args.run(args)


def program_of(module: str, main: Callable[[list[str]], Any], has_commands: bool = True) -> Callable[[], int]:
    """The `program()` that console scripts and `python -m <module>` call: `main` under `run_program`, so expected
    errors print one line (exit status 2) and `--debug` shows their tracebacks."""

    def program() -> int:
        return run_program(main, prog=prog_name(module), has_commands=has_commands)

    program.__doc__ = f"`python -m {module}` or its console script: expected errors as one line (exit status 2)."
    return program


def command_line(
    module: str, parser: Callable[[], argparse.ArgumentParser]
) -> tuple[Callable[[Sequence[str] | None], Any], Callable[[], int]]:
    """`main(argv)` (parse, then run the sub-command; errors propagate, as tests want) and `program()` (the console
    script) of a `python -m <module>` whose `parser()` sets each sub-command's `run`: one copy of that tail."""

    def main(argv: Sequence[str] | None = None) -> Any:
        return run_command(parser(), argv)

    return main, program_of(module, main)
