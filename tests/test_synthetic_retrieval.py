import numpy as np
import PIL.Image
import pytest
import torch

from training.evaluation.methods.attribute_baselines import ColourHistogramMethod, PixelCosineMethod
from training.evaluation.methods.base import embed_image_list, pixel_hash
from training.evaluation.methods.build import MethodOptions, build_method
from training.evaluation.methods.relsim import RelSimMethod
from training.evaluation.reporting.neighbour_grids import (
    HEADER_HEIGHT,
    LABEL_WIDTH,
    LEGEND_HEIGHT,
    THUMBNAIL,
    TITLE_HEIGHT,
)
from training.evaluation.synthetic_cli import main, parse_models
from training.evaluation.synthetic_report import grid_rows, query_indices, similarity_space
from training.evaluation.synthetic_retrieval import (
    COLOUR_HISTOGRAM,
    PIXEL_COSINE,
    attribute_baselines,
    held_out_pool,
    run_benchmark,
    shared_look_attributes,
)
from training.tiny_backbone import build_tiny_model, build_tiny_processor


def test_baselines_give_unit_rows_with_the_expected_invariances():
    rng = np.random.default_rng(0)
    image = PIL.Image.fromarray(rng.integers(0, 256, (64, 48, 3), dtype=np.uint8))
    mirrored = image.transpose(PIL.Image.Transpose.FLIP_LEFT_RIGHT)
    pixels = embed_image_list(PixelCosineMethod(), [image, mirrored, image], batch_size=2)
    histograms = embed_image_list(ColourHistogramMethod(), [image, mirrored])
    assert pixels.shape == (3, 32 * 32 * 3) and histograms.shape == (2, 512)
    torch.testing.assert_close(pixels.norm(dim=-1), torch.ones(3))
    assert (pixels[0] @ pixels[2]).item() == pytest.approx(1.0)
    assert (pixels[0] @ pixels[1]).item() < 0.5
    assert (histograms[0] @ histograms[1]).item() == pytest.approx(1.0)


def test_the_colour_histogram_ignores_the_background_bin():
    red_on_white = PIL.Image.new("RGB", (20, 20), "white")
    red_on_white.paste((255, 0, 0), (0, 0, 5, 5))
    red_on_black = PIL.Image.new("RGB", (20, 20), "black")
    red_on_black.paste((255, 0, 0), (0, 0, 5, 5))
    histograms = embed_image_list(ColourHistogramMethod(), [red_on_white, red_on_black])
    assert (histograms[0] @ histograms[1]).item() == pytest.approx(1.0)  # only the red objects remain


def test_the_baselines_are_methods_of_the_paper_evaluation_too():
    assert isinstance(build_method("pixel", MethodOptions()), PixelCosineMethod)
    colour = build_method("colour-histogram", MethodOptions())
    assert colour.cache_identity() == {"method": "colour-histogram", "metric": "cosine", "bins": 8}


def test_in_memory_images_get_content_hashes():
    first = PIL.Image.new("RGB", (4, 4), "red")
    assert pixel_hash(first) == pixel_hash(first.copy()) != pixel_hash(PIL.Image.new("RGB", (4, 4), "blue"))
    assert len(pixel_hash(first)) == 32


def test_relsim_method_takes_a_model_in_memory():
    processor = build_tiny_processor(image_size=112, instruction=None, use_system_prompt=False)
    model = build_tiny_model(processor)
    images = [PIL.Image.new("RGB", (112, 112), colour) for colour in ("red", "green", "blue")]
    method = RelSimMethod(model=model, processor=processor)
    torch.testing.assert_close(
        embed_image_list(method, images, batch_size=2), model.embed_images(images, processor), atol=1e-5, rtol=0
    )
    with pytest.raises(ValueError, match="needs model_name_or_path"):
        RelSimMethod(model=model)


@pytest.fixture(scope="module")
def benchmark_run():
    pool = held_out_pool(4, seed=1, image_size=112)
    processor = build_tiny_processor(image_size=112, instruction=None, use_system_prompt=False)
    methods = {**attribute_baselines(), "relsim": RelSimMethod(model=build_tiny_model(processor), processor=processor)}
    return run_benchmark(methods, pool)


def test_the_benchmark_scores_every_method_on_held_out_attributes(benchmark_run):
    assert set(benchmark_run.table) == {PIXEL_COSINE, COLOUR_HISTOGRAM, "relsim"}
    for metrics in benchmark_run.table.values():
        assert set(metrics) == {"recall@1", "recall@5", "mAP", "attribute trap"}
        assert all(0.0 <= value <= 1.0 for value in metrics.values())
    assert benchmark_run.similarities["relsim"].shape == (32, 32)


