import json

from helpers import pattern_dataset
from huggingface_hub import ModelCard

from hub_cards.render import PAPER_EVALUATION, render_model_card
from training.trainer.arguments import DataArguments, ModelArguments, RelSimTrainingArguments
from training.trainer.model_card import run_model_card, save_run_settings
from training.trainer.model_factory import save_model_arguments
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


def test_the_paper_card_keeps_its_setting():
    text = ModelCard(str(render_model_card("relsim/relsim"))).text
    assert "| method | relational similarity (GPT-4o judge, 0-10) |" in text
    assert "One 448x448 centre crop per image" in text and "web images filtered for relational content" in text
    assert 'dtype=torch.bfloat16).to("cuda")' in text and "device_map" not in text  # no accelerate needed


def test_training_run_writes_its_card(tmp_path):
    dataset_dir = tmp_path / "patterns"
    pattern_dataset(24, seed=0).train_test_split(test_size=8, seed=0).save_to_disk(str(dataset_dir))
    arguments = ["--tiny_backbone", "true", "--use_lora", "false", "--instruction", "", "--use_system_prompt", "false"]
    arguments += ["--image_size", "112", "--dataset_name", str(dataset_dir), "--eval_split", "test"]
    arguments += ["--output_dir", str(tmp_path / "tiny-patterns"), "--max_steps", "2", "--per_device_train_batch_size"]
    arguments += ["8", "--use_cpu", "true", "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true"]
    exported = main(arguments)
    card = ModelCard.load(exported / "README.md")
    data = card.data.to_dict()
    assert data["pipeline_tag"] == "image-feature-extraction"
    assert "base_model" not in data  # a tiny random backbone is no hub model
    assert card.text.startswith("\n# tiny-patterns\n")  # the run's name, not "final"
    assert "a tiny Qwen2.5-VL with random weights (`tiny` preset, no pretrained backbone)" in card.text
    assert "one 112x112 centre crop per image" in card.text and "448" not in card.text
    assert "no system prompt, no instruction" in card.text
    assert "web images" not in card.text
    assert "16 images with anonymous captions from the `train` split of `patterns`" in card.text
    assert str(tmp_path) not in card.text  # local paths stay private
    assert "| steps | 2 optimizer steps |" in card.text
    assert "| adapters | none: full training, vision tower frozen |" in card.text
    assert "Held-out split: the `test` split of `patterns` (8 images), evaluated at step 2." in card.text
    assert "| metric | value |" in card.text
    recall = json.loads((tmp_path / "tiny-patterns" / "eval_results.json").read_text())["eval_recall@1"]
    assert f"| image -> caption recall@1 | {round(recall, 4)} |" in card.text


def test_a_run_from_a_hub_backbone_declares_it(tmp_path, model):
    run_dir = tmp_path / "relsim-3b"
    save_model_arguments(ModelArguments(backbone="Qwen/Qwen2.5-VL-3B-Instruct"), run_dir)
    data = DataArguments(dataset_name="someone/relational-data", eval_split="test")
    training = RelSimTrainingArguments(output_dir=str(run_dir), max_steps=100, warmup_steps=10, learning_rate=1e-4)
    save_run_settings(run_dir, data, training, train_examples=1000, eval_examples=200)
    card = run_model_card(run_dir, model.config, step=100)
    metadata = card.data.to_dict()
    assert metadata["base_model"] == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert metadata["datasets"] == ["someone/relational-data"]
    assert card.text.startswith("\n# relsim-3b\n")
    assert "1,000 images with anonymous captions from the `train` split of `someone/relational-data`" in card.text
    assert "The model at step 100 was not evaluated on the held-out split (the `test` split of" in card.text
    assert "| metric |" not in card.text


def test_a_card_of_the_relation_world_names_relations_and_the_unseen_ones():
    from training.trainer.model_card import _held_out, _training_data

    data = {"synthetic_world": "relations", "synthetic_num_per_family": 60, "synthetic_eval_num_per_family": 2}
    data |= {"synthetic_image_size": 112, "synthetic_seed": 0}
    trained_on, limit, _ = _training_data(data, 18300)
    assert trained_on.startswith("18,300 synthetic images of the compositional relational world (60 per training")
    assert "102 of them held out of training" in limit and "famil" not in trained_on + limit
    held_out = _held_out(data, 814)
    assert held_out == (
        "synthetic images in held-out shapes and colours of all 407 relations, the 102 unseen in training included, "
        "2 per relation (814 images)"
    )
    families = _training_data({**data, "synthetic_world": "families"}, 480)[0]
    assert "60 per relation family" in families
