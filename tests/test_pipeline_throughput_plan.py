"""The GPU-hours projection's arithmetic, checked by hand."""

import pytest

from training.pipeline.throughput_plan import DESIGN_RATES, StageRate, project, projection_table


def test_gpu_hours_are_images_times_share_over_rate():
    rates = [StageRate("filter", 100.0, 1.0), StageRate("embed", 50.0, 0.1)]
    result = project(3_600_000, rates, wall_clock_hours=10.0, utilization=0.5, gpus_per_node=8)
    # filter: 3.6M / 100 / 3600 = 10 h; embed: 360k / 50 / 3600 = 2 h; 12 h / (10 h x 0.5) = 2.4 -> 3 -> one node of 8
    assert result.gpu_hours == pytest.approx({"filter": 10.0, "embed": 2.0})
    assert result.total_gpu_hours == pytest.approx(12.0)
    assert result.gpus_needed == 8


def test_design_rates_give_the_embedding_probe_figure():
    embed = project(1_000_000, [rate for rate in DESIGN_RATES if rate.stage == "embed"])
    assert embed.gpu_hours["embed"] == pytest.approx(1_000_000 * 0.05 / 90.8 / 3600)
    assert "| 2,000,000,000 |" in projection_table()
