"""CPU threads for runs that repeat to the last digit and survive a busy machine.

Two facts drive this module. A float sum split over two threads adds its terms in another order than over one or
four, so a run repeats bit for bit only with the same intra-op thread count (and the same CPU instruction set):
the count belongs in the recipe, not to whichever machine runs it. And torch's OpenMP threads spin while they wait
for each other; when another process holds a core, a spinning thread burns its time slice waiting for a partner
that is not running, and a two-thread run slows tenfold. With `OMP_WAIT_POLICY=PASSIVE` a waiting thread sleeps
instead. OpenMP reads that variable once, when torch loads it, so it must be set before `import torch`.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path


logger = logging.getLogger(__name__)

WAIT_POLICY = "OMP_WAIT_POLICY"


def openmp_loaded() -> bool:
    """Whether this process has already loaded an OpenMP runtime (then it has read its wait policy)."""
    if "torch" in sys.modules:
        return True
    maps = Path("/proc/self/maps")
    if not maps.is_file():
        return False
    return any(name in maps.read_text() for name in ("libgomp", "libiomp", "libomp"))


def prefer_passive_waiting() -> bool:
    """Sets `OMP_WAIT_POLICY=PASSIVE` when the environment chose no policy and OpenMP is not loaded yet.

    Call it before the first `import torch`. The result is unchanged, only the time differs: waiting threads sleep
    instead of spinning, which costs a little on an idle machine and saves most of the run on a busy one.

    Returns:
        Whether this process waits passively.
    """
    chosen = os.environ.get(WAIT_POLICY)
    if chosen is not None:
        return chosen.strip().upper() == "PASSIVE"
    if openmp_loaded():
        logger.warning(
            "OpenMP is already loaded, so its threads keep spin-waiting; start Python with %s=PASSIVE for a run "
            "that slows gracefully when other processes take the cores",
            WAIT_POLICY,
        )
        return False
    os.environ[WAIT_POLICY] = "PASSIVE"
    return True


def set_torch_threads(count: int | None) -> int:
    """Fixes torch's intra-op thread count; `None` keeps torch's default (one per core). Returns the count in force.

    DataLoader workers are separate processes that run one thread each whatever this says.
    """
    import torch

    if count is not None:
        if count < 1:
            raise ValueError(f"torch_num_threads must be a positive number of threads, got {count}")
        torch.set_num_threads(count)
    return torch.get_num_threads()
