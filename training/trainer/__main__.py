"""`python -m training.trainer train|export ...`: train relsim from a recipe, or export a checkpoint."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"train": "training.trainer.train", "export": "training.trainer.export"}
    if not argv or argv[0] not in commands:
        print(f"usage: python -m training.trainer {{{','.join(commands)}}} ... (--help for each)", file=sys.stderr)
        raise SystemExit(0 if argv and argv[0] in ("-h", "--help") else 2)
    import importlib

    importlib.import_module(commands[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    main()
