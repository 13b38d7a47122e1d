import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from helpers import pattern_dataset
from transformers import AutoModel

from modeling_relsim import RelSimModel, RelSimProcessor
from training.trainer.arguments import RelSimTrainingArguments
from training.trainer.export import export_checkpoint
from training.trainer.objectives.arguments import ObjectiveTrainingArguments
from training.trainer.objectives.state_file import OBJECTIVE_STATE_FILE
from training.trainer.train import main, parse_arguments, parse_into


PAPER_RECIPE = "training/configs/relsim-qwen2.5-vl-7b.yaml"


def test_the_paper_recipe_holds_the_paper_numbers():
    recipe = yaml.safe_load(Path(PAPER_RECIPE).read_text())
    model, _, training = parse_arguments(["--config", PAPER_RECIPE, "--bf16", "false"])
    assert model.backbone == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert (model.use_lora, model.lora_r, model.lora_alpha, model.lora_dropout) == (True, 16, 32, 0.05)
    assert model.lora_target_modules == ["q_proj", "v_proj"]
    assert model.relsim_settings() == {
        "instruction": None,
        "use_system_prompt": True,
        "image_size": 448,
        "crop": "center",
    }
    assert (training.learning_rate, training.weight_decay, training.max_grad_norm) == (1e-4, 0.01, 1.0)
    assert training.lr_scheduler_type == "cosine" and training.max_steps == 15000
    assert recipe["bf16"] is True
    assert training.per_device_train_batch_size * 8 == 256  # 8 GPUs, gathered into one contrastive batch


def test_overrides_win_and_unknown_keys_are_named(tmp_path):
    _, _, training = parse_arguments(["--config", PAPER_RECIPE, "--bf16", "false", "--learning_rate", "3e-5"])
    assert training.learning_rate == 3e-5
    bad = tmp_path / "bad.yaml"
    bad.write_text("backbone: x\nlearning_rte: 0.1\n")
    with pytest.raises(ValueError, match="learning_rte"):
        parse_arguments(["--config", str(bad)])
    null_instruction = tmp_path / "null.yaml"
    null_instruction.write_text("instruction: null\n")
    with pytest.raises(ValueError, match='instruction: ""'):
        parse_arguments(["--config", str(null_instruction)])


@pytest.fixture
def tiny_run(tmp_path):
    dataset_dir = tmp_path / "patterns"
    splits = pattern_dataset(96, seed=3).train_test_split(test_size=32, seed=0)
    splits.save_to_disk(str(dataset_dir))
    recipe = {
        "tiny_backbone": True,
        "use_lora": True,
        "lora_r": 4,
        "lora_alpha": 8,
        "instruction": "",
        "use_system_prompt": False,
        "image_size": 112,
        "dataset_name": str(dataset_dir),
        "eval_split": "test",
        "output_dir": str(tmp_path / "run"),
        "per_device_train_batch_size": 16,
        "max_steps": 50,
        "learning_rate": 1e-3,
        "logging_steps": 2,
        "save_strategy": "steps",
        "save_steps": 2,
        "use_cpu": True,
        "report_to": "none",
        "disable_tqdm": True,
    }
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(recipe))
    return config, tmp_path


