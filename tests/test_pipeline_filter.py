"""The relational filter: SFT rows and class balance, P(yes) scoring with unreadable images reported, evaluation
against labels with hand-computed numbers, recipes, and a short synthetic training run."""

import json
import logging
from pathlib import Path

import datasets
import numpy as np
import pytest

from tests.conftest import random_image
from training.pipeline.filter.arguments import load_filter_recipe
from training.pipeline.filter.evaluation import evaluate_filter
from training.pipeline.filter.question import RELATIONAL_QUESTION
from training.pipeline.filter.rows import balance_rows, class_weights, filter_label_rows, filter_rows
from training.pipeline.filter.scoring import score_images
from training.pipeline.filter.synthetic import TINY_FILTER_RECIPE, train_synthetic_filter
from training.vlm.tiny import build_tiny_chat


CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"


@pytest.fixture(scope="module")
def chat():
    return build_tiny_chat(seed=0)


def test_filter_rows_ask_the_fixed_question_and_answer_yes_or_no():
    images = [random_image(32, 32, seed) for seed in range(3)]
    rows = filter_rows(images, [1, "not_relational", False])
    assert [row["answer"] for row in rows] == ["Yes", "No", "No"]
    assert all(
        row["prompt"] == RELATIONAL_QUESTION and row["images"] == [image]
        for row, image in zip(rows, images, strict=True)
    )
    with pytest.raises(ValueError, match="label 1 is 'maybe'"):
        filter_rows(images[:2], [1, "maybe"])


def test_filter_label_rows_read_the_downloaded_dataset_and_skip_missing_images(tmp_path, caplog):
    image_file = tmp_path / "a.png"
    random_image(40, 40, 0).save(image_file)
    dataset = datasets.Dataset.from_dict(
        {
            "image_hash": ["a" * 32, "b" * 32, "c" * 32],
            "label": [1, 0, 0],
            "image": [str(image_file), None, str(image_file)],
        },
        features=datasets.Features(
            {
                "image_hash": datasets.Value("string"),
                "label": datasets.ClassLabel(names=["not_relational", "relational"]),
                "image": datasets.Image(),
            }
        ),
    )
    with caplog.at_level(logging.WARNING):
        rows = filter_label_rows(dataset)
    assert [row["answer"] for row in rows] == ["Yes", "No"]
    assert "1 labelled images have no image" in caplog.text and "b" * 32 in caplog.text


def test_class_weights_give_both_classes_half_the_loss():
    rows = [{"answer": "Yes"}] + [{"answer": "No"}] * 8  # the paper's 1:8
    weights = class_weights(rows)
    assert weights == pytest.approx({"Yes": 4.5, "No": 9 / 16})
    weighted = balance_rows(rows, "weight")
    assert sum(row["weight"] for row in weighted) == pytest.approx(9.0)
    assert sum(row["weight"] for row in weighted if row["answer"] == "Yes") == pytest.approx(4.5)
    oversampled = balance_rows(rows, "oversample")
    assert [row["answer"] for row in oversampled].count("Yes") == 8 and len(oversampled) == 16


def test_scores_are_p_yes_and_unreadable_images_are_reported_not_replaced(chat, tmp_path, caplog):
    good = [random_image(64, 48, 1), random_image(50, 70, 2)]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    failures = []
    with caplog.at_level(logging.WARNING):
        scores = score_images(chat, [good[0], str(broken), good[1]], batch_size=2, failures=failures)
    expected = chat.answer_probabilities([([image], RELATIONAL_QUESTION) for image in good])[:, 0]
    assert np.isnan(scores[1])
    np.testing.assert_allclose(scores[[0, 2]], expected.numpy(), atol=1e-6)
    assert [(failure.index, failure.source) for failure in failures] == [(1, str(broken))]
    assert "broken.jpg" in caplog.text and "1 of 3 images could not be read" in caplog.text


def test_evaluate_filter_on_hand_computed_scores(tmp_path):
    scores = [0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, float("nan")]
    labels = [1, 1, 0, 1, 0, 0, 1, 1]
    report = evaluate_filter(scores, labels, tmp_path)
    # thresholds 0.8 and 0.6 both agree on 5 of 7: keep {0.9, 0.8} -> tp 2, fp 0, fn 2; ties go to the higher one
    assert report.best_agreement_threshold == pytest.approx(0.8)
    assert report.threshold == pytest.approx(0.8)
    assert report.agreement == pytest.approx(5 / 7)
    assert (report.precision, report.recall, report.f1) == pytest.approx((1.0, 0.5, 2 / 3))
    # AUC: of the 4 x 3 positive/negative pairs the positive scores higher in 8 (0.9: 3, 0.8: 3, 0.6: 2, 0.2: 0)
    assert report.roc_auc == pytest.approx(8 / 12)
    assert report.agreement_at_half == pytest.approx(5 / 7)  # keep {0.9, 0.8, 0.7, 0.6}: tp 3, tn 2
    assert (report.num_images, report.num_relational, report.num_unscored) == (8, 4, 1)
    assert (tmp_path / "pr_curve.png").stat().st_size > 1000
    assert json.loads((tmp_path / "filter_report.json").read_text())["roc_auc"] == pytest.approx(8 / 12)

    targeted = evaluate_filter(scores, labels, tmp_path / "target", target_precision=0.7)
    # precision at 0.6 is 3/4, at 0.2 is 4/7 < 0.7: the lowest threshold reaching 0.7 is 0.6
    assert targeted.target_precision_threshold == pytest.approx(0.6) and targeted.threshold == pytest.approx(0.6)
    assert (targeted.precision, targeted.recall) == pytest.approx((0.75, 0.75))


