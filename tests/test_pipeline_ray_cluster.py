"""The Ray executor against the cluster it is given: `--ray-address` with no cluster behind it, stages asking for more
CPUs than a 2-CPU Ray has (refused at once, never a silent wait), and a run on Ray Data's current API only (no
deprecated `ray_remote_args`). Model-free stages; one local Ray of 2 CPUs for the module."""

import contextlib
import os
import signal
import time
import warnings

import pytest
import ray
import ray._private.services as ray_services
from ray.util.annotations import RayDeprecationWarning

from tests.pipeline_helpers import ImageSizeStage, WideFilterStage, write_images
from training.cli import run_program
from training.pipeline.__main__ import main
from training.pipeline.inputs import rows_from_folder
from training.pipeline.model_stages import CheckStage
from training.pipeline.run.ray_executor import check_cluster_fits
from training.pipeline.run.recipe import ActorSettings, RaySettings
from training.pipeline.run.sharded import run
from training.pipeline.run.shards import ShardPlan, read_all_shards


SIZES = [(40, 30), (30, 40), (50, 20), (20, 20), (60, 30), (30, 60)]


@contextlib.contextmanager
def time_limit(seconds: int):
    """Fails the test (TimeoutError in the main thread) instead of waiting for a Ray that never schedules."""

    def give_up(signal_number, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# first in this file: it needs a process where Ray is not started yet (the module's Ray starts with the next tests)
def test_ray_address_without_a_running_cluster_is_one_line_saying_how_to_start_one(tmp_path, monkeypatch, capsys):
    assert not ray.is_initialized(), "run this test before any test that starts Ray in this process"
    # no cluster to find: none recorded in this Ray temp folder, and other users' Ray processes are not looked for
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "ray-tmp"))
    monkeypatch.setattr(ray_services, "_find_address_from_flag", lambda flag: [])
    ray_services.find_gcs_addresses.cache_clear()
    write_images(tmp_path / "images", SIZES[:2])
    argv = ["run", "--input", str(tmp_path / "images"), "--output", str(tmp_path / "out"), "--stages", "check",
            "--ray-address", "auto"]  # fmt: skip

    status = run_program(main, argv, prog="relsim-pipeline", has_commands=True)

    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1
    assert lines[0] == (
        "relsim-pipeline run: error: no running Ray cluster at address 'auto' (--ray-address or the recipe's "
        "ray.address; Ray says: Could not find any running Ray instance). --ray-address joins a cluster that is "
        "already running: start it first with `ray start --head` (or give its address); to run on this machine "
        "without one, leave the address out and use --executor ray, which starts a local Ray for the run"
    )
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def local_ray():
    """Ray on 2 CPUs with a small object store, shared by this module's Ray tests."""
    os.environ.setdefault("RAY_agent_register_timeout_ms", "180000")
    ray.init(num_cpus=2, object_store_memory=100 * 2**20, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture
def rows(tmp_path):
    write_images(tmp_path / "images", SIZES)
    return rows_from_folder(tmp_path / "images")


def test_stages_asking_for_more_cpus_than_the_cluster_has_are_refused_at_once_naming_them(local_ray, rows, tmp_path):
    stages = [ImageSizeStage(), WideFilterStage(), CheckStage()]  # Ray's default: 1 CPU per actor, 3 on 2 CPUs
    started = time.monotonic()
    with time_limit(120), pytest.raises(ValueError) as refused:
        run(rows, stages, tmp_path / "out", executor="ray", settings=RaySettings(shard_size=3), show_progress=False)

    assert str(refused.value) == (
        "the stages ask for 3.25 CPUs at once (size 1 x 1, wide 1 x 1, check 1 x 1, reading inputs 0.25: actors x "
        "CPUs each) but the Ray cluster has 2, so Ray would wait for the rest without end: lower "
        "ray.actors.<stage>.num_cpus (fractions such as 0.5 are allowed) or ray.actors.<stage>.concurrency in the "
        "recipe, or use a larger cluster"
    )
    assert time.monotonic() - started < 60
    assert stages[0].processed_hashes == [] and not list((tmp_path / "out" / "shards").glob("part-*.parquet"))


def test_the_run_command_refuses_a_plan_larger_than_the_cluster_in_one_line_before_reading_input(
    local_ray, rows, tmp_path, capsys
):
    (tmp_path / "recipe.yaml").write_text("ray: {shard_size: 2, actors: {check: {num_cpus: 1, concurrency: 2}}}\n")
    argv = ["run", "--executor", "ray", "--input", str(tmp_path / "images"), "--output", str(tmp_path / "out"),
            "--stages", "check", "--recipe", str(tmp_path / "recipe.yaml")]  # fmt: skip
    with time_limit(120):
        status = run_program(main, argv, prog="relsim-pipeline", has_commands=True)

    assert status == 2 and capsys.readouterr().err.strip().splitlines() == [
        "relsim-pipeline run: error: the stages ask for 2.25 CPUs at once (check 2 x 1, reading inputs 0.25: actors x "
        "CPUs each) but the Ray cluster has 2, so Ray would wait for the rest without end: lower "
        "ray.actors.<stage>.num_cpus (fractions such as 0.5 are allowed) or ray.actors.<stage>.concurrency in the "
        "recipe, or use a larger cluster"
    ]
    assert not (tmp_path / "out" / "shards" / "inputs").exists()  # refused before the input was planned
    assert ray.is_initialized()  # the Ray this process had is left as it was


def test_the_ray_route_uses_no_deprecated_ray_data_api_and_writes_the_local_output(local_ray, rows, tmp_path):
    half = ActorSettings(num_cpus=0.5, batch_size=2)
    settings = RaySettings(shard_size=3, actors={"size": half, "wide": half, "check": half})  # 1.75 of 2 CPUs
    stages = [ImageSizeStage(), WideFilterStage(), CheckStage()]
    with time_limit(300), warnings.catch_warnings():
        warnings.simplefilter("error", RayDeprecationWarning)
        summary = run(rows, stages, tmp_path / "ray", executor="ray", settings=settings, show_progress=False)
    local = run(rows, [ImageSizeStage(), WideFilterStage(), CheckStage()], tmp_path / "local", batch_size=2,
                settings=settings, show_progress=False)  # fmt: skip

    plan = ShardPlan.from_rows(rows, 3)
    written = read_all_shards(tmp_path / "ray", plan)
    assert written == read_all_shards(tmp_path / "local", plan)
    assert [(row["width"], row["height"]) for row in written] == SIZES
    assert [row["kept"] for row in written] == [True, False, True, False, True, False]
    assert summary == local and summary.stage("wide").kept == 3


def test_gpus_or_an_actor_larger_than_any_node_are_refused_before_ray_is_asked():
    gpu = RaySettings(actors={"size": ActorSettings(num_cpus=0.5, num_gpus=1, concurrency=2)})
    with pytest.raises(ValueError, match=r"^the stages ask for 2 GPUs at once \(size 2 x 1: actors x GPUs each\) but "
                       r"the Ray cluster has 0, so Ray would wait"):  # fmt: skip
        check_cluster_fits([ImageSizeStage()], gpu, {"CPU": 8.0}, {"CPU": 8.0, "GPU": 0.0})

    wide = RaySettings(actors={"size": ActorSettings(num_cpus=3)})
    two_nodes = {"CPU": 4.0}  # two nodes of 2 CPUs: 3.25 CPUs fit the cluster, a 3-CPU actor fits no node
    with pytest.raises(
        ValueError, match=r"^a size actor asks for 3 CPUs but the largest node of the Ray cluster has 2"
    ):
        check_cluster_fits([ImageSizeStage()], wide, two_nodes, {"CPU": 2.0, "GPU": 0.0})
    check_cluster_fits([ImageSizeStage()], wide, two_nodes, {"CPU": 3.0, "GPU": 0.0})  # fits a 3-CPU node
