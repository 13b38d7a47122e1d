"""Does the conceptual distance tell relations apart? On synthetic images, every pair is same-family (one relation,
drawn with other shapes and colours) or different-family; the ROC-AUC of each score for "same family" is reported
for each describer (literal, anonymous) beside relsim's cosine, as a table (json and markdown) and one plot of
d_L against description length (same-family and different-family means per describer).

A smaller distance means closer, so the distances enter the AUC negated; 0.5 is chance.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from training.evaluation.methods.relsim import RelSimMethod
from training.store import atomic_write
from training.studies.conceptual_distance import PairDistance
from training.studies.conceptual_distance_runner import ConceptualDistance, Describer, DistanceSettings
from training.synthetic.dataset import synthetic_examples
from training.synthetic.families import FAMILY_NAMES


logger = logging.getLogger(__name__)

REPORT_JSON = "conceptual_distance_report.json"
REPORT_MARKDOWN = "conceptual_distance_report.md"
CURVE_PLOT = "conceptual_distance_curves.png"


@dataclass(frozen=True)
class SyntheticPool:
    """Synthetic images (their families) and every unordered pair of them, labelled same-family or not."""

    images: list[Any]
    families: list[str]
    pairs: list[tuple[int, int]]

    @property
    def same_family(self) -> np.ndarray:
        return np.array([self.families[i] == self.families[j] for i, j in self.pairs])


def synthetic_pool(
    num_per_family: int,
    split: str = "heldout",
    seed: int = 0,
    image_size: int = 112,
    families: Sequence[str] | None = None,
) -> SyntheticPool:
    """`num_per_family` images of each relation family (at least two, so same-family pairs exist; all families
    unless `families` names some) and all pairs."""
    if num_per_family < 2:
        raise ValueError(f"num_per_family must be at least 2 to form same-family pairs, got {num_per_family}")
    examples = list(synthetic_examples(num_per_family, split, seed, image_size, families or FAMILY_NAMES))
    pairs = list(itertools.combinations(range(len(examples)), 2))
    return SyntheticPool([example["image"] for example in examples], [example["family"] for example in examples], pairs)


def same_family_auc(same_family: np.ndarray, scores: Sequence[float]) -> float:
    """ROC-AUC of `scores` (higher = more alike) for the same-family pairs."""
    return float(roc_auc_score(same_family.astype(int), np.asarray(scores, dtype=np.float64)))


def relsim_cosines(relsim: Any, pool: SyntheticPool, batch_size: int = 16) -> list[float]:
    """relsim's cosine similarity of every pair; `relsim` is a model folder / hub id or an `EmbeddingMethod`."""
    import torch

    method = RelSimMethod(str(relsim)) if isinstance(relsim, (str, Path)) else relsim
    embeddings = []
    with torch.inference_mode():
        for start in range(0, len(pool.images), batch_size):
            chunk = pool.images[start : start + batch_size]
            embeddings.append(method.embed(method.preprocess(chunk), [str(i) for i in range(len(chunk))]))
    embeds = torch.nn.functional.normalize(torch.cat(embeddings).float(), dim=-1)
    return [float(embeds[i] @ embeds[j]) for i, j in pool.pairs]


def describer_summary(name: str, distances: list[PairDistance], same_family: np.ndarray) -> dict[str, Any]:
    """One describer's row: AUC of the area and of d_L at each length, and the mean curves of both pair kinds."""
    lengths = distances[0].lengths
    curves = np.array([distance.curve for distance in distances])
    return {
        "method": f"conceptual distance ({name})",
        "auc": same_family_auc(same_family, [-distance.area for distance in distances]),
        "auc_per_length": {
            str(length): same_family_auc(same_family, -curves[:, k]) for k, length in enumerate(lengths)
        },
        "lengths": list(lengths),
        "same_family_mean_curve": curves[same_family].mean(0).tolist(),
        "different_family_mean_curve": curves[~same_family].mean(0).tolist(),
        "same_family_mean_area": float(np.mean([d.area for d, s in zip(distances, same_family, strict=True) if s])),
        "different_family_mean_area": float(
            np.mean([d.area for d, s in zip(distances, same_family, strict=True) if not s])
        ),
    }


