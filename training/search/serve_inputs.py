"""The relsim service's request bodies read into images and texts, or refused with a `RequestError` that names the
field and the item index, as an API user needs to fix the request.

Image items are base64 (plain or a `data:image/...;base64,` URL), given as a string where a string cannot be a text
(`/v1/search`'s `image`, `/v1/similarity`'s pairs) or as `{"image": "<base64>"}`; in `/v1/embeddings`'s `input`, a
plain string is a relation text and a `data:image/` URL an image. A URL is refused unless the service was started
with `allow_url_images` (then http(s) only, under `training.url_fetch.FetchPolicy`): by default it fetches nothing
on a client's behalf. Every image is checked against the pixel limit from its header before it is decoded
(`modeling_relsim.image_decoding.decode_image`).
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import re
from dataclasses import dataclass
from typing import Any

import PIL.Image

from modeling_relsim.image_decoding import UnreadableImageError, decode_image
from training.search.serve_settings import ServeSettings
from training.url_fetch import FetchPolicy


URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://|file:")


class RequestError(ValueError):
    """A request the service refuses: HTTP `status`, the offending `field` and, for a list, the item `index`."""

    def __init__(self, message: str, field: str | None = None, index: int | None = None, status: int = 400) -> None:
        where = field if index is None else f"{field}[{index}]"
        super().__init__(f"{where}: {message}" if where else message)
        self.field, self.index, self.status = field, index, status

    def as_json(self) -> dict[str, Any]:
        """The OpenAI-style error body (`openai` clients raise it as their `BadRequestError` etc.)."""
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {
            "error": {"message": str(self), "type": kind, "param": self.field, "index": self.index, "code": self.status}
        }


@dataclass(frozen=True)
class ImageInput:
    """A decoded request image: RGB pixels and the bytes they came from (whose sha256 leaves the query image itself
    out of its search results)."""

    pixels: PIL.Image.Image
    data: bytes


def read_json(body: bytes, settings: ServeSettings) -> dict[str, Any]:
    """The request body as a JSON object (413 past the body limit, 400 when it is not a JSON object)."""
    if len(body) > settings.max_body_bytes:
        raise RequestError(f"{len(body)} bytes, more than the limit of {settings.max_body_bytes}", "body", status=413)
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RequestError(f"malformed JSON ({error})", "body") from error
    if not isinstance(document, dict):
        raise RequestError(f"must be a JSON object, got {type(document).__name__}", "body")
    return document


def is_image_string(value: str) -> bool:
    return value.startswith("data:image/")


def image_input(value: Any, settings: ServeSettings, field: str, index: int | None = None) -> ImageInput:
    """One image item (base64, a data URL, or `{"image": ...}` of either), decoded within the pixel limit."""
    if isinstance(value, dict):
        if set(value) != {"image"}:
            raise RequestError(f'an image item is {{"image": "<base64>"}}, got keys {sorted(value)}', field, index)
        value = value["image"]
    if not isinstance(value, str) or not value:
        raise RequestError(f"an image must be a base64 string or data URL, got {type(value).__name__}", field, index)
    if URL.match(value):
        data = fetched(value, settings, field, index)
    else:
        encoded = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
        if value.startswith("data:") and ";base64," not in value[: value.find(",") + 1]:
            raise RequestError("a data URL image must be base64 (data:image/...;base64,...)", field, index)
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as error:
            raise RequestError(f"not valid base64 ({error})", field, index) from error
    where = field if index is None else f"{field}[{index}]"
    try:
        pixels = decode_image(data, source=where, max_image_pixels=settings.max_image_pixels)
    except UnreadableImageError as error:
        raise RequestError(error.reason, field, index) from error
    return ImageInput(pixels, data)


def fetched(url: str, settings: ServeSettings, field: str, index: int | None) -> bytes:
    """The bytes of an image URL, when the service was told to fetch URLs (`allow_url_images`): http(s) only, also
    after redirects, at most `max_body_bytes` (`training.url_fetch.FetchPolicy`)."""
    if not settings.allow_url_images:
        raise RequestError("URLs are not fetched by this service; send the image's bytes as base64", field, index)
    policy = FetchPolicy(max_image_bytes=settings.max_body_bytes)
    refusal = policy.refusal(url)
    if refusal is not None:
        raise RequestError(refusal, field, index)
    try:
        with policy.opener().open(url, timeout=settings.url_timeout_s) as response:
            return response.read()
    except (OSError, ValueError, http.client.HTTPException) as error:
        raise RequestError(f"cannot fetch {url}: {error}", field, index) from error


def embedding_items(document: dict[str, Any], settings: ServeSettings) -> list[str | ImageInput]:
    """`/v1/embeddings`'s `input`: a string or a list of strings (texts, or `data:image/` URLs) and image items."""
    items = document.get("input")
    if isinstance(items, str):
        items = [items]
    if not isinstance(items, list) or not items:
        raise RequestError("must be a non-empty string or list of strings and image items", "input")
    images = sum(1 for item in items if not isinstance(item, str) or is_image_string(item))
    if images > settings.max_images_per_request:
        raise RequestError(
            f"{images} images, more than the limit of {settings.max_images_per_request}", "input", None, 413
        )
    if len(items) - images > settings.max_texts_per_request:
        raise RequestError(
            f"{len(items) - images} texts, more than the limit of {settings.max_texts_per_request}", "input", None, 413
        )
    read: list[str | ImageInput] = []
    for index, item in enumerate(items):
        if isinstance(item, str) and not is_image_string(item):
            if not item.strip():
                raise RequestError("an empty text", "input", index)
            read.append(item)
        elif isinstance(item, dict) and set(item) == {"text"}:
            if not isinstance(item["text"], str) or not item["text"].strip():
                raise RequestError("text must be a non-empty string", "input", index)
            read.append(item["text"])
        else:
            read.append(image_input(item, settings, "input", index))
    return read


