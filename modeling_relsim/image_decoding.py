"""The one way relsim turns an image input (file, encoded bytes, PIL image, array) into RGB pixels.

Every reader goes through `decode_image`: the processor (and with it the training collator and `embed_images`), the
evaluation's pool embedding, the judges and the captioner. So training, inference and evaluation see identical pixels
for the same file: EXIF rotation applied, transparency composited onto white, 16-bit values scaled (not clipped) to
8 bits, and oversized images refused before they are decoded. Resizing is not done here: each model resizes its own
way (relsim centre-crops, the VLM judges keep the aspect ratio).

This file travels as remote code next to saved weights, so it imports only torch, transformers, numpy and Pillow.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from transformers.utils import is_vision_available


if is_vision_available():
    import PIL.ExifTags
    import PIL.Image
    import PIL.ImageOps

# 8192 x 8192 (67.1 million pixels). Larger than any common camera (61 MP full-frame, 8K video frames are 33 MP)
# and 340 times what relsim reads (448 x 448), so no real photo is refused; yet one decode stays under 256 MB
# (RGBA) per DataLoader worker, while a 144 MP PNG would cost 1.2 GB and ~10 s only to be shrunk to 448 x 448.
# Below Pillow's own warning (89 MP), which otherwise is all such a file gets.
DEFAULT_MAX_IMAGE_PIXELS = 8192 * 8192

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


class UnreadableImageError(ValueError):
    """An image input could not be turned into pixels; `source` names it (a file path or the batch position)."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"cannot read image {source}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # keeps (source, reason) when the error crosses a process boundary (DataLoader workers)
        return type(self), (self.source, self.reason)


def is_single_image(value: Any) -> bool:
    """Whether `value` is one image input (a path, encoded bytes, a PIL image, a 2-D/3-D array or tensor)."""
    if isinstance(value, (str, os.PathLike, bytes, bytearray)):
        return True
    if is_vision_available() and isinstance(value, PIL.Image.Image):
        return True
    return isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim in (2, 3)


def as_image_list(images: Any) -> list[Any]:
    """One image, a 4-D stack `(N, H, W, C)` / `(N, C, H, W)`, or an iterable of images -> a list of images.

    A single path or array must not be iterated (a string into characters, an array into rows), so single images are
    recognised first; anything else that is not an iterable of images is refused.
    """
    if is_single_image(images):
        return [images]
    if isinstance(images, (np.ndarray, torch.Tensor)):
        if images.ndim == 4:
            return list(images)
        raise TypeError(
            f"an image array must have 2 (HW), 3 (HWC or CHW) or 4 (a stack of images) dimensions, got shape "
            f"{tuple(images.shape)}"
        )
    if isinstance(images, Mapping) or not isinstance(images, Iterable):
        raise TypeError(
            f"expected an image (file path, encoded bytes, PIL image, array, tensor) or a list of them, "
            f"got a {type(images).__name__}"
        )
    return list(images)


def image_source(image: Any, fallback: str) -> str:
    """How an error names `image`: its path, the file a PIL image was opened from, else `fallback`."""
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    filename = (
        getattr(image, "filename", None) if is_vision_available() and isinstance(image, PIL.Image.Image) else None
    )
    return str(filename) if filename else fallback


def _check_pixel_limit(width: int, height: int, source: str, max_image_pixels: int | None) -> None:
    if max_image_pixels is not None and width * height > max_image_pixels:
        raise UnreadableImageError(
            source,
            f"{width}x{height} is {width * height:,} pixels, more than the limit max_image_pixels="
            f"{max_image_pixels:,}; downscale the file or raise the limit (None disables it)",
        )


def _open_encoded(file: str | io.BytesIO, source: str, max_image_pixels: int | None) -> PIL.Image.Image:
    """Decodes the whole file now, so a truncated or corrupt one fails here and names itself; the size is checked
    from the header, before the pixels are decoded."""
    try:
        with PIL.Image.open(file) as image:
            _check_pixel_limit(image.width, image.height, source, max_image_pixels)
            image.load()
            return PIL.ImageOps.exif_transpose(image)
    except FileNotFoundError as error:
        raise UnreadableImageError(source, "file not found") from error
    except UnreadableImageError:
        raise
    except (PIL.UnidentifiedImageError, PIL.Image.DecompressionBombError, OSError, SyntaxError, ValueError) as error:
        raise UnreadableImageError(source, f"{type(error).__name__}: {error}") from error


