"""Analogy scoring (`python -m training.evaluation analogy`): on synthetic triplets with a known answer a trained
relsim tells a kept relation from a broken one; CLIP-I and LPIPS are reported beside it (random-weight stand-ins
offline); bad rows are named by file and line and the good ones still scored."""

import json

import PIL.Image
import pytest
from evaluation_helpers import MeanColourMethod, save_tiny_clip
from sklearn.metrics import roc_auc_score

from training.evaluation.__main__ import main as evaluation_cli
from training.evaluation.analogy import per_model_table, read_triplets, score_triplets
from training.evaluation.analogy_synthetic import BROKEN, KEPT, write_synthetic_triplets
from training.evaluation.methods.relsim import RelSimMethod


STAND_IN = "random-weight stand-in (offline)"


def kept_vs_broken_auc(rows, column):
    """AUC of `column` for telling relation-kept generations (positive) from relation-broken ones."""
    labels = [row["model"] == KEPT for row in rows]
    return roc_auc_score(labels, [row[column] for row in rows])


@pytest.fixture(scope="module")
def synthetic_triplets(tmp_path_factory):
    return write_synthetic_triplets(tmp_path_factory.mktemp("analogy"), per_family=3)


def test_trained_relsim_separates_kept_from_broken_relations_where_attribute_metrics_cannot(
    trained_tiny_relsim, synthetic_triplets, tmp_path
):
    triplets, bad = read_triplets(synthetic_triplets)
    assert len(triplets) == 48 and bad == []
    clip_folder = save_tiny_clip(tmp_path / "tiny-clip")
    output = tmp_path / "report"
    evaluation_cli(["analogy", "--triplets", str(synthetic_triplets), "--model", str(trained_tiny_relsim.path),
                    "--metrics", "relsim", "clip-i", "--clip-model", str(clip_folder), "--device", "cpu",
                    "--note", f"clip-i={STAND_IN}", "--output", str(output)])  # fmt: skip
    rows = [json.loads(line) for line in (output / "scores.jsonl").read_text().splitlines()]
    trained = kept_vs_broken_auc(rows, "relsim/source-generated")
    untrained_model, processor = trained_tiny_relsim.untrained()
    untrained_rows = score_triplets(triplets, {"relsim": RelSimMethod(model=untrained_model, processor=processor)})
    untrained = kept_vs_broken_auc(untrained_rows, "relsim/source-generated")
    clip = kept_vs_broken_auc(rows, "clip-i/source-generated")
    print(f"AUC kept vs broken: relsim trained {trained:.3f}, untrained {untrained:.3f}, clip-i stand-in {clip:.3f}")
    assert trained >= 0.7  # measured 0.741 with the shared fixture model (untrained 0.547, CLIP-I stand-in 0.410)
    assert trained > untrained + 0.1
    # the broken generation keeps the source's objects: an attribute metric prefers it
    assert clip < trained

    table = per_model_table(rows)
    assert [(model, entry["triplets"]) for model, entry in table.items()] == [(KEPT, 24), (BROKEN, 24)]
    assert table[KEPT]["relsim/source-generated"] > table[BROKEN]["relsim/source-generated"]
    report = (output / "report.md").read_text()
    assert f"clip-i source-generated (cosine) [{STAND_IN}]" in report
    for model in (KEPT, BROKEN):
        entry = table[model]
        assert (f"| {model} | 24 | {entry['relsim/source-generated']:.4f} | {entry['clip-i/source-generated']:.4f} |"
                in report)  # fmt: skip
    saved = json.loads((output / "report.json").read_text())
    assert saved["notes"] == {"clip-i": STAND_IN} and saved["left_out"] == []
    assert saved["models"][KEPT]["relsim/source-generated"] == pytest.approx(table[KEPT]["relsim/source-generated"])
    plot = PIL.Image.open(output / "relational_vs_attribute.png")
    assert plot.format == "PNG" and plot.width > 400


