"""relsim as a service on Ray Serve: OpenAI-style embeddings, search with "why" labels, indexed images and pairwise
scores over HTTP, batched across concurrent requests.

One deployment (`RelsimService`, a FastAPI ingress) holds the model, the text encoder, the caption bank and the
opened index; Serve runs it as one or more replicas (on GPUs with `ray_actor_options: {num_gpus: 1}`, see
`training/configs/serve-gpu.yaml`). Images and texts of concurrent requests are embedded together (`serve.batch`).
Between requests a replica compares the index folder's `index.json` with the generation it serves and opens a new
one when an `index` run has committed it: a request keeps the generation it started with, so none sees half of each.
"""

# no `from __future__ import annotations`: Serve's class ingress rebuilds the routes, and FastAPI then cannot
# resolve string annotations (`request: Request` would become a required query parameter: 422 on every call)
import asyncio
import base64
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from ray import serve
from ray.serve import Application

from training.search.generation import INDEX_FILE
from training.search.index import SearchIndex
from training.search.model import SearchModel
from training.search.query import combined_query, nearest
from training.search.serve_inputs import (
    ImageInput,
    RequestError,
    embedding_items,
    number,
    read_json,
    search_query,
    similarity_pairs,
)
from training.search.serve_settings import ServeSettings, api_key_sha256
from training.search.why import CaptionBank, why


logger = logging.getLogger("relsim.search.serve")

APPLICATION = "relsim"
# requests past a replica's bound that Serve still hands it, to be refused with Retry-After (refusing is cheap)
REFUSALS_IN_FLIGHT = 32
api = FastAPI(title="relsim", description="relational visual similarity: embeddings, search and pairwise scores")


def error_response(error: RequestError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error.as_json(), status_code=error.status, headers=headers)


def generation_of(info_bytes: bytes) -> str:
    """A short name of an index generation: the sha256 of its `index.json`."""

    return hashlib.sha256(info_bytes).hexdigest()[:16]


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, read no further than `limit` bytes (a body sent without a length, or with a false one, is
    stopped there: 413)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"more than the limit of {limit} bytes", "body", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


def embedding_value(vector: torch.Tensor, encoding: str) -> list[float] | str:
    """An embedding as OpenAI sends it: a list of floats, or base64 of little-endian float32."""
    if encoding == "base64":
        return base64.b64encode(vector.float().numpy().astype("<f4").tobytes()).decode()
    return vector.float().tolist()