def _loaded_upright(image: PIL.Image.Image, source: str, max_image_pixels: int | None) -> PIL.Image.Image:
    """A caller's PIL image, loaded (a lazily opened file may be truncated) and rotated by its EXIF orientation, as
    the same file read from disk would be; the caller's object is not modified beyond loading."""
    _check_pixel_limit(image.width, image.height, source, max_image_pixels)
    try:
        image.load()
        orientation = image.getexif().get(PIL.ExifTags.Base.Orientation, 1)
    except (OSError, SyntaxError, ValueError) as error:
        raise UnreadableImageError(source, f"{type(error).__name__}: {error}") from error
    return PIL.ImageOps.exif_transpose(image) if orientation != 1 else image


def _image_from_array(array: np.ndarray | torch.Tensor, source: str) -> PIL.Image.Image:
    """HW, HWC or CHW arrays with 1, 3 or 4 channels: uint8, uint16 (scaled by 1/257 like a 16-bit file), other
    integers (16-bit range assumed past 255), bool, or float in [0, 1] (or [0, 255] when larger)."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    if array.ndim == 3 and array.shape[-1] not in (1, 3, 4) and array.shape[0] in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)) or 0 in array.shape:
        raise UnreadableImageError(source, f"array of shape {tuple(array.shape)} is not an HW, HWC or CHW image")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise UnreadableImageError(source, "float array holds NaN or infinite values")
        scale = 255.0 if array.max() <= 1.0 else 1.0
        array = np.clip(array * scale, 0, 255).round().astype(np.uint8)
    elif array.dtype != np.uint8:
        scale = 257.0 if array.dtype == np.uint16 or array.max() > 255 else 1.0
        array = np.clip(array / scale, 0, 255).round().astype(np.uint8)
    return PIL.Image.fromarray(np.ascontiguousarray(array))


def _to_rgb(image: PIL.Image.Image, source: str) -> PIL.Image.Image:
    """Transparent pixels become white rather than whatever colour happens to sit under the alpha channel; 16-bit
    values are scaled, not clipped at 255."""
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES:
        return _image_from_array(np.asarray(image, dtype=np.uint16), source).convert("RGB")
    if image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.int64 if image.mode == "I" else np.float32)
        return _image_from_array(values, source).convert("RGB")
    has_alpha = "A" in image.getbands() or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = PIL.Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def decode_image(
    image: Any, source: str | None = None, max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
) -> PIL.Image.Image:
    """Any image input -> an upright RGB PIL image (`np.asarray` of it is the `(height, width, 3)` uint8 array).

    Args:
        image: a file path, encoded file bytes, a PIL image (a lazily opened one is loaded here), or an HW / HWC /
            CHW numpy array or torch tensor. URLs are refused: download the images first.
        source: how errors name the image; defaults to its path or file name.
        max_image_pixels: images with more pixels are refused before decoding (`None`: no limit of ours; Pillow's
            own decompression-bomb error at twice `PIL.Image.MAX_IMAGE_PIXELS` still applies).

    Raises:
        UnreadableImageError: missing, truncated, corrupt or non-image file, too many pixels, empty or malformed
            array; it names the file (or `source`).
        TypeError: `image` is none of the inputs above.
    """
    if max_image_pixels is not None and max_image_pixels < 1:
        raise ValueError(f"max_image_pixels must be a positive number of pixels or None, got {max_image_pixels}")
    if source is None:
        source = image_source(image, "given in memory")
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if path.startswith(("http://", "https://")):
            raise UnreadableImageError(source, "URLs are not fetched; download the images first (e.g. img2dataset)")
        decoded = _open_encoded(path, source, max_image_pixels)
    elif isinstance(image, (bytes, bytearray)):
        decoded = _open_encoded(io.BytesIO(image), source, max_image_pixels)
    elif is_vision_available() and isinstance(image, PIL.Image.Image):
        decoded = _loaded_upright(image, source, max_image_pixels)
    elif isinstance(image, (np.ndarray, torch.Tensor)):
        decoded = _image_from_array(image, source)
        _check_pixel_limit(decoded.width, decoded.height, source, max_image_pixels)
    else:
        raise TypeError(
            f"image {source} is a {type(image).__name__}; "
            "expected a file path, encoded bytes, a PIL image, a numpy array or a torch tensor"
        )
    if decoded.width == 0 or decoded.height == 0:
        raise UnreadableImageError(source, f"image has an empty size {decoded.width}x{decoded.height}")
    return _to_rgb(decoded, source)


__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "UnreadableImageError",
    "as_image_list",
    "decode_image",
    "image_source",
    "is_single_image",
]
