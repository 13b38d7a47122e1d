"""`python -m training.search serve` as a person runs it: it starts a local Ray with the service on 127.0.0.1,
answers, and stops (Serve and Ray with it) on Ctrl-C."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
from search_helpers import write_images

from training.search.index import index_collection
from training.search.model import SearchModel
from training.search.serve_settings import replica_shortfall


ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_serve_command_answers_on_127_0_0_1_and_stops_cleanly_on_ctrl_c(tmp_path, model, processor):
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    write_images(tmp_path / "photos", range(3))
    index_collection(tmp_path / "idx", SearchModel.load(str(tmp_path / "model")), folder=tmp_path / "photos",
                     show_progress=False)  # fmt: skip
    port = free_port()
    environment = {name: value for name, value in os.environ.items() if name != "RELSIM_API_KEY"}
    environment |= {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "RAY_OBJECT_STORE_MEMORY": str(200 * 2**20)}
    command = [sys.executable, "-m", "training.search", "serve", "--index", str(tmp_path / "idx"), "--port", str(port),
               "--device", "cpu"]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, start_new_session=True)  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    announced = f"relsim service on http://127.0.0.1:{port} (Ctrl-C stops it)\n"
    try:
        deadline, ready = time.monotonic() + 180, None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                ready = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
                if ready.status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(1)
        assert ready is not None and ready.status_code == 200 and ready.json()["images"] == 3
        answer = requests.post(f"http://127.0.0.1:{port}/v1/embeddings", json={"input": ["a {Subject} twice"]},
                               timeout=60)  # fmt: skip
        assert answer.status_code == 200 and len(answer.json()["data"][0]["embedding"]) == 384
        # routes answer a moment before `serve.run` returns and the command announces itself
        while time.monotonic() < deadline and announced not in lines:
            time.sleep(0.2)
        assert announced in lines
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        reader.join(10)
    assert process.returncode == 0


def test_replicas_that_the_cluster_cannot_place_are_refused_at_once_not_waited_for():
    assert replica_shortfall(2, 0, {"CPU": 2.0}) is None
    assert replica_shortfall(2, 1, {"CPU": 16.0, "GPU": 2.0}) is None
    assert replica_shortfall(3, 0, {"CPU": 2.0}) == (
        "--replicas 3 ask for 3 CPUs and 0 GPUs (one CPU and --num-gpus 0 each), but the Ray cluster has 2 CPUs and 0 "
        "GPUs: Serve would wait for them without end; lower --replicas or --num-gpus, or join a larger cluster with "
        "--ray-address"
    )
    assert "ask for 1 CPUs and 1 GPUs" in replica_shortfall(1, 1, {"CPU": 16.0})


def test_the_serve_command_refuses_more_replicas_than_cpus_in_one_line(tmp_path):
    environment = {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "RAY_OBJECT_STORE_MEMORY": str(100 * 2**20),
                   "PATH": os.environ.get("PATH", "")}  # fmt: skip
    command = [sys.executable, "-m", "training.search", "serve", "--index", str(tmp_path / "idx"),
               "--port", str(free_port()), "--replicas", "512"]  # fmt: skip
    started = time.monotonic()
    finished = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=180)
    lines = [line for line in finished.stderr.splitlines() if "serve: error: " in line]
    assert finished.returncode == 2 and len(lines) == 1, finished.stderr[-2000:]
    assert "--replicas 512 ask for 512 CPUs" in lines[0] and "Serve would wait for them without end" in lines[0]
    assert time.monotonic() - started < 180