def test_grid_rows_name_each_family_and_mark_right_neighbours(benchmark_run):
    queries = query_indices(benchmark_run)
    rows = grid_rows(benchmark_run, PIXEL_COSINE, queries, k=5)
    assert [row.label for row in rows] == [
        "progression", "odd one out", "mirror symmetry", "nesting", "mosaic", "counting", "radial", "stacking"
    ]  # fmt: skip
    similarity, families = benchmark_run.similarities[PIXEL_COSINE], benchmark_run.pool["family"]
    for row, query in zip(rows, queries, strict=True):
        scores = similarity[query].clone()
        scores[query] = float("-inf")
        expected = [families[index] == families[query] for index in scores.topk(5).indices.tolist()]
        assert row.relevant == expected and row.correct == sum(expected)


def test_shared_look_attributes_count_the_generator_attributes(benchmark_run):
    pool = benchmark_run.pool
    shared = shared_look_attributes(pool, 0)
    for index in (0, 5, 17):
        expected = sum(pool[index][name] == pool[0][name] for name in ("shape", "colour", "texture", "background"))
        assert shared[index] == expected
    assert shared[0] == 4


def test_the_similarity_space_spreads_over_attribute_counts_and_carries_the_query(benchmark_run):
    space = similarity_space(benchmark_run, ["relsim", PIXEL_COSINE], query=0)
    assert len(space.attribute) == 31 and len(set(space.attribute.tolist())) >= 3  # not two stripes
    assert space.relevant.sum() == 3  # the three other progression images
    assert np.array_equal(np.asarray(space.query_image), np.asarray(benchmark_run.pool["image"][0]))
    torch.testing.assert_close(space.relational["relsim"], benchmark_run.similarities["relsim"][0, 1:])


def test_cli_writes_every_report_file(tmp_path):
    processor = build_tiny_processor(image_size=112, instruction=None, use_system_prompt=False)
    build_tiny_model(processor).save_pretrained(tmp_path / "tiny")
    processor.save_pretrained(tmp_path / "tiny")
    run = main(
        [
            *("--world", "families", "--model", f"tiny-relsim={tmp_path / 'tiny'}"),
            *("--num-per-family", "3", "--output", str(tmp_path / "r")),
        ]
    )
    assert set(run.table) == {PIXEL_COSINE, COLOUR_HISTOGRAM, "tiny-relsim"}
    produced = {path.name for path in (tmp_path / "r").iterdir()}
    assert produced == {
        "report.md",
        "neighbours_tiny-relsim.png",
        "neighbours_pixel-cosine.png",
        "similarity_space.png",
    }
    report = (tmp_path / "r" / "report.md").read_text()
    assert "| tiny-relsim |" in report and f"| {COLOUR_HISTOGRAM} |" in report and "held-out images" in report
    assert "What relsim is" in report and "query token" in report and "anonymous caption" in report
    for metric in ("**recall@1**", "**recall@5**", "**mAP**", "**attribute trap**"):
        assert metric in report
    assert "**tiny-relsim**: " in report and "progression: " in report
    grid = PIL.Image.open(tmp_path / "r" / "neighbours_tiny-relsim.png").convert("RGB")
    assert grid.size == (
        LABEL_WIDTH + 6 * THUMBNAIL + 8 + 6,
        TITLE_HEIGHT + HEADER_HEIGHT + 8 * THUMBNAIL + LEGEND_HEIGHT,
    )
    pixels = np.asarray(grid)
    label_column = pixels[TITLE_HEIGHT + HEADER_HEIGHT :, :LABEL_WIDTH]
    assert (label_column < 128).any(), "row labels are drawn at the left"
    assert (pixels[TITLE_HEIGHT : TITLE_HEIGHT + HEADER_HEIGHT, LABEL_WIDTH:] < 128).any(), "column headers"
    legend = pixels[-LEGEND_HEIGHT:]
    for colour in ((41, 98, 255), (46, 160, 67), (214, 48, 49)):
        assert (legend == colour).all(-1).any(), f"legend swatch {colour}"


def test_model_names_default_to_the_folder():
    assert parse_models(["runs/final", "base=Qwen/relsim"]) == {"final": "runs/final", "base": "Qwen/relsim"}


def test_describe_grid_names_the_rows_where_every_neighbour_is_wrong():
    from training.evaluation.reporting.neighbour_grids import GridRow, describe_grid

    image = PIL.Image.new("RGB", (8, 8))
    rows = [
        GridRow("progression", image, [image] * 5, [True, True, False, True, True]),
        GridRow("mirror symmetry", image, [image] * 5, [False] * 5),
    ]
    assert describe_grid(rows) == (
        "Every neighbour is wrong in 1 row (mirror symmetry: 0 of 5 neighbours share the relation). "
        "Neighbours that share the relation, row by row: progression: 4 of 5; mirror symmetry: 0 of 5."
    )
    rows[1].relevant[0] = True
    assert describe_grid(rows).startswith("No row is entirely wrong.")