@serve.deployment(name="RelsimService")
@serve.ingress(api)
class RelsimService:
    """A replica: the model that made the index, the index, and the caption bank of the "why" labels.

    Args:
        index_dir: the index folder written by `python -m training.search index`.
        model: the relsim folder or hub id (default: the one the index records); it must be the model that made it.
        device: where the model runs (`cuda` on a GPU replica).
        settings: batching, limits and the API key's sha256.
    """

    def __init__(
        self, index_dir: str, model: str | None = None, device: str = "cpu", settings: ServeSettings | None = None
    ) -> None:
        self.settings = settings or ServeSettings()
        self.index_dir = Path(index_dir)
        self.index = SearchIndex(self.index_dir)
        self.model = SearchModel.load(model or self.index.identity["model"], device=device)
        self.index.check_model(self.model)
        self.bank = CaptionBank.read(self.settings.caption_bank, self.model)  # loads the text encoder too
        for batched in (self.embed_image_batch, self.embed_text_batch):
            batched.set_max_batch_size(self.settings.max_batch_size)
            batched.set_batch_wait_timeout_s(self.settings.batch_wait_timeout_s)
        self.pending = 0
        # forwards and items of each batched method: /readyz shows them, so batching can be seen working
        self.batches = {"image_forwards": 0, "images": 0, "text_forwards": 0, "texts": 0}
        self.reload_lock = asyncio.Lock()
        self.refused_info: bytes | None = None
        self.checked_at = 0.0

    # -- batching -----------------------------------------------------------------------------------------------

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def embed_image_batch(self, images: list[ImageInput]) -> list[torch.Tensor]:
        """`(dim,)` unit vectors of images from concurrent requests, embedded in one forward."""
        self.batches["image_forwards"] += 1
        self.batches["images"] += len(images)
        embedded = await asyncio.to_thread(self.model.embed_images, [image.pixels for image in images])
        if embedded.failures:
            raise RuntimeError(f"decoded images failed to embed: {embedded.failures[0]}")
        return list(embedded.embeddings)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def embed_text_batch(self, texts: list[str]) -> list[torch.Tensor]:
        """`(dim,)` unit vectors of relation texts from concurrent requests, encoded together."""
        self.batches["text_forwards"] += 1
        self.batches["texts"] += len(texts)
        return list(await asyncio.to_thread(self.model.encode_texts, texts))

    async def embed(self, items: list[str | ImageInput]) -> list[torch.Tensor]:
        return list(
            await asyncio.gather(
                *(
                    self.embed_text_batch(item) if isinstance(item, str) else self.embed_image_batch(item)
                    for item in items
                )
            )
        )

    # -- what every guarded request goes through -------------------------------------------------------------------

    async def current_index(self) -> SearchIndex:
        """The newest committed generation of the index folder (opened here when `index.json` changed), or the one
        served so far while a new one cannot be opened (logged)."""
        now = time.monotonic()
        if now - self.checked_at < self.settings.reload_check_s:
            return self.index
        self.checked_at = now
        try:
            info = (self.index_dir / INDEX_FILE).read_bytes()
        except OSError:
            return self.index
        if info == self.index.record or info == self.refused_info:
            return self.index
        async with self.reload_lock:
            if info != self.index.record:
                try:
                    opened = await asyncio.to_thread(SearchIndex, self.index_dir)
                    opened.check_model(self.model)
                except (OSError, ValueError) as error:
                    logger.warning(
                        "keeping index generation %s: the new one cannot be served (%s)",
                        generation_of(self.index.record),
                        error,
                    )
                    self.refused_info = info
                    return self.index
                logger.info("serving index generation %s (%d images)", generation_of(opened.record), len(opened))
                self.index = opened
        return self.index

    async def guarded(self, request: Request, answer: Callable[[bytes], Awaitable[Any]], body: bool = True) -> Response:
        """`answer(body)` behind the API key, the pending-request bound, the body limit and the timeout; a refused
        or failed request gets a JSON error, never a traceback."""
        settings = self.settings
        token = request.headers.get("authorization", "")
        token = token[7:] if token.lower().startswith("bearer ") else None
        if not settings.accepts_token(token):
            return error_response(
                RequestError("a valid API key is required (Authorization: Bearer <key>)", "authorization", status=401),
                {"WWW-Authenticate": "Bearer"},
            )
        if self.pending >= settings.max_pending_requests:
            error = RequestError(f"the service is busy ({self.pending} requests in progress); retry later", status=503)
            return error_response(error, {"Retry-After": str(settings.retry_after_s)})
        length = request.headers.get("content-length")
        if body and length and length.isdigit() and int(length) > settings.max_body_bytes:
            return error_response(
                RequestError(f"{length} bytes, more than the limit of {settings.max_body_bytes}", "body", status=413)
            )
        self.pending += 1
        try:
            data = await read_body(request, settings.max_body_bytes) if body else b""
            result = await asyncio.wait_for(answer(data), settings.request_timeout_s)
            return result if isinstance(result, Response) else JSONResponse(result)
        except RequestError as error:
            return error_response(error)
        except TimeoutError:
            return error_response(RequestError(f"not answered within {settings.request_timeout_s} s", status=504))
        except Exception:
            logger.exception("request to %s failed", request.url.path)
            return error_response(RequestError("internal error (logged by the service)", status=500))
        finally:
            self.pending -= 1

    # -- endpoints ------------------------------------------------------------------------------------------------

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self) -> dict[str, Any]:
        index = self.index
        return {
            "ready": True,
            "model": self.model.name,
            "index": str(self.index_dir),
            "images": len(index),
            "generation": generation_of(index.record),
            "batches": dict(self.batches),
        }

    @api.post("/v1/embeddings")
    async def embeddings(self, request: Request) -> Response:
        return await self.guarded(request, self.answer_embeddings)

    async def answer_embeddings(self, data: bytes) -> dict[str, Any]:
        document = read_json(data, self.settings)
        encoding = document.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise RequestError(f"must be float or base64, got {encoding!r}", "encoding_format")
        width = self.model.model.config.projection_dim
        if document.get("dimensions") not in (None, width):
            raise RequestError(f"this model gives {width}-d embeddings, got {document['dimensions']!r}", "dimensions")
        items = await asyncio.to_thread(embedding_items, document, self.settings)  # decoding: off the event loop
        vectors = await self.embed(items)
        rows = [
            {"object": "embedding", "index": i, "embedding": embedding_value(vector, encoding)}
            for i, vector in enumerate(vectors)
        ]
        return {
            "object": "list",
            "data": rows,
            "model": self.model.name,
            "usage": {"prompt_tokens": 0, "total_tokens": 0},
        }

    @api.post("/v1/search")
    async def search(self, request: Request) -> Response:
        return await self.guarded(request, self.answer_search)

    async def answer_search(self, data: bytes) -> dict[str, Any]:
        document = read_json(data, self.settings)
        image, text = await asyncio.to_thread(search_query, document, self.settings)
        k = number(document, "top_k", 10, int, 1, self.settings.max_top_k)
        text_weight = number(document, "text_weight", 0.5, float, 0.0, 1.0)
        exclude_query = document.get("exclude_query", True)
        index = await self.current_index()  # this request's generation, whatever a reload does meanwhile
        image_vector, text_vector = None, None
        if image is not None and text:
            image_vector, text_vector = await self.embed([image, text])
        elif image is not None:
            (image_vector,) = await self.embed([image])
        else:
            (text_vector,) = await self.embed([text])
        query = combined_query(image_vector, text_vector, text_weight)
        sha256 = None
        if image is not None and exclude_query:
            sha256 = hashlib.sha256(image.data).hexdigest()
        hits = await asyncio.to_thread(nearest, index, query, k, sha256)
        stored = await asyncio.to_thread(index.stored_vectors, [hit.id for hit in hits]) if hits else []
        results = []
        for hit, vector in zip(hits, stored, strict=True):
            label = why(self.bank, query, vector, top=1)[0]
            results.append(
                {
                    "rank": hit.rank,
                    "id": hit.id,
                    "path": hit.path,
                    "score": hit.score,
                    "image_hash": hit.image_hash,
                    "why": label.caption,
                    "why_score": label.score,
                }
            )
        return {"results": results, "generation": generation_of(index.record)}

    @api.get("/v1/images/{image_id}")
    async def image(self, image_id: str, request: Request) -> Response:
        return await self.guarded(request, lambda data: self.answer_image(image_id), body=False)

    async def answer_image(self, image_id: str) -> Response:
        index = await self.current_index()
        if not image_id.isdigit() or int(image_id) >= len(index):
            raise RequestError(f"no indexed image has id {image_id!r} (ids 0 to {len(index) - 1})", "id", status=404)
        entry = index.entries[int(image_id)]
        path = Path(entry.path)
        if not path.is_file() or path.stat().st_size != entry.size:
            raise RequestError(f"image {image_id} is no longer the file that was indexed", "id", status=404)
        return FileResponse(path)

    @api.post("/v1/similarity")
    async def similarity(self, request: Request) -> Response:
        return await self.guarded(request, self.answer_similarity)

    async def answer_similarity(self, data: bytes) -> dict[str, Any]:
        pairs = await asyncio.to_thread(similarity_pairs, read_json(data, self.settings), self.settings)
        vectors = await self.embed([image for pair in pairs for image in pair])
        scores = [float(vectors[2 * i] @ vectors[2 * i + 1]) for i in range(len(pairs))]
        return {"scores": scores, "model": self.model.name}


