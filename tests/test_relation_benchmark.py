"""The relational benchmark on the compositional world: seen and unseen relations scored apart, per-factor mAP,
relation-text queries, chance levels, the report (unseen first), the issue's targets and the mean ± std over seeds."""

import math
from collections.abc import Sequence

import numpy as np
import PIL.Image
import pytest
import torch

from training.evaluation.methods.base import EmbeddingMethod, pixel_hash
from training.evaluation.relation_benchmark import (
    METRICS,
    TEXT_METRICS,
    UNSEEN_POOL_TEXT_MAP,
    random_ranking_ap,
    relation_pool,
    run_relation_benchmark,
)
from training.evaluation.relation_report import (
    CHANCE_ROW,
    mean_table,
    relation_verdict,
    seeds_summary,
    summary_rows,
    write_relation_report,
)
from training.evaluation.reporting.neighbour_grids import (
    HEADER_HEIGHT,
    LEGEND_HEIGHT,
    NEIGHBOUR_LABEL_LINE,
    THUMBNAIL,
    TITLE_HEIGHT,
)
from training.evaluation.synthetic_cli import main
from training.evaluation.synthetic_retrieval import COLOUR_HISTOGRAM, PIXEL_COSINE
from training.synthetic.factors import Relation
from training.synthetic.relations import relation_split
from training.tiny_backbone import build_tiny_model, build_tiny_processor
from training.tuned_encoders import build_tiny_encoder


# two unseen and two seen relations, two rows and two columns: small enough to rank by hand
FIXTURE_RELATIONS = ("row/none/none/none", "row/none/shape/none", "column/none/none/pairs", "column/none/none/none")


class LookupMethod(EmbeddingMethod):
    """Vectors chosen by the test, looked up by image content: what the method 'sees' is known exactly."""

    name = "lookup"

    def __init__(self, images: Sequence[PIL.Image.Image], vectors: torch.Tensor, caption_space: bool = False) -> None:
        super().__init__()
        self.vectors = {pixel_hash(image): vector for image, vector in zip(images, vectors, strict=True)}
        self.caption_space = caption_space

    def identity(self) -> dict:
        return {}

    def embed(self, batch, image_hashes: Sequence[str]) -> torch.Tensor:
        return torch.stack([self.vectors[image_hash] for image_hash in image_hashes])


def one_hot(pool, column: str) -> LookupMethod:
    values = list(pool[column])
    codes = {value: code for code, value in enumerate(dict.fromkeys(values))}
    vectors = torch.nn.functional.one_hot(torch.tensor([codes[value] for value in values]), len(codes)).float()
    return LookupMethod(list(pool["image"]), vectors)


def harmonic(n: int) -> float:
    return sum(1 / k for k in range(1, n + 1))


@pytest.fixture(scope="module")
def pool():
    return relation_pool(2, seed=1, image_size=48, relations=[Relation.from_name(n) for n in FIXTURE_RELATIONS])


@pytest.fixture(scope="module")
def one_hot_run(pool):
    methods = {"by relation": one_hot(pool, "relation"), "by layout": one_hot(pool, "layout")}
    return run_relation_benchmark(methods, pool, text_encoder=None)


def test_the_pool_holds_held_out_looks_of_every_relation_and_marks_the_unseen_ones():
    pool = relation_pool(1, seed=1, image_size=48)
    held_out = {relation.name for relation in relation_split("heldout")}
    assert len(pool) == 407 and sum(pool["unseen"]) == 102 == len(held_out)
    assert {name for name, flag in zip(pool["relation"], pool["unseen"], strict=True) if flag} == held_out
    assert {"image", "caption", "layout", "change", "exception", "structure", "shape", "colour"} <= set(pool.features)


def test_the_fixture_pool_interleaves_the_relations(pool):
    # the hand-ranked values below depend on this order (ties are broken by pool position)
    assert list(pool["relation"]) == [*FIXTURE_RELATIONS, *FIXTURE_RELATIONS]
    assert list(pool["unseen"]) == [True, False, True, False] * 2


