"""How well the filter agrees with held-out labels: agreement, precision/recall/F1, ROC-AUC, the operating
threshold, and a precision-recall curve.

An image counts as kept when its score is at or above the threshold. The threshold is the one that maximises
agreement (ties go to the higher threshold: fewer images kept, higher precision), or, with `target_precision`, the
lowest threshold whose precision reaches the target (the most recall at that precision).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_auc_score

from training.pipeline.filter.question import QUESTION_VERSION
from training.store import atomic_write


logger = logging.getLogger(__name__)

REPORT_FILE = "filter_report.json"
PR_CURVE_FILE = "pr_curve.png"


@dataclass(frozen=True)
class FilterReport:
    """The filter against held-out labels, at the chosen `threshold` (scores NaN for unreadable images are left out
    and counted in `num_unscored`)."""

    num_images: int
    num_relational: int
    num_unscored: int
    threshold: float
    agreement: float
    precision: float
    recall: float
    f1: float
    roc_auc: float
    agreement_at_half: float
    best_agreement_threshold: float
    target_precision: float | None
    target_precision_threshold: float | None
    question_version: str
    pr_curve: str

    def to_dict(self) -> dict:
        return asdict(self)


def _counts(scores: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    kept = scores >= threshold
    true_positive = int(np.sum(kept & (labels == 1)))
    false_positive = int(np.sum(kept & (labels == 0)))
    false_negative = int(np.sum(~kept & (labels == 1)))
    true_negative = int(np.sum(~kept & (labels == 0)))
    return true_positive, false_positive, false_negative, true_negative


def agreement_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    return float(np.mean((scores >= threshold) == (labels == 1)))


def precision_recall_f1(scores: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, float, float]:
    """Precision is 1.0 when nothing is kept (no false positive was made)."""
    true_positive, false_positive, false_negative, _ = _counts(scores, labels, threshold)
    precision = true_positive / (true_positive + false_positive) if true_positive + false_positive else 1.0
    recall = true_positive / (true_positive + false_negative) if true_positive + false_negative else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def best_agreement_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """Among the scores themselves (and +inf: keep nothing), the threshold of the highest agreement; ties go to
    the higher threshold."""
    candidates = np.append(np.unique(scores), np.inf)
    agreements = np.array([agreement_at(scores, labels, threshold) for threshold in candidates])
    return float(candidates[np.flatnonzero(agreements == agreements.max())[-1]])


def target_precision_threshold(scores: np.ndarray, labels: np.ndarray, target: float) -> float | None:
    """The lowest score threshold whose precision reaches `target`; None when no threshold does."""
    for threshold in np.unique(scores):
        true_positive, false_positive, _, _ = _counts(scores, labels, threshold)
        if true_positive and true_positive / (true_positive + false_positive) >= target:
            return float(threshold)
    return None


def plot_pr_curve(scores: np.ndarray, labels: np.ndarray, report_threshold: float, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    precision, recall, _ = precision_recall_curve(labels, scores)
    chosen_precision, chosen_recall, _ = precision_recall_f1(scores, labels, report_threshold)
    figure, axes = plt.subplots(figsize=(4.5, 4))
    axes.plot(recall, precision, drawstyle="steps-post", label="filter")
    axes.axhline(labels.mean(), color="grey", linestyle="--", linewidth=1, label="chance (relational share)")
    axes.scatter([chosen_recall], [chosen_precision], color="red", zorder=3, label=f"threshold {report_threshold:.3g}")
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.02), title="relational filter")
    axes.legend(loc="lower left", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def evaluate_filter(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    output_dir: str | Path,
    target_precision: float | None = None,
) -> FilterReport:
    """Scores (P(yes)) against labels (1 relational, 0 not); writes `filter_report.json` and `pr_curve.png` to
    `output_dir`.

    Raises:
        ValueError: lengths differ, labels other than 0/1, or one class missing (AUC needs both).
    """
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be two vectors of one length")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be 0 (not relational) or 1 (relational), got {sorted(set(labels.tolist()))}")
    if target_precision is not None and not 0 < target_precision <= 1:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision}")
    scored = ~np.isnan(scores)
    num_unscored = int((~scored).sum())
    scores, labels = scores[scored], labels[scored].astype(int)
    if len(set(labels.tolist())) < 2:
        raise ValueError("evaluate_filter needs relational and non-relational labels among the scored images")
    best = best_agreement_threshold(scores, labels)
    target_threshold = None
    if target_precision is not None:
        target_threshold = target_precision_threshold(scores, labels, target_precision)
        if target_threshold is None:
            logger.warning("no threshold reaches precision %.3f; using the best-agreement threshold", target_precision)
    threshold = best if target_threshold is None else target_threshold
    precision, recall, f1 = precision_recall_f1(scores, labels, threshold)
    output_dir = Path(output_dir)
    curve = plot_pr_curve(scores, labels, threshold, output_dir / PR_CURVE_FILE)
    report = FilterReport(
        num_images=int(len(scores) + num_unscored),
        num_relational=int(labels.sum()),
        num_unscored=num_unscored,
        threshold=threshold,
        agreement=agreement_at(scores, labels, threshold),
        precision=precision,
        recall=recall,
        f1=f1,
        roc_auc=float(roc_auc_score(labels, scores)),
        agreement_at_half=agreement_at(scores, labels, 0.5),
        best_agreement_threshold=best,
        target_precision=target_precision,
        target_precision_threshold=target_threshold,
        question_version=QUESTION_VERSION,
        pr_curve=str(curve),
    )
    atomic_write(output_dir / REPORT_FILE, (json.dumps(report.to_dict(), indent=2) + "\n").encode())
    return report
