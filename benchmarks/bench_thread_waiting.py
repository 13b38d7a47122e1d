"""Training steps/s of the demo's tiny model with OpenMP threads spin-waiting (the default) or sleeping (PASSIVE),
with and without other processes competing for the cores.

    python benchmarks/bench_thread_waiting.py --competing-processes 1 --steps 20 --rounds 2

Each measurement runs in a fresh interpreter, because OpenMP reads `OMP_WAIT_POLICY` once, when torch loads it; the
policies alternate so that a change in the machine's other load hits both. The step is the demo's (tiny preset,
112 px, batch 32, full training, AdamW, InfoNCE) with fixed random caption embeddings in place of the text tower.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


logger = logging.getLogger("bench_thread_waiting")

REPOSITORY = Path(__file__).resolve().parent.parent
POLICIES = {"spin (default)": None, "passive": "PASSIVE"}


def measure(steps: int, threads: int, batch_size: int) -> float:
    """Steps/s of the demo's training step in this process (after two warm-up steps)."""
    import torch

    from training.synthetic.dataset import synthetic_dataset
    from training.tiny_backbone import TINY_PRESETS, build_tiny_model, build_tiny_processor
    from training.trainer.collator import RelSimCollator
    from training.trainer.losses import relational_info_nce
    from training.trainer.trainer import BATCH_EXTRAS

    torch.set_num_threads(threads)
    processor = build_tiny_processor(image_size=112, instruction=None, use_system_prompt=False)
    model = build_tiny_model(processor, seed=0, sizes=TINY_PRESETS["tiny"]).train().requires_grad_(True)
    examples = list(synthetic_dataset(max(1, batch_size // 8), "train", seed=0, image_size=112))[:batch_size]
    batch = RelSimCollator(processor)(examples)
    inputs = {key: value for key, value in batch.items() if key not in BATCH_EXTRAS}
    caption_ids = batch["caption_ids"]
    generator = torch.Generator().manual_seed(0)
    caption_embeds = torch.nn.functional.normalize(torch.randn(len(caption_ids), 384, generator=generator), dim=-1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)

    def step() -> None:
        output = model(**inputs)
        loss = relational_info_nce(output.image_embeds, caption_embeds, caption_ids, output.logit_scale).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    for _ in range(2):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - started)


def run_child(policy: str | None, steps: int, threads: int, batch_size: int) -> float:
    environment = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    if policy is not None:
        environment["OMP_WAIT_POLICY"] = policy
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), environment.get("PYTHONPATH")]))
    command = [sys.executable, __file__, "--child", "--steps", str(steps), "--threads", str(threads)]
    command += ["--batch-size", str(batch_size)]
    result = subprocess.run(command, env=environment, capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (the demo recipe's 2)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="measurements per policy, alternating")
    parser.add_argument("--competing-processes", type=int, default=0, help="busy-loop processes started alongside")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.stdout.write(f"{measure(args.steps, args.threads, args.batch_size)}\n")
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.competing_processes)]
    results: dict[str, list[float]] = {name: [] for name in POLICIES}
    try:
        for round_index in range(args.rounds):
            for name, policy in POLICIES.items():
                rate = run_child(policy, args.steps, args.threads, args.batch_size)
                results[name].append(rate)
                load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
                logger.info("round %d, %s: %.2f steps/s (load average %.1f)", round_index + 1, name, rate, load)
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    summary = {name: statistics.median(rates) for name, rates in results.items()}
    logger.info(
        "median steps/s with %d competing processes on %d cores: %s",
        args.competing_processes,
        os.cpu_count(),
        ", ".join(f"{name} {rate:.2f}" for name, rate in summary.items()),
    )
    if args.json:
        args.json.write_text(
            json.dumps({"settings": vars(args) | {"json": str(args.json)}, "steps_per_second": results})
        )


if __name__ == "__main__":
    main()
