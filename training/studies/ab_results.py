"""A/B study results from the database: per method pair, how often people preferred each method, with a 95% Wilson
score interval (scipy's `binomtest(...).proportion_ci(method="wilson")`), as a table and a chart.

A comparison counts once for its pair whatever side each method was shown on; a "neither" answer is a comparison
that neither method won, so a method's win rate is wins / all comparisons of the pair (the paper's "preferred in
42.5-60.7% of comparisons").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from training.studies.judgement_store import AbJudgement


CONFIDENCE = 0.95
INTERVAL_METHOD = "wilson"


@dataclass(frozen=True)
class WinRate:
    """One method of one pair: `wins` of `comparisons`, the rate and its 95% Wilson interval."""

    method: str
    opponent: str
    comparisons: int
    wins: int
    losses: int
    neither: int
    rate: float
    low: float
    high: float


def wilson_interval(successes: int, trials: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of `successes` in `trials`.

    Raises:
        ValueError: no trials, or successes outside 0..trials.
    """
    from scipy.stats import binomtest

    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials >= 1, got {successes} of {trials}")
    interval = binomtest(successes, trials).proportion_ci(confidence_level=confidence, method=INTERVAL_METHOD)
    return float(interval.low), float(interval.high)


def win_rates(judgements: Sequence[AbJudgement]) -> list[WinRate]:
    """Both methods' win rates for every pair that has comparisons (pairs and methods in name order)."""
    pairs: dict[tuple[str, str], list[AbJudgement]] = {}
    for judgement in judgements:
        pairs.setdefault(tuple(sorted((judgement.left_method, judgement.right_method))), []).append(judgement)
    rows = []
    for (first, second), comparisons in sorted(pairs.items()):
        neither = sum(judgement.winner is None for judgement in comparisons)
        for method, opponent in ((first, second), (second, first)):
            wins = sum(judgement.winner == method for judgement in comparisons)
            losses = sum(judgement.winner == opponent for judgement in comparisons)
            low, high = wilson_interval(wins, len(comparisons))
            rows.append(WinRate(method, opponent, len(comparisons), wins, losses, neither,
                                wins / len(comparisons), low, high))  # fmt: skip
    return rows


def win_rates_markdown(rows: Sequence[WinRate]) -> str:
    if not rows:
        return "No A/B comparisons yet."
    lines = [
        "| method | against | comparisons | wins | losses | neither | win rate | 95% Wilson interval |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row.method} | {row.opponent} | {row.comparisons} | {row.wins} | {row.losses} | {row.neither} | "
            f"{row.rate:.1%} | {row.low:.1%} – {row.high:.1%} |"
        )
    return "\n".join(lines)


def win_rates_json(rows: Sequence[WinRate]) -> dict[str, Any]:
    return {"confidence": CONFIDENCE, "interval": INTERVAL_METHOD, "rows": [asdict(row) for row in rows]}


def win_rate_figure(rows: Sequence[WinRate]) -> Any:
    """A matplotlib figure: one bar per (method, opponent) with its interval as an error bar, 50% marked."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(max(4.0, 1.2 * len(rows) + 2), 3.6), layout="constrained")
    axes = figure.subplots()
    if not rows:
        axes.text(0.5, 0.5, "no A/B comparisons yet", ha="center", va="center")
        axes.set_axis_off()
        return figure
    labels = [f"{row.method}\nvs {row.opponent}\n(n={row.comparisons})" for row in rows]
    rates = [row.rate for row in rows]
    errors = [[row.rate - row.low for row in rows], [row.high - row.rate for row in rows]]
    axes.bar(range(len(rows)), rates, yerr=errors, capsize=4, color="#4c72b0")
    axes.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    axes.set_xticks(range(len(rows)), labels, fontsize=8)
    axes.set_ylim(0, 1)
    axes.set_ylabel("preferred in (share of comparisons)")
    axes.set_title("A/B study: win rate with 95% Wilson interval", fontsize=10)
    return figure


def write_win_rate_chart(rows: Sequence[WinRate], path: str | Path) -> Path:
    path = Path(path)
    win_rate_figure(rows).savefig(path, dpi=120)
    return path
