"""Two processes (DDP over gloo, CPU) against one process on the same global batch: same loss, same gradients."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open


WORKER = Path(__file__).parent / "distributed_worker.py"


def run_worker(command, output_dir):
    tests, repository = Path(__file__).parent, Path(__file__).parent.parent
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tests), str(repository)]), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [*command, str(WORKER), str(output_dir)], env=environment, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]


def read(path, field="loss"):
    with safe_open(str(path), framework="pt") as handle:
        return json.loads(handle.metadata()[field]), {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (safe_open has no __iter__)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    output = tmp_path_factory.mktemp("ddp")
    run_worker([sys.executable], output)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]  # a free port
    run_worker(torchrun, output)
    return output


@pytest.mark.parametrize(
    "config",
    ["plain-symmetric", "gradcache-symmetric", "plain-options", "gradcache-options", "gradcache-options-clipped"],
)
def test_two_processes_match_one(runs, config):
    single_loss, single = read(runs / f"rank0-of1-{config}.safetensors")
    if "options" in config:  # the prototypes' gradient and the queue, EMA and prototypes are compared too
        assert {"objective.prototypes", "state.queue.ids", "state.prototypes.prototypes"} <= single.keys()
        assert any(name.startswith("state.ema.") for name in single)
    for rank in (0, 1):
        loss, gradients = read(runs / f"rank{rank}-of2-{config}.safetensors")
        assert loss == pytest.approx(single_loss, abs=1e-5)
        assert gradients.keys() == single.keys()
        assert "temperature.logit_scale" in gradients
        for name, gradient in single.items():
            torch.testing.assert_close(gradients[name], gradient, atol=1e-6, rtol=1e-4, msg=f"{config} {name}")


def test_grad_cache_all_reduces_the_gradients_once(runs):
    for rank in (0, 1):
        plain, _ = read(runs / f"rank{rank}-of2-plain-symmetric.safetensors", "allreduce_calls")
        # two micro-batches per rank, replayed in backward: only the last replay all-reduces
        cached, _ = read(runs / f"rank{rank}-of2-gradcache-symmetric.safetensors", "allreduce_calls")
        assert cached == plain >= 1


def test_max_grad_norm_clips_the_prototypes_with_the_model_under_ddp(runs):
    for run in ("rank0-of1", "rank0-of2", "rank1-of2"):
        _, recorded = read(runs / f"{run}-gradcache-options-clipped.safetensors")
        gradients = [value.flatten() for name, value in recorded.items() if not name.startswith("state.")]
        total = torch.linalg.vector_norm(torch.cat(gradients)).item()
        assert 0.99e-3 <= total <= 1e-3 + 1e-6, run  # clipped to max_grad_norm=1e-3, the prototypes counted
        assert recorded["objective.prototypes"].norm().item() > 1e-5, run
