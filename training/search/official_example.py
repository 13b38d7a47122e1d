"""Check converted official weights against the official README's example table.

  python -m training.search.official_example --checkpoint relsim-official --images relsim/anonymous_caption

The official README scores its `anonymous_caption/mam.jpg` against six images of that folder with
`model(img1, img2)` at each image's own resolution (bfloat16 on a GPU). This command scores the same pairs the
same way (`resolution="native"`, one forward per pair) with a converted folder (`python -m training.trainer
convert-official`), prints our score beside the official one, and exits with status 1 when any differs by more
than the tolerance. It needs the released weights (thaoshibe/relsim-qwenvl25-lora on top of
Qwen/Qwen2.5-VL-7B-Instruct) and the official repository's images.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from training.cli import add_device_options, command_parser, configure_logging, prog_name, run_program


if TYPE_CHECKING:
    from training.search.pairwise import RelSimScorer

logger = logging.getLogger("relsim.search")
MODULE = "training.search.official_example"
REFERENCE_IMAGE = "mam.jpg"
# (image, score against mam.jpg) in the official README's table, left to right
OFFICIAL_SCORES = (
    ("mam2.jpg", 0.981),
    ("mam5.jpg", 0.830),
    ("mam3.jpg", 0.808),
    ("bo2.jpg", 0.767),
    ("mam4.jpg", 0.465),
    ("bo.jpg", 0.223),
)
DEFAULT_TOLERANCE = 0.02  # the table is rounded to 3 decimals and was run in bfloat16


@dataclass(frozen=True)
class ExampleScore:
    """One column of the official table beside ours."""

    image: str
    official: float
    ours: float
    tolerance: float

    @property
    def difference(self) -> float:
        return self.ours - self.official

    @property
    def agrees(self) -> bool:
        return abs(self.difference) <= self.tolerance


def example_paths(images_dir: str | Path) -> tuple[Path, list[Path]]:
    """The reference image and the six compared ones in `images_dir`.

    Raises:
        FileNotFoundError: naming every image of the table that the folder lacks.
    """
    images_dir = Path(images_dir)
    names = [REFERENCE_IMAGE, *(name for name, _ in OFFICIAL_SCORES)]
    missing = [name for name in names if not (images_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{images_dir} lacks {', '.join(missing)}: give the official repository's anonymous_caption/ folder"
        )
    return images_dir / REFERENCE_IMAGE, [images_dir / name for name, _ in OFFICIAL_SCORES]


def score_official_example(
    scorer: RelSimScorer, images_dir: str | Path, tolerance: float = DEFAULT_TOLERANCE
) -> list[ExampleScore]:
    """Scores the table's pairs with `scorer` (a `RelSimScorer`, called once per pair as the official code does)."""
    reference, compared = example_paths(images_dir)
    rows = []
    for path, (name, official) in zip(compared, OFFICIAL_SCORES, strict=True):
        ours = scorer(str(reference), str(path))
        rows.append(ExampleScore(name, official, ours, tolerance))
    return rows


def format_table(rows: Sequence[ExampleScore]) -> str:
    lines = [f"{REFERENCE_IMAGE} against | official | ours   | difference | within ±{rows[0].tolerance:g}"]
    for row in rows:
        verdict = "yes" if row.agrees else "NO"
        lines.append(f"{row.image:<16} | {row.official:8.3f} | {row.ours:6.3f} | {row.difference:+10.3f} | {verdict}")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    top = command_parser(MODULE, __doc__)
    top.add_argument("--checkpoint", required=True, help="converted relsim folder or hub id")
    top.add_argument("--images", required=True, type=Path, help="the official repository's anonymous_caption/ folder")
    top.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, help="largest accepted |ours - official|")
    top.add_argument(
        "--resolution", choices=("native", "model"), default="native", help="image sizing (native = the official's)"
    )
    add_device_options(top)
    return top


def main(argv: Sequence[str] | None = None) -> list[ExampleScore]:
    """Parses `argv`, scores the table and prints it; returns the rows (errors propagate)."""
    args = parser().parse_args(argv)
    configure_logging(getattr(args, "debug", False))
    example_paths(args.images)  # a wrong folder fails before the model loads

    from training.cli import resolve_device, resolve_dtype
    from training.search.pairwise import relsim

    scorer, _ = relsim(
        pretrained=True,
        checkpoint_dir=args.checkpoint,
        device=resolve_device(args.device),
        dtype=resolve_dtype(args.dtype),
        resolution=args.resolution,
    )
    rows = score_official_example(scorer, args.images, args.tolerance)
    print(format_table(rows))
    disagreeing = [row.image for row in rows if not row.agrees]
    if disagreeing:
        logger.warning(
            "%d of %d scores differ by more than %g: %s",
            len(disagreeing),
            len(rows),
            args.tolerance,
            ", ".join(disagreeing),
        )
    else:
        logger.info("all %d scores agree with the official table within %g", len(rows), args.tolerance)
    return rows


def program(argv: Sequence[str] | None = None) -> int:
    """Exit status 0 when every score agrees, 1 when one does not, 2 for an expected error (one line)."""
    outcome: list[list[ExampleScore]] = []
    status = run_program(lambda arguments: outcome.append(main(arguments)), argv, prog=prog_name(MODULE))
    if status:
        return status
    return 0 if all(row.agrees for row in outcome[0]) else 1


if __name__ == "__main__":
    raise SystemExit(program())