def test_a_one_hot_of_the_relation_retrieves_every_relation_perfectly(one_hot_run):
    metrics = one_hot_run.table["by relation"]
    assert set(metrics) == set(METRICS)
    for name in ("seen mAP", "unseen mAP", "seen recall@1", "unseen recall@1"):
        assert metrics[name] == 1.0, name
    assert metrics["seen attribute trap"] == metrics["unseen attribute trap"] == 0.0
    assert all(math.isnan(metrics[name]) for name in TEXT_METRICS)  # no caption space, no text metrics
    assert one_hot_run.similarities["by relation"].shape == (8, 8)
    assert one_hot_run.embeddings["by relation"].shape == (8, 4)


def test_a_one_hot_of_the_layout_finds_the_layout_but_not_the_relation(one_hot_run, pool):
    metrics = one_hot_run.table["by layout"]
    assert metrics["unseen layout mAP"] == 1.0
    # structure: images 0 and 4 (none) find the 3 other rows first, then 3 and 7 at ranks 5 and 7 (after 2, 6);
    # 2 (pairs) finds 6 second, 6 finds 2 first
    none_query = (1 + 1 + 1 + 4 / 5 + 5 / 7) / 5
    assert metrics["unseen structure mAP"] == pytest.approx((2 * none_query + 1 / 2 + 1) / 4)
    # Each query ties with the three other images of its layout, ranked by pool position (see the order test).
    # Unseen: image 0 finds its twin (4) second, image 4 finds 0 first; the same for 2 and 6.
    assert metrics["unseen mAP"] == pytest.approx((1 / 2 + 1 + 1 / 2 + 1) / 4)
    assert metrics["unseen recall@1"] == 0.5
    # Seen: image 1 finds 5 third (after 0 and 4), image 5 finds 1 second; the same for 3 and 7.
    assert metrics["seen mAP"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert metrics["seen recall@1"] == 0.0
    # unseen queries' nearest neighbours: 0 -> 1, 2 -> 3 (other relations), 4 -> 0, 6 -> 2 (same relation)
    shapes, colours = pool["shape"], pool["colour"]
    trapped = [shapes[q] == shapes[n] or colours[q] == colours[n] for q, n in ((0, 1), (2, 3))]
    assert metrics["unseen attribute trap"] == sum(trapped) / 4


def test_with_one_image_per_relation_relation_retrieval_is_not_a_score_of_zero():
    pool = relation_pool(1, seed=1, image_size=48, relations=[Relation.from_name(n) for n in FIXTURE_RELATIONS])
    run = run_relation_benchmark({"by layout": one_hot(pool, "layout")}, pool, text_encoder=None)
    for name in ("seen mAP", "unseen mAP", "seen recall@1", "unseen recall@1"):
        assert math.isnan(run.table["by layout"][name]), name
    assert math.isnan(run.chance["unseen mAP"])
    assert run.table["by layout"]["unseen layout mAP"] == 1.0  # the one other row still counts for the layout


def test_chance_levels_are_the_expected_scores_of_a_random_ranking(one_hot_run):
    chance = one_hot_run.chance
    # an image query: 7 ranked images, 1 of its relation; E[AP] = H_7 / 7
    assert chance["unseen mAP"] == chance["seen mAP"] == pytest.approx(harmonic(7) / 7)
    assert chance["unseen recall@1"] == pytest.approx(1 / 7)
    # a caption query: 8 ranked images, 2 right: (R-1)/(N-1) + H_N/N (N-R)/(N-1)
    assert chance["unseen text mAP"] == pytest.approx(1 / 7 + harmonic(8) / 8 * 6 / 7)
    assert chance[UNSEEN_POOL_TEXT_MAP] == pytest.approx(1 / 3 + harmonic(4) / 4 * 2 / 3)
    # same layout: 3 of the 7 others; every fixture relation has no change, so all 7 are right
    assert chance["unseen layout mAP"] == pytest.approx(2 / 6 + harmonic(7) / 7 * 4 / 6)
    assert chance["unseen change mAP"] == 1.0
    assert random_ranking_ap(1, 2) == 0.75  # one right item among two: first half the time


def test_random_embeddings_score_near_chance():
    pool = relation_pool(2, seed=1, image_size=48)
    vectors = torch.nn.functional.normalize(torch.randn(len(pool), 64, generator=torch.Generator().manual_seed(0)))
    run = run_relation_benchmark({"random": LookupMethod(list(pool["image"]), vectors)}, pool, text_encoder=None)
    metrics, chance = run.table["random"], run.chance
    assert chance["unseen mAP"] == pytest.approx(harmonic(813) / 813)
    for name in ("seen mAP", "unseen mAP"):
        assert abs(metrics[name] - chance[name]) < 0.01, name
    for name in ("unseen layout mAP", "unseen change mAP", "unseen exception mAP", "unseen structure mAP"):
        assert abs(metrics[name] - chance[name]) < 0.03, name


@pytest.fixture(scope="module")
def caption_run(pool, caption_encoder):
    """A method that embeds each image as its caption's MiniLM embedding, beside one outside the caption space."""
    captions = list(pool["caption"])
    embeddings = caption_encoder(captions, list(range(len(captions)))).float().cpu()
    embeddings = torch.stack([embeddings[captions.index(caption)] for caption in captions])
    methods = {
        "captions": LookupMethod(list(pool["image"]), embeddings, caption_space=True),
        "by layout": one_hot(pool, "layout"),
    }
    return run_relation_benchmark(methods, pool, caption_encoder=caption_encoder)


def test_relation_text_finds_its_images_in_the_caption_space(caption_run):
    metrics = caption_run.table["captions"]
    for name in (*TEXT_METRICS, "seen mAP", "unseen mAP"):
        assert metrics[name] == pytest.approx(1.0), name
    assert caption_run.text_similarities["captions"].shape == (4, 8)
    assert caption_run.text_relations == list(FIXTURE_RELATIONS)
    assert all(math.isnan(caption_run.table["by layout"][name]) for name in TEXT_METRICS)


def test_the_report_leads_with_unseen_relations(caption_run, tmp_path):
    path = write_relation_report(caption_run, tmp_path, ["captions", "by layout"], summary="VERDICT", notes="NOTES")
    report = path.read_text()
    headings = [
        "## Unseen relations",
        "VERDICT",
        "### Which factors transfer",
        "### Nearest neighbours of unseen-relation queries",
        "### A relation-text query for an unseen relation",
        "## Seen relations",
        "NOTES",
    ]
    positions = [report.index(heading) for heading in headings]
    assert positions == sorted(positions)
    assert report.count(f"| {CHANCE_ROW} |") == 3  # unseen, per-factor and seen tables
    assert "| unseen mAP | unseen recall@1 | unseen text mAP |" in report
    assert "| captions | 1.000 | 1.000 | 1.000 | 1.000 |" in report
    assert "| by layout | 0.750 | 0.500 | – | – |" in report
    assert '"{Object}s in a row"' in report  # the unseen relation's caption, the text query
    assert "- row, none, none, none → 1: same; 2: exception; " in report  # neighbours labelled by relation
    produced = {file.name for file in tmp_path.iterdir()}
    assert produced == {
        "report.md",
        "text_query.png",
        "neighbours_unseen_captions.png",
        "neighbours_unseen_by-layout.png",
        "neighbours_seen_captions.png",
        "neighbours_seen_by-layout.png",
    }
    grid = PIL.Image.open(tmp_path / "neighbours_unseen_by-layout.png")
    # two unseen relations, each row a thumbnail and the neighbours' labels: at most three lines, as
    # row/none/shape/none differs from column/none/none/pairs in layout, exception and structure
    label_strip = 3 * NEIGHBOUR_LABEL_LINE + 4
    assert grid.height == TITLE_HEIGHT + HEADER_HEIGHT + 2 * (THUMBNAIL + label_strip) + LEGEND_HEIGHT
    text_query = np.asarray(PIL.Image.open(tmp_path / "text_query.png").convert("RGB"))
    assert (text_query == (46, 160, 67)).all(-1).any()  # a green frame: a right image among the top five


def test_the_verdict_checks_the_issues_three_targets():
    table = {
        PIXEL_COSINE: {"unseen mAP": 0.10, "unseen text mAP": math.nan, "seen mAP": 0.2},
        COLOUR_HISTOGRAM: {"unseen mAP": 0.15, "unseen text mAP": math.nan, "seen mAP": 0.3},
        "relsim": {"unseen mAP": 0.31, "unseen text mAP": 0.49, "seen mAP": 0.80},
    }
    checks = relation_verdict(table, {"unseen mAP": 0.01}, "relsim")
    assert [check.met for check in checks] == [True, False, True]
    assert checks[0].bar == pytest.approx(0.30) and COLOUR_HISTOGRAM in checks[0].target
    assert checks[1].bar == 0.5 and checks[2].bar == 0.8
    assert checks[0].line() == (
        f"- **met**: unseen relations image→image mAP ≥ 2× the best look baseline's ({COLOUR_HISTOGRAM}): 0.310 "
        "(bar 0.300, chance 0.010)"
    )
    table["relsim"]["unseen mAP"] = 0.29
    assert not relation_verdict(table, {}, "relsim")[0].met


def test_seeds_summary_is_the_mean_and_sample_std_per_method_and_metric():
    tables = [
        {
            "relsim": {"unseen mAP": 0.2, "unseen text mAP": 0.5},
            "pixel": {"unseen mAP": 0.1, "unseen text mAP": math.nan},
        },
        {
            "relsim": {"unseen mAP": 0.4, "unseen text mAP": 0.5},
            "pixel": {"unseen mAP": 0.1, "unseen text mAP": math.nan},
        },
        {
            "relsim": {"unseen mAP": 0.3, "unseen text mAP": 0.8},
            "pixel": {"unseen mAP": 0.1, "unseen text mAP": math.nan},
        },
    ]
    summary = seeds_summary(tables)
    assert summary["relsim"]["unseen mAP"]["mean"] == pytest.approx(0.3)
    assert summary["relsim"]["unseen mAP"]["std"] == pytest.approx(0.1)  # sqrt((0.01 + 0.01 + 0) / 2)
    assert summary["relsim"]["unseen text mAP"]["mean"] == pytest.approx(0.6)
    assert summary["relsim"]["unseen text mAP"]["std"] == pytest.approx(math.sqrt(0.03))  # (0.01 + 0.01 + 0.04) / 2
    assert summary["pixel"]["unseen mAP"] == {"mean": pytest.approx(0.1), "std": pytest.approx(0.0)}
    assert math.isnan(summary["pixel"]["unseen text mAP"]["mean"])
    assert mean_table(summary)["relsim"] == {"unseen mAP": pytest.approx(0.3), "unseen text mAP": pytest.approx(0.6)}
    assert summary_rows(summary, ["unseen mAP", "unseen text mAP"]) == [
        {"method": "relsim", "unseen mAP": "0.300 ± 0.100", "unseen text mAP": "0.600 ± 0.173"},
        {"method": "pixel", "unseen mAP": "0.100 ± 0.000", "unseen text mAP": "–"},
    ]


def test_cli_scores_a_saved_relsim_on_the_relation_world(tmp_path):
    processor = build_tiny_processor(image_size=112, instruction=None, use_system_prompt=False)
    build_tiny_model(processor).save_pretrained(tmp_path / "tiny")
    processor.save_pretrained(tmp_path / "tiny")
    image_processor, encoder = build_tiny_encoder("clip", seed=0)
    encoder.save_pretrained(tmp_path / "clip")
    image_processor.save_pretrained(tmp_path / "clip")
    output = tmp_path / "report"
    models = ["--model", f"tiny={tmp_path / 'tiny'}", "--tuned-encoder", f"clip={tmp_path / 'clip'}"]
    run = main([*models, "--num-per-relation", "2", "--output", str(output)])
    assert set(run.table) == {PIXEL_COSINE, COLOUR_HISTOGRAM, "tiny", "clip"}
    assert all(0.0 <= run.table["clip"][name] <= 1.0 for name in METRICS)  # tuned encoders are in the caption space
    assert len(run.pool) == 814 and sum(run.pool["unseen"]) == 204
    tiny, pixels = run.table["tiny"], run.table[PIXEL_COSINE]
    assert all(0.0 <= tiny[name] <= 1.0 for name in METRICS)  # relsim is in the caption space: text metrics too
    assert math.isnan(pixels["unseen text mAP"]) and 0.0 < pixels["unseen mAP"] < 1.0
    report = (output / "report.md").read_text()
    assert (
        "**Targets for tiny** (" in report
        and "**Targets for clip** (" in report
        and "unseen relations text→image mAP ≥ 0.5" in report
    )
    assert {"neighbours_unseen_tiny.png", "neighbours_unseen_pixel-cosine.png", "text_query.png"} <= {
        file.name for file in output.iterdir()
    }
