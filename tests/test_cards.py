import json

from helpers import pattern_dataset
from huggingface_hub import ModelCard

from hub_cards.render import PAPER_EVALUATION, render_model_card
from training.trainer.train import main


def test_model_card_yaml_and_usage():
    card = render_model_card("relsim/relsim-qwen2.5-vl-7b", datasets_used=("relsim/relsim-data",))
    parsed = ModelCard(str(card))
    data = parsed.data.to_dict()
    assert data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "image-feature-extraction"
    assert data["base_model"] == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert data["datasets"] == ["relsim/relsim-data"]
    assert data["license"] == "cc-by-nc-sa-4.0"
    assert "relational-similarity" in data["tags"]
    assert 'AutoModel.from_pretrained("relsim/relsim-qwen2.5-vl-7b", trust_remote_code=True' in parsed.text
    assert 'AutoProcessor.from_pretrained("relsim/relsim-qwen2.5-vl-7b", trust_remote_code=True)' in parsed.text
    for method, score in PAPER_EVALUATION.items():
        assert f"| {method} | {score} |" in parsed.text
    assert "r=16, alpha=32" in parsed.text and "## Limits" in parsed.text


def test_model_card_quotes_dino_from_the_papers_text_and_notes_the_plot():
    text = ModelCard(str(render_model_card("relsim/relsim"))).text
    assert "| DINO | 5.14 |" in text
    assert "4.68" in text and "plotting script" in text


def test_training_run_writes_its_card(tmp_path):
    dataset_dir = tmp_path / "patterns"
    pattern_dataset(24, seed=0).train_test_split(test_size=8, seed=0).save_to_disk(str(dataset_dir))
    arguments = ["--tiny_backbone", "true", "--use_lora", "false", "--instruction", "", "--use_system_prompt", "false"]
    arguments += ["--image_size", "112", "--dataset_name", str(dataset_dir), "--eval_split", "test"]
    arguments += ["--output_dir", str(tmp_path / "run"), "--max_steps", "2", "--per_device_train_batch_size", "8"]
    arguments += ["--use_cpu", "true", "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true"]
    exported = main(arguments)
    card = ModelCard.load(exported / "README.md")
    assert card.data.to_dict()["pipeline_tag"] == "image-feature-extraction"
    assert "tiny random Qwen2.5-VL, trained from scratch" in card.text
    recall = json.loads((tmp_path / "run" / "eval_results.json").read_text())["eval_recall@1"]
    assert f"| recall@1 | {round(recall, 4)} |" in card.text
