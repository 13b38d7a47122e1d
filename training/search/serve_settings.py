"""What a relsim service is allowed to do: batching, limits, URL inputs and its API key, as one plain settings object
that travels to every replica.

The API key never travels: the driver reads it from an environment variable or a file (never from the command
line, where `ps` and shell histories show it) and the replicas receive only its sha256, against which each request's
bearer token is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path


API_KEY_ENVIRONMENT = "RELSIM_API_KEY"


@dataclass(frozen=True)
class ServeSettings:
    """Settings of the relsim service (`training.search.serve_app`).

    Attributes:
        max_batch_size: images (or texts) embedded together across concurrent requests.
        batch_wait_timeout_s: how long a batch waits for more requests before it runs.
        max_body_bytes: a larger request body is refused (413).
        max_images_per_request: more images in one request are refused (413).
        max_texts_per_request: more texts in one request are refused (413).
        max_image_pixels: an image with more pixels is refused from its header, before decoding (400).
        max_top_k: the most results one search may ask for.
        request_timeout_s: a request still running after this answers 504.
        max_pending_requests: requests a replica holds at once; one more answers 503 with `Retry-After`.
        retry_after_s: the `Retry-After` of a 503.
        allow_url_images: fetch http(s) URLs given as images (off: the service fetches nothing on a client's behalf;
            on, a client can make it request any address the replica reaches, intranet included).
        url_timeout_s: the most one such fetch may take.
        api_key_sha256: sha256 (hex) of the bearer token every endpoint but the health checks requires; None: open.
        caption_bank: the "why" labels' caption bank (see `training.search.why.read_caption_bank`).
        reload_check_s: how often a replica looks for a new index generation.
    """

    max_batch_size: int = 16
    batch_wait_timeout_s: float = 0.01
    max_body_bytes: int = 32 * 1024 * 1024
    max_images_per_request: int = 32
    max_texts_per_request: int = 256
    max_image_pixels: int = 8192 * 8192
    max_top_k: int = 100
    request_timeout_s: float = 30.0
    max_pending_requests: int = 64
    retry_after_s: int = 1
    allow_url_images: bool = False
    url_timeout_s: float = 10.0
    api_key_sha256: str | None = None
    caption_bank: str = "synthetic"
    reload_check_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_body_bytes", "max_images_per_request", "max_texts_per_request",
                     "max_image_pixels", "max_top_k", "max_pending_requests"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.batch_wait_timeout_s < 0 or self.request_timeout_s <= 0:
            raise ValueError(
                f"batch_wait_timeout_s must be >= 0 and request_timeout_s > 0, got {self.batch_wait_timeout_s} and "
                f"{self.request_timeout_s}"
            )

    def accepts_token(self, token: str | None) -> bool:
        """Whether a request's bearer `token` opens the service (always, when no key is set)."""
        if self.api_key_sha256 is None:
            return True
        given = hashlib.sha256((token or "").encode()).hexdigest()
        return token is not None and hmac.compare_digest(given, self.api_key_sha256)


def api_key_sha256(api_key_file: str | Path | None = None, environment: str = API_KEY_ENVIRONMENT) -> str | None:
    """sha256 of the API key read from `api_key_file` (first line) or else the `environment` variable; None when
    neither gives one.

    Raises:
        ValueError: the file is missing, unreadable or empty (named).
    """
    if api_key_file is not None:
        path = Path(api_key_file)
        try:
            key = path.read_text().strip()
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"--api-key-file {path}: cannot be read ({error})") from error
        if not key:
            raise ValueError(f"--api-key-file {path}: empty; write the API key on its first line")
    else:
        key = os.environ.get(environment, "").strip()
        if not key:
            return None
    return hashlib.sha256(key.encode()).hexdigest()


def replica_shortfall(replicas: int, num_gpus: float, resources: dict[str, float]) -> str | None:
    """Why `replicas` replicas (one CPU each, Serve's default, and `num_gpus` GPUs each) cannot all be placed on a
    cluster of `resources` (`ray.cluster_resources()`), or None when they fit. Serve would otherwise wait for the
    missing CPUs or GPUs without end, so the command refuses at once."""
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if replicas <= cpus and replicas * num_gpus <= gpus:
        return None
    return (
        f"--replicas {replicas} ask for {replicas} CPUs and {replicas * num_gpus:g} GPUs (one CPU and --num-gpus "
        f"{num_gpus:g} each), but the Ray cluster has {cpus:g} CPUs and {gpus:g} GPUs: Serve would wait for them "
        "without end; lower --replicas or --num-gpus, or join a larger cluster with --ray-address"
    )
