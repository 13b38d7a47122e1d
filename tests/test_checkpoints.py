"""A real tiny run with checkpoints at steps 2 and 4, then damaged the way a killed run damages them."""

import json
import logging
import shutil

import pytest
from helpers import pattern_dataset

from training.trainer.checkpoints import checkpoint_problem, resolve_resume_checkpoint
from training.trainer.export import export_checkpoint
from training.trainer.train import main


def run_arguments(work, output_dir, max_steps=4):
    arguments = ["--tiny_backbone", "true", "--use_lora", "true", "--lora_r", "4", "--lora_alpha", "8"]
    arguments += ["--instruction", "", "--use_system_prompt", "false", "--image_size", "112"]
    arguments += ["--dataset_name", str(work / "patterns"), "--eval_split", "test", "--output_dir", str(output_dir)]
    arguments += ["--per_device_train_batch_size", "8", "--max_steps", str(max_steps), "--learning_rate", "1e-3"]
    arguments += ["--lr_scheduler_type", "constant"]  # resumed runs of other lengths follow the same curve
    arguments += ["--save_strategy", "steps", "--save_steps", "2", "--logging_steps", "1", "--use_cpu", "true"]
    return [*arguments, "--report_to", "none", "--disable_tqdm", "true", "--seed", "0"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("checkpointed")
    pattern_dataset(40, seed=4).train_test_split(test_size=8, seed=0).save_to_disk(str(work / "patterns"))
    main(run_arguments(work, work / "run"))
    return work


@pytest.fixture
def run(finished_run, tmp_path):
    """A copy of the finished run, free to damage."""
    shutil.copytree(finished_run / "run", tmp_path / "run")
    return tmp_path / "run"


def truncate(path, size=100):
    with path.open("r+b") as handle:
        handle.truncate(size)


def test_the_trainers_checkpoints_are_complete(run):
    assert checkpoint_problem(run / "checkpoint-2", for_resume=True) is None
    assert checkpoint_problem(run / "checkpoint-4", for_resume=True) is None


@pytest.mark.parametrize(
    ("damage", "file_name"),
    [
        (lambda folder: (folder / "trainer_state.json").unlink(), "trainer_state.json is missing"),
        (lambda folder: truncate(folder / "trainer_state.json"), "trainer_state.json is not readable JSON"),
        (lambda folder: truncate(folder / "adapter_model.safetensors"), "adapter_model.safetensors is damaged"),
        (lambda folder: (folder / "adapter_model.safetensors").unlink(), "adapter_model.safetensors is missing"),
        (lambda folder: (folder / "tokenizer.json").unlink(), "tokenizer.json is missing"),
        (lambda folder: truncate(folder / "optimizer.pt", 1000), "optimizer.pt is damaged"),
        (lambda folder: (folder / "scheduler.pt").unlink(), "scheduler.pt is missing"),
        (lambda folder: truncate(folder / "rng_state.pth", 50), "rng_state.pth is damaged"),
    ],
)
def test_a_damaged_checkpoint_names_its_file(run, damage, file_name):
    damage(run / "checkpoint-4")
    assert file_name in checkpoint_problem(run / "checkpoint-4", for_resume=True)


def test_export_needs_no_optimizer_state(run):
    (run / "checkpoint-4" / "optimizer.pt").unlink()
    assert checkpoint_problem(run / "checkpoint-4") is None
    assert "optimizer.pt is missing" in checkpoint_problem(run / "checkpoint-4", for_resume=True)


def test_resume_last_skips_the_half_written_checkpoint_and_says_so(run, caplog):
    truncate(run / "checkpoint-4" / "adapter_model.safetensors")
    for word in ("true", "last", "True"):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="training.trainer.checkpoints"):
            assert resolve_resume_checkpoint(word, run) == str(run / "checkpoint-2")
        assert "skipped the incomplete checkpoint checkpoint-4 (adapter_model.safetensors is damaged" in caplog.text
    assert resolve_resume_checkpoint("false", run) is None and resolve_resume_checkpoint(None, run) is None


def test_resume_true_continues_from_the_last_complete_checkpoint(run, finished_run):
    (run / "checkpoint-4" / "trainer_state.json").unlink()  # killed before the Trainer wrote its state
    main([*run_arguments(finished_run, run, max_steps=6), "--resume_from_checkpoint", "true"])
    state = json.loads((run / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    losses = {entry["step"]: entry["loss"] for entry in state["log_history"] if "loss" in entry}
    first_run = json.loads((finished_run / "run" / "trainer_state.json").read_text())["log_history"]
    # steps 1-2 come from checkpoint-2, steps 3-4 are trained again exactly as in the first run
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]
    for entry in first_run:
        if "loss" in entry:
            assert losses[entry["step"]] == pytest.approx(entry["loss"], abs=1e-6)


def test_resume_from_an_incomplete_checkpoint_fails_at_once_naming_the_file(run, finished_run):
    (run / "checkpoint-4" / "scheduler.pt").unlink()
    arguments = [*run_arguments(finished_run, run, max_steps=6), "--resume_from_checkpoint", str(run / "checkpoint-4")]
    with pytest.raises(FileNotFoundError) as raised:
        main(arguments)
    message = str(raised.value)
    assert "\n" not in message
    assert "checkpoint-4 is not a complete checkpoint: scheduler.pt is missing" in message
    assert f"the run's last complete checkpoint is {run / 'checkpoint-2'}" in message


def test_resume_true_without_a_complete_checkpoint_lists_what_each_lacks(run):
    (run / "checkpoint-2" / "trainer_state.json").unlink()
    (run / "checkpoint-4" / "optimizer.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"no complete checkpoint; incomplete: checkpoint-4 \(optimizer\.pt"):
        resolve_resume_checkpoint("true", run)


def test_export_of_a_run_folder_takes_its_last_complete_checkpoint(run, tmp_path, caplog):
    truncate(run / "checkpoint-4" / "adapter_model.safetensors")
    with caplog.at_level(logging.INFO, logger="training.trainer.checkpoints"):
        exported = export_checkpoint(run, tmp_path / "exported")
    assert "skipped the incomplete checkpoint checkpoint-4" in caplog.text
    assert "using the last complete checkpoint" in caplog.text and "checkpoint-2" in caplog.text
    assert (exported / "model.safetensors").is_file() and (exported / "README.md").is_file()
    assert "| steps | 2 optimizer steps |" in (exported / "README.md").read_text()


def test_export_of_a_damaged_checkpoint_names_the_file(run, tmp_path):
    (run / "checkpoint-4" / "processor_config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"checkpoint-4 is not a complete checkpoint: processor_config\.json"):
        export_checkpoint(run / "checkpoint-4", tmp_path / "exported")
    assert not (tmp_path / "exported").exists()


def test_export_of_a_run_without_checkpoints_points_at_final(run, tmp_path):
    for checkpoint in ("checkpoint-2", "checkpoint-4"):
        shutil.rmtree(run / checkpoint)
    with pytest.raises(FileNotFoundError, match=r"nor is it a run folder with checkpoint-N folders \(.*final is"):
        export_checkpoint(run, tmp_path / "exported")
