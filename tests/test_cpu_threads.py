"""The demo's reproducibility and load tolerance: a thread count fixed by the recipe, deterministic training, and
OpenMP threads that wait passively."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training.cpu_threads import prefer_passive_waiting, set_torch_threads
from training.trainer.train import main as train
from training.trainer.train import parse_arguments


REPOSITORY = Path(__file__).resolve().parent.parent
TINY_CPU_RECIPE = "training/configs/tiny-cpu.yaml"


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """The recipe changes process-wide torch settings; later tests get the ones they started with back."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def train_tiny(output_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, float], list[float]]:
    """A few steps of the demo recipe at a small size: final weights, held-out metrics (not timings), logged losses."""
    final = train(
        [
            "--config",
            TINY_CPU_RECIPE,
            "--output_dir",
            str(output_dir),
            "--max_steps",
            "4",
            "--per_device_train_batch_size",
            "8",
            "--synthetic_num_per_family",
            "2",
            "--synthetic_eval_num_per_family",
            "2",
            "--warmup_steps",
            "1",
            "--logging_steps",
            "1",
        ]
    )
    state = json.loads((output_dir / "trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    evaluation = json.loads((output_dir / "eval_results.json").read_text())
    metrics = {name: value for name, value in evaluation.items() if not name.endswith(("_runtime", "_per_second"))}
    return load_file(final / "model.safetensors"), metrics, losses


def test_the_tiny_cpu_recipe_fixes_threads_seeds_and_deterministic_algorithms():
    _, data, training = parse_arguments(["--config", TINY_CPU_RECIPE])
    assert training.torch_num_threads == 2
    assert training.full_determinism is True
    assert (training.seed, data.synthetic_seed) == (0, 0)


def test_training_repeats_to_the_last_digit_whatever_threads_the_process_had(tmp_path):
    torch.set_num_threads(1)
    first_weights, first_metrics, first_losses = train_tiny(tmp_path / "first")
    assert torch.get_num_threads() == 2  # the recipe's count, not the process's
    assert torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(3)
    second_weights, second_metrics, second_losses = train_tiny(tmp_path / "second")
    assert torch.get_num_threads() == 2
    assert len(first_losses) == 4 and first_losses == second_losses
    assert "eval_recall@1" in first_metrics and first_metrics == second_metrics
    assert first_weights.keys() == second_weights.keys()
    for name, weight in first_weights.items():
        assert torch.equal(weight, second_weights[name]), name


def test_a_thread_count_below_one_is_refused_by_name():
    with pytest.raises(ValueError, match="torch_num_threads"):
        parse_arguments(["--config", TINY_CPU_RECIPE, "--torch_num_threads", "0"])
    with pytest.raises(ValueError, match="torch_num_threads"):
        set_torch_threads(0)


def test_no_thread_count_keeps_the_process_setting():
    torch.set_num_threads(1)
    assert set_torch_threads(None) == 1


def openmp_spin_count(code: str, **environment: str) -> str:
    """Runs `code` in a fresh interpreter that then imports torch; returns the spin count libgomp settled on."""
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    env.update(environment, OMP_DISPLAY_ENV="VERBOSE", PYTHONPATH=str(REPOSITORY))
    result = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport torch"], env=env, capture_output=True, text=True, check=True
    )
    counts = [line.split("=")[1].strip(" '") for line in result.stderr.splitlines() if "GOMP_SPINCOUNT" in line]
    assert counts, f"libgomp printed no settings:\n{result.stderr[-2000:]}"
    return counts[0]


def test_the_demo_makes_openmp_threads_wait_passively():
    # importing the demo must not load torch, so that its main can still choose the wait policy
    code = (
        "import sys\nimport training.demo\nassert 'torch' not in sys.modules\n"
        "from training.cpu_threads import prefer_passive_waiting\nassert prefer_passive_waiting()"
    )
    assert openmp_spin_count(code) == "0"  # sleeps at once, never spins
    assert openmp_spin_count("pass") != "0"  # what torch does left alone


def test_a_wait_policy_the_user_chose_is_kept():
    code = "from training.cpu_threads import prefer_passive_waiting\nassert not prefer_passive_waiting()"
    assert openmp_spin_count(code, OMP_WAIT_POLICY="ACTIVE") != "0"


def test_passive_waiting_after_torch_is_loaded_warns_and_changes_nothing(monkeypatch, caplog):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert prefer_passive_waiting() is False
    assert "OMP_WAIT_POLICY" not in os.environ
    assert "OMP_WAIT_POLICY=PASSIVE" in caplog.text