def test_evaluate_filter_names_bad_labels(tmp_path):
    with pytest.raises(ValueError, match="must be 0"):
        evaluate_filter([0.1, 0.2], [0, 2], tmp_path)
    with pytest.raises(ValueError, match="two vectors of one length"):
        evaluate_filter([0.1, 0.2], [0], tmp_path)


@pytest.mark.parametrize("recipe", ["filter-tiny-cpu.yaml", "filter-qwen2.5-vl-7b.yaml"])
def test_filter_recipes_load(recipe):
    on_cpu = {"bf16": False} if recipe.startswith("filter-qwen") else {}  # transformers refuses bf16 without a GPU
    model_arguments, sft, settings = load_filter_recipe(CONFIGS / recipe, on_cpu)
    assert sft.remove_unused_columns is False and settings.balance == "weight"
    if recipe.startswith("filter-qwen"):
        assert (sft.use_lora, sft.lora_r, sft.lora_alpha, sft.lora_dropout) == (True, 16, 32, 0.05)
        assert sft.lora_target_modules == ["q_proj", "v_proj"]
        assert model_arguments.model_name_or_path == "Qwen/Qwen2.5-VL-7B-Instruct"
    else:
        assert model_arguments.tiny_pretrained and not sft.use_lora
        assert sft.lm_head_learning_rate_multiplier > 1


def test_a_short_synthetic_run_writes_both_reports_and_the_model(tmp_path):
    overrides = {
        "max_steps": 2,
        "per_device_train_batch_size": 4,
        "synthetic_positives_per_family": 1,
        "synthetic_negatives": 8,
        "synthetic_eval_positives_per_family": 1,
        "synthetic_eval_negatives": 8,
        "warmup_steps": 0,
        "logging_steps": 1,
    }
    chat, run = train_synthetic_filter(tmp_path, TINY_FILTER_RECIPE, overrides)
    summary = json.loads((tmp_path / "synthetic_filter.json").read_text())
    assert summary["trained"]["num_images"] == 16 and summary["num_train_relational"] == 8
    assert (tmp_path / "trained" / "pr_curve.png").is_file() and (tmp_path / "model" / "model.safetensors").is_file()
    assert run.trained.roc_auc == summary["trained"]["roc_auc"]
    assert not chat.model.training


def test_a_short_run_on_the_compositional_world_reports_seen_and_unseen_relations_apart(tmp_path):
    overrides = {
        "max_steps": 1,
        "per_device_train_batch_size": 4,
        "synthetic_world": "relations",
        "synthetic_max_relations": 6,
        "synthetic_positives_per_family": 1,
        "synthetic_negatives": 8,
        "synthetic_eval_positives_per_family": 2,
        "synthetic_eval_negatives": 10,
        "warmup_steps": 0,
        "logging_steps": 1,
    }
    _, run = train_synthetic_filter(tmp_path, TINY_FILTER_RECIPE, overrides)
    assert (run.num_train_relational, run.num_train_not_relational) == (6, 8)
    # each held-out set: two images of each of its 6 relations, beside as many negatives (at most 10)
    assert (run.trained.num_images, run.trained.num_relational) == (12 + 10, 12)
    assert (run.trained_unseen_relations.num_images, run.trained_unseen_relations.num_relational) == (22, 12)
    assert run.untrained_unseen_relations.num_images == 22
    summary = json.loads((tmp_path / "synthetic_filter.json").read_text())
    assert summary["trained_unseen_relations"]["agreement"] == run.trained_unseen_relations.agreement
    assert (tmp_path / "trained" / "unseen_relations" / "filter_report.json").is_file()


def test_an_unknown_synthetic_world_is_refused_by_name():
    with pytest.raises(ValueError, match="synthetic_world must be one of \\('families', 'relations'\\), got 'shapes'"):
        load_filter_recipe(TINY_FILTER_RECIPE, {"synthetic_world": "shapes"})