def test_cli_trains_evaluates_and_exports(tiny_run):
    config, work = tiny_run
    exported = main(["--config", str(config), "--max_steps", "4"])
    assert exported == work / "run" / "final"
    state = json.loads((work / "run" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    evaluation = json.loads((work / "run" / "eval_results.json").read_text())
    assert evaluation["eval_recall@5"] == 1.0 and 0.0 <= evaluation["eval_recall@1"] <= 1.0
    assert json.loads((work / "run" / "train_results.json").read_text())["train_loss"] > 0
    model = AutoModel.from_pretrained(exported, trust_remote_code=True)
    processor = RelSimProcessor.from_pretrained(exported)
    assert isinstance(model, RelSimModel) and processor.instruction is None
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert math.isfinite(model.logit_scale.item())

    from_checkpoint = export_checkpoint(work / "run" / "checkpoint-4", work / "exported-again")
    again = RelSimModel.from_pretrained(from_checkpoint)
    for (name, expected), (_, actual) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        torch.testing.assert_close(actual, expected, atol=1e-6, rtol=0, msg=name)
    card = (exported / "README.md").read_text()
    assert (from_checkpoint / "README.md").read_text() == card  # export writes the trainer's card
    assert "| image -> caption recall@5 | 1.0 |" in card
    for folder in (exported, from_checkpoint):  # the trainer's final/ and export both load in Sentence Transformers
        assert (folder / "modules.json").is_file() and (folder / "relsim_sentence_transformers.py").is_file()

    from_run_folder = export_checkpoint(work / "run", work / "exported-from-run")  # its last complete checkpoint
    assert (from_run_folder / "README.md").read_text() == card
    assert (from_run_folder / "model.safetensors").read_bytes() == (from_checkpoint / "model.safetensors").read_bytes()


def test_a_recipe_or_flag_with_an_option_field_gets_the_options_arguments(tmp_path):
    _, _, plain = parse_arguments(["--config", PAPER_RECIPE, "--bf16", "false"])
    assert type(plain) is RelSimTrainingArguments and not hasattr(plain, "caption_queue_size")
    _, _, flagged = parse_arguments(["--config", PAPER_RECIPE, "--bf16", "false", "--caption-queue-size", "64"])
    assert type(flagged) is ObjectiveTrainingArguments and flagged.caption_queue_size == 64
    assert flagged.extra_objectives() == ["caption_queue_size"] and flagged.learning_rate == 1e-4
    recipe = tmp_path / "options.yaml"
    recipe.write_text("tiny_backbone: true\noutput_dir: out\ndistill_alpha: 0.4\nsinkhorn_iterations: 5\n")
    _, _, options = parse_arguments(["--config", str(recipe), "--num_prototypes=4"])
    assert type(options) is ObjectiveTrainingArguments
    assert (options.distill_alpha, options.sinkhorn_iterations, options.num_prototypes) == (0.4, 5, 4)


def test_option_fields_given_to_the_papers_arguments_are_refused_by_name():
    arguments = [
        "--tiny_backbone",
        "true",
        "--output_dir",
        "out",
        "--intra-image-weight",
        "0.5",
        "--ema_momentum",
        "0.9",
    ]
    with pytest.raises(ValueError, match=r"^intra_image_weight, ema_momentum: objective option fields, which "
                       r"RelSimTrainingArguments does not have; .* ObjectiveTrainer"):  # fmt: skip
        parse_into(arguments, RelSimTrainingArguments)
    assert parse_into(arguments, ObjectiveTrainingArguments)[2].intra_image_weight == 0.5


def test_cli_trains_an_options_recipe_with_the_options_trainer_and_a_plain_run_refuses_its_state(tiny_run):
    config, work = tiny_run
    main(["--config", str(config), "--max_steps", "2", "--caption_queue_size", "32", "--eval_split", ""])
    checkpoint = work / "run" / "checkpoint-2"
    assert (checkpoint / OBJECTIVE_STATE_FILE).is_file()  # the queue's state: ObjectiveTrainer saved it
    with pytest.raises(FileNotFoundError, match=r"holds queue state, but this run has that option off"):
        main(["--config", str(config), "--max_steps", "3", "--resume_from_checkpoint", str(checkpoint)])


def test_fields_are_options_with_dashes_or_underscores():
    _, _, training = parse_arguments(["--config", PAPER_RECIPE, "--bf16", "false", "--max-steps", "7"])
    assert training.max_steps == 7
    _, _, training = parse_arguments(
        ["--config", PAPER_RECIPE, "--bf16", "false", "--max_steps", "7", "--learning-rate", "3e-5", "--max-steps", "9"]
    )
    assert (training.max_steps, training.learning_rate) == (9, 3e-5)  # the last spelling given wins


def test_a_bare_debug_flag_is_the_command_lines_and_debug_value_the_trainers():
    _, _, training = parse_arguments(["--config", PAPER_RECIPE, "--bf16", "false", "--debug"])
    assert training.debug == []
    _, _, training = parse_arguments(["--config", PAPER_RECIPE, "--debug", "underflow_overflow", "--bf16", "false"])
    assert [str(getattr(option, "value", option)) for option in training.debug] == ["underflow_overflow"]


def test_recipe_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"recipe .*missing.yaml does not exist"):
        parse_arguments(["--config", str(tmp_path / "missing.yaml")])
    broken = tmp_path / "broken.yaml"
    broken.write_text("max_steps: 3\nlearning_rate: [1e-4\n")
    with pytest.raises(ValueError, match=r"broken.yaml:3:1: not valid YAML"):
        parse_arguments([f"--config={broken}"])