def deployment(
    index_dir: str | Path,
    model: str | None = None,
    device: str = "cpu",
    settings: ServeSettings | None = None,
    replicas: int = 1,
    num_gpus: float = 0,
) -> Application:
    """The bound application: `replicas` replicas of `RelsimService`.

    A replica holds up to `max_pending_requests` requests and answers more with its own fast 503 + `Retry-After`, so
    Serve lets `REFUSALS_IN_FLIGHT` more through to it; Serve's queue in front (whose 503 is plain text, without
    `Retry-After`) is bounded as well, far enough out that it only stops what the replicas could not refuse in time."""
    settings = settings or ServeSettings()
    options = serve_options(settings)
    options["num_replicas"] = replicas
    if num_gpus:
        options["ray_actor_options"] = {"num_gpus": num_gpus}
    return RelsimService.options(**options).bind(str(Path(index_dir).resolve()), model, device, settings)


def serve_options(settings: ServeSettings) -> dict[str, Any]:
    """The deployment options that make the replicas' own bound the one clients meet (see `deployment`)."""
    return {
        "max_ongoing_requests": settings.max_pending_requests + REFUSALS_IN_FLIGHT,
        "max_queued_requests": 2 * (settings.max_pending_requests + REFUSALS_IN_FLIGHT),
    }


def app_builder(args: dict[str, Any]) -> Application:
    """What a Serve config's `import_path: training.search.serve_app:app_builder` builds from its `args`: `index`
    (required), `model`, `device`, `api_key_file` and any `ServeSettings` field; without `api_key_sha256` or
    `api_key_file`, the key is `$RELSIM_API_KEY` where the application is built (none: an open service). Replicas,
    GPUs and autoscaling come from the config's `deployments` section."""
    args = dict(args)
    if "index" not in args:
        raise ValueError("the Serve config's args must name the index folder: args: {index: /path/to/photos.index}")
    index_dir, model, device = args.pop("index"), args.pop("model", None), args.pop("device", "cpu")
    key_file = args.pop("api_key_file", None)
    if "api_key_sha256" not in args:
        args["api_key_sha256"] = api_key_sha256(key_file)
    settings = ServeSettings(**args)
    return RelsimService.options(**serve_options(settings)).bind(
        str(Path(index_dir).resolve()), model, device, settings
    )


def start(application: Application, host: str = "127.0.0.1", port: int = 8000, blocking: bool = False) -> None:
    """Runs `application` on Serve's HTTP proxy at `host:port` (on the Ray that `ray.init` connected to)."""
    serve.start(http_options={"host": host, "port": port})
    serve.run(application, name=APPLICATION, route_prefix="/", blocking=blocking)


def numpy_embedding(value: list[float] | str) -> np.ndarray:
    """An embedding from a response (either encoding) as a float32 array."""
    if isinstance(value, str):
        return np.frombuffer(base64.b64decode(value), dtype="<f4")
    return np.asarray(value, dtype=np.float32)