def write_csv(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_rows_are_named_by_file_and_line_and_the_rest_is_scored(tmp_path):
    for name, colour in (("a.png", (255, 0, 0)), ("b.png", (250, 10, 0)), ("c.png", (0, 0, 255))):
        PIL.Image.new("RGB", (32, 32), colour).save(tmp_path / name)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    triplets_file = write_csv(
        tmp_path / "triplets.csv",
        [
            "model,source,generated,reference",
            "editor-a,a.png,b.png,c.png",  # line 2: fine, with a reference
            "editor-a,a.png,missing.png,",  # line 3: no such file
            "editor-b,a.png,broken.png,",  # line 4: not an image
            "editor-b,a.png,,",  # line 5: no generated image
            "editor-b,c.png,a.png,",  # line 6: fine
            "editor-b,a.png,b.png,c.png,extra",  # line 7: an unquoted comma
        ],
    )
    triplets, bad = read_triplets(triplets_file)
    assert [str(row) for row in bad] == [
        f"{triplets_file}:3: generated: missing.png: file not found",
        f"{triplets_file}:4: generated: broken.png: " + bad[1].reason.split(": ", 1)[1],
        f"{triplets_file}:5: generated: missing",
        f"{triplets_file}:7: <line>: more fields than the header",
    ]
    assert "broken.png" in str(bad[1]) and bad[1].field == "generated"
    rows = score_triplets(triplets, {"mean-colour": MeanColourMethod()})
    assert [(row["model"], row["where"]) for row in rows] == [
        ("editor-a", f"{triplets_file}:2"),
        ("editor-b", f"{triplets_file}:6"),
    ]
    assert rows[0]["mean-colour/source-generated"] > rows[0]["mean-colour/reference-generated"]
    assert "mean-colour/reference-generated" not in rows[1]
    table = per_model_table(rows)
    assert table["editor-b"]["mean-colour/reference-generated"] is None


def test_a_triplet_file_without_the_required_columns_is_refused_at_its_header(tmp_path):
    path = write_csv(tmp_path / "triplets.csv", ["input,output", "a.png,b.png"])
    with pytest.raises(ValueError, match=r"triplets.csv:1: the header input,output lacks source, generated"):
        read_triplets(path)
    with pytest.raises(ValueError, match=r"\.csv \(with a header\) or \.jsonl"):
        read_triplets(write_csv(tmp_path / "triplets.txt", ["a"]))


def test_jsonl_triplets_report_bad_lines_too(tmp_path):
    PIL.Image.new("RGB", (16, 16), (1, 2, 3)).save(tmp_path / "a.png")
    path = tmp_path / "triplets.jsonl"
    path.write_text('{"source": "a.png", "generated": "a.png"}\n{"source": "a.png"\n["a.png"]\n')
    triplets, bad = read_triplets(path)
    assert [(t.model, t.where) for t in triplets] == [("generated", f"{path}:1")]
    assert [(row.file, row.line, row.field) for row in bad] == [(str(path), 2, "<line>"), (str(path), 3, "<line>")]


@pytest.mark.torchvision
def test_lpips_column_is_the_lpips_network_distance(synthetic_triplets):
    import torch

    from training.evaluation.embed import read_image
    from training.evaluation.methods.perceptual import LpipsMethod

    torch.manual_seed(0)
    method = LpipsMethod(net="alex", image_size=64, pretrained_backbone=False)
    triplets = read_triplets(synthetic_triplets)[0][:4]
    rows = score_triplets(triplets, {"lpips": method})
    sources = method.preprocess([read_image(t.source)[0] for t in triplets])
    generated = method.preprocess([read_image(t.generated)[0] for t in triplets])
    with torch.no_grad():
        expected = method.model(sources, generated).flatten()
    torch.testing.assert_close(torch.tensor([row["lpips/source-generated"] for row in rows]), expected, rtol=1e-4,
                               atol=1e-6)  # fmt: skip