def markdown_table(report: dict[str, Any]) -> str:
    lengths = sorted({int(length) for row in report["methods"] for length in row.get("auc_per_length", {})})
    header = ["method", "AUC", *[f"AUC at {length} tokens" for length in lengths]]
    lines = [
        f"Same-family vs different-family pairs: {report['same_family_pairs']} of {report['pairs']} pairs "
        f"({report['num_per_family']} {report['split']} images per family). 0.5 is chance.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in report["methods"]:
        per_length = [
            f"{row['auc_per_length'][str(length)]:.3f}" if str(length) in row.get("auc_per_length", {}) else "–"
            for length in lengths
        ]
        lines.append("| " + " | ".join([row["method"], f"{row['auc']:.3f}", *per_length]) + " |")
    return "\n".join(lines) + "\n"


def curve_plot_png(rows: Sequence[dict[str, Any]]) -> bytes:
    """One figure: mean d_L against description length, same-family solid and different-family dashed, per
    describer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for index, row in enumerate(rows):
        colour = f"C{index}"
        axes.plot(row["lengths"], row["same_family_mean_curve"], "-o", color=colour, label=f"{row['method']}: same")
        axes.plot(row["lengths"], row["different_family_mean_curve"], "--s", color=colour,
                  label=f"{row['method']}: different")  # fmt: skip
    axes.set_xlabel("description length budget (tokens)")
    axes.set_ylabel("mean d_L (nats)")
    axes.set_title("Conceptual distance by description length")
    axes.legend(fontsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    return buffer.getvalue()


def evaluate_conceptual_distance(
    describers: Sequence[Describer],
    output_dir: str | Path,
    relsim: Any = None,
    num_per_family: int = 4,
    split: str = "heldout",
    settings: DistanceSettings | None = None,
    synthetic_seed: int = 0,
    image_size: int = 112,
    families: Sequence[str] | None = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Scores every pair of a synthetic pool with each describer (and relsim's cosine when `relsim` is given) and
    writes `conceptual_distance_report.json`, `.md` and `conceptual_distance_curves.png` to `output_dir`; the
    descriptions and scores are cached under `output_dir/cache`, so a rerun resumes.

    Returns:
        the report (what the json holds).
    """
    if not describers:
        raise ValueError("give at least one describer (literal, anonymous) to evaluate")
    output_dir = Path(output_dir)
    settings = settings or DistanceSettings()
    pool = synthetic_pool(num_per_family, split, synthetic_seed, image_size, families)
    same_family = pool.same_family
    rows = []
    for describer in describers:
        run = ConceptualDistance(describer, output_dir / "cache", settings)
        distances = run([(pool.images[i], pool.images[j]) for i, j in pool.pairs], show_progress).distances
        rows.append(describer_summary(describer.name, distances, same_family))
    curve_rows = list(rows)
    if relsim is not None:
        rows.append({"method": "relsim cosine", "auc": same_family_auc(same_family, relsim_cosines(relsim, pool))})
    report = {
        "split": split,
        "num_per_family": num_per_family,
        "families": sorted(set(pool.families)),
        "pairs": len(pool.pairs),
        "same_family_pairs": int(same_family.sum()),
        "settings": {**settings.sampling(), "lengths": list(settings.lengths), "num_samples": settings.num_samples},
        "methods": rows,
    }
    atomic_write(output_dir / REPORT_JSON, (json.dumps(report, indent=1) + "\n").encode("utf-8"))
    atomic_write(output_dir / REPORT_MARKDOWN, markdown_table(report).encode("utf-8"))
    atomic_write(output_dir / CURVE_PLOT, curve_plot_png(curve_rows))
    logger.info("conceptual distance report: %s", {row["method"]: round(row["auc"], 3) for row in rows})
    return report