def number(document: dict[str, Any], field: str, default: Any, kind: type, low: float, high: float) -> Any:
    """`document[field]` (or `default`) checked to be a `kind` between `low` and `high`."""
    value = document.get(field, default)
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise RequestError(f"must be {'a number' if kind is float else 'an integer'}, got {value!r}", field)
    if not low <= value <= high:
        raise RequestError(f"must be between {low} and {high}, got {value}", field)
    return kind(value)


def search_query(document: dict[str, Any], settings: ServeSettings) -> tuple[ImageInput | None, str | None]:
    """`/v1/search`'s `image` and/or `text`."""
    image = document.get("image")
    text = document.get("text")
    if text is not None and (not isinstance(text, str) or not text.strip()):
        raise RequestError("must be a non-empty string", "text")
    if image is None and text is None:
        raise RequestError("a search needs an image, a relation text, or both", "image")
    return (image_input(image, settings, "image") if image is not None else None), (text.strip() if text else None)


def similarity_pairs(document: dict[str, Any], settings: ServeSettings) -> list[tuple[ImageInput, ImageInput]]:
    """`/v1/similarity`'s `pairs`: a list of two-image lists."""
    pairs = document.get("pairs")
    if not isinstance(pairs, list) or not pairs:
        raise RequestError("must be a non-empty list of [image, image] pairs", "pairs")
    if 2 * len(pairs) > settings.max_images_per_request:
        raise RequestError(
            f"{2 * len(pairs)} images, more than the limit of {settings.max_images_per_request}", "pairs", None, 413
        )
    read = []
    for index, pair in enumerate(pairs):
        if not isinstance(pair, list) or len(pair) != 2:
            raise RequestError("a pair is a list of two images", "pairs", index)
        read.append((image_input(pair[0], settings, "pairs", index), image_input(pair[1], settings, "pairs", index)))
    return read
