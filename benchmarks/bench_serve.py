"""The HTTP service's batching and search latency, ratios in one run.

    python benchmarks/bench_serve.py                                 # CPU, tiny model, 1M vectors (~minutes)
    python benchmarks/bench_serve.py --vectors 100000 --requests 4   # a quicker smoke run
    python benchmarks/bench_serve.py --model /models/relsim --device cuda --num-gpus 1 --image-size 448 --json s.json

Part 1: `--clients` concurrent clients each send `--requests` one-image `POST /v1/embeddings` requests to the service
(a local Ray Serve, one replica), first with dynamic batching (`--max-batch-size`), then with `max_batch_size=1`, on
the same replica settings otherwise: throughput, p50/p99 latency and errors of each, and the throughput ratio.
Part 2: the search step of `/v1/search` (`VectorIndex.search`, what `training.search.query.nearest` calls) over
`--vectors` random unit 384-d vectors, one query at a time, for an exact (Flat) and an IVF-PQ index: p50/p99.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import os
import platform
import socket
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import PIL.Image
import requests


logger = logging.getLogger("bench_serve")


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tiny_model_folder(folder: Path, image_size: int) -> str:
    from training.tiny_backbone import build_tiny_model, build_tiny_processor

    processor = build_tiny_processor(image_size=image_size)
    model = build_tiny_model(processor, seed=0)
    model.save_pretrained(folder / "model")
    processor.save_pretrained(folder / "model")
    return str(folder / "model")


def png_b64(seed: int, size: int) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def load(url: str, clients: int, per_client: int, image_size: int) -> dict[str, float]:
    """`clients` threads, `per_client` one-image embedding requests each: throughput, latency, errors."""
    images = [png_b64(seed, image_size) for seed in range(clients)]

    def client(number: int) -> tuple[list[float], int]:
        session, latencies, errors = requests.Session(), [], 0
        for _ in range(per_client):
            started = time.perf_counter()
            try:
                answer = session.post(url, json={"input": [{"image": images[number]}]}, timeout=120)
                errors += answer.status_code != 200
            except requests.RequestException:
                errors += 1
            latencies.append(time.perf_counter() - started)
        return latencies, errors

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client, range(clients)))
    seconds = time.perf_counter() - started
    latencies = [value for values, _ in results for value in values]
    return {
        "requests_per_s": len(latencies) / seconds,
        "p50_ms": 1000 * percentile(latencies, 50),
        "p99_ms": 1000 * percentile(latencies, 99),
        "errors": sum(errors for _, errors in results),
    }


def batching(args: argparse.Namespace, folder: Path) -> dict[str, dict[str, float]]:
    import ray
    from ray import serve

    from training.search.index import index_collection
    from training.search.model import SearchModel
    from training.search.serve_app import deployment, start
    from training.search.serve_settings import ServeSettings

    model_folder = args.model or tiny_model_folder(folder, args.image_size)
    photos = folder / "photos"
    photos.mkdir()
    for seed in range(4):
        (photos / f"{seed}.png").write_bytes(base64.b64decode(png_b64(100 + seed, 32)))
    index_collection(folder / "idx", SearchModel.load(model_folder, device=args.device), folder=photos,
                     show_progress=False)  # fmt: skip
    port = free_port()
    ray.init(num_cpus=args.num_cpus, object_store_memory=200 * 2**20, include_dashboard=False, log_to_driver=False)
    results = {}
    try:
        for name, size in (("batched", args.max_batch_size), ("max_batch_size=1", 1)):
            settings = ServeSettings(
                max_batch_size=size,
                batch_wait_timeout_s=args.batch_wait_ms / 1000,
                max_pending_requests=4 * args.clients,
            )
            start(deployment(folder / "idx", model_folder, args.device, settings, num_gpus=args.num_gpus), port=port)
            url = f"http://127.0.0.1:{port}/v1/embeddings"
            load(url, min(args.clients, 4), 1, args.image_size)  # warm-up
            results[name] = load(url, args.clients, args.requests, args.image_size)
            logging.info("%s: %s", name, results[name])
    finally:
        serve.shutdown()
        ray.shutdown()
    return results


def search_latency(vectors: int, queries: int, factories: list[str]) -> dict[str, dict[str, float]]:
    from training.vector_index import VectorIndex

    rng = np.random.default_rng(0)
    data = rng.standard_normal((vectors, 384), dtype=np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    probes = data[rng.choice(vectors, queries, replace=False)] + 0.05 * rng.standard_normal((queries, 384), np.float32)
    results = {}
    for factory in factories:
        started = time.perf_counter()
        index = VectorIndex(384, factory)
        if not index.is_trained:
            index.train(data[rng.choice(vectors, min(vectors, 100_000), replace=False)])
        index.add(data)
        built = time.perf_counter() - started
        latencies = []
        for probe in probes:
            started = time.perf_counter()
            index.search(probe[None], 10, nprobe=64)  # as `/v1/search` (`nearest`)
            latencies.append(time.perf_counter() - started)
        results[factory] = {
            "build_s": built,
            "p50_ms": 1000 * percentile(latencies, 50),
            "p99_ms": 1000 * percentile(latencies, 99),
        }
        logging.info("%s: %s", factory, results[factory])
        del index
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a relsim folder (default: the tiny random model, built here)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-gpus", type=float, default=0, help="GPUs of the replica")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--image-size", type=int, default=112, help="the tiny model's image size, and the requests'")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=8, help="requests per client")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-wait-ms", type=float, default=10)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--factories", default="Flat,IVF1024,PQ32", help="FAISS factories; ',' inside one: use ';'")
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    with tempfile.TemporaryDirectory() as temporary:
        served = batching(args, Path(temporary))
    factories = ["Flat", "IVF1024,PQ32"] if args.factories == "Flat,IVF1024,PQ32" else args.factories.split(";")
    searched = {} if args.skip_search else search_latency(args.vectors, args.queries, factories)
    batched, single = served["batched"], served["max_batch_size=1"]
    logger.info(
        f"\n{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.device}"
    )
    logger.info(
        f"{'embeddings, ' + str(args.clients) + ' clients':<34} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}"
    )
    for name, row in served.items():
        logger.info(
            f"{name:<34} {row['requests_per_s']:>8.1f} {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} {row['errors']:>6}"
        )
    logger.info(
        f"throughput ratio, batched / max_batch_size=1: {batched['requests_per_s'] / single['requests_per_s']:.2f}x"
    )
    for factory, row in searched.items():
        logger.info(f"search {args.vectors:,} vectors, {factory:<14} p50 {row['p50_ms']:.2f} ms, "
                    f"p99 {row['p99_ms']:.2f} ms (built in {row['build_s']:.0f} s)")  # fmt: skip
    results = {"serve": served, "search": searched, "settings": vars(args)}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
