"""One image decoder for every path: the same file gives the same RGB array to the processor, the training collator,
the evaluation's pool embedding and the judges; and the pixel limit refuses oversized files before decoding them."""

import base64
import io
import struct
import zlib

import numpy as np
import PIL.Image
import pytest
import torch
from evaluation_helpers import MeanColourMethod

from modeling_relsim import DEFAULT_MAX_IMAGE_PIXELS, RelSimProcessor, UnreadableImageError, decode_image
from training.evaluation.embed import embed_pool, read_image
from training.evaluation.embedding_cache import EmbeddingCache
from training.evaluation.judges import judge_retrievals
from training.evaluation.judges.cache import JudgementCache
from training.evaluation.judges.openai_compatible import image_data_url
from training.evaluation.pool import PoolItem
from training.evaluation.retrieval import Retrieval
from training.tiny_backbone import build_tiny_processor
from training.trainer.collator import RelSimCollator
from training.vlm.chat import QwenVLChat


SIDE = 56  # a multiple of patch_size * merge_size (28): neither relsim's crop nor the judge's resize changes it


def _rgba_with_transparency(path):
    pixels = np.zeros((SIDE, SIDE, 4), np.uint8)
    pixels[:, : SIDE // 2] = (255, 0, 0, 255)  # opaque red
    pixels[:, SIDE // 2 :] = (0, 0, 255, 0)  # blue hidden under full transparency
    pixels[: SIDE // 2, SIDE // 2 :] = (0, 255, 0, 128)  # half-transparent green
    PIL.Image.fromarray(pixels, "RGBA").save(path)


def _sixteen_bit_grey(path):
    columns = np.array([0, 1000, 32896, 65535], np.uint16).repeat(SIDE // 4)
    PIL.Image.fromarray(np.tile(columns, (SIDE, 1))).save(path)


def _exif_rotated_jpeg(path):
    pixels = np.zeros((SIDE, SIDE, 3), np.uint8)
    pixels[:, SIDE // 2 :] = 255  # stored: left half black, right half white
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": the left half ends up on top
    PIL.Image.fromarray(pixels).save(path, quality=95, exif=exif)


def _palette_with_transparent_index(path):
    indices = np.zeros((SIDE, SIDE), np.uint8)
    indices[SIDE // 2 :] = 1
    image = PIL.Image.fromarray(indices, "P")
    image.putpalette([0, 0, 0, 200, 30, 30] + [0, 0, 0] * 254)
    image.save(path, transparency=0)  # index 0 (black) is transparent


def _check_rgba(array):
    assert (array[:, : SIDE // 2] == (255, 0, 0)).all()
    assert (array[SIDE // 2 :, SIDE // 2 :] == 255).all()  # transparent is white, not the hidden blue
    blend = array[: SIDE // 2, SIDE // 2 :].reshape(-1, 3)
    assert (np.abs(blend.astype(int) - (127, 255, 127)) <= 1).all()  # green at alpha 128 over white


def _check_sixteen_bit(array):
    assert (array == array[..., :1]).all()  # grey
    assert array[0, :: SIDE // 4, 0].tolist() == [0, 4, 128, 255]  # value / 257, not clipped at 255


def _check_rotated(array):
    assert array[: SIDE // 2 - 4].max() < 20 and array[SIDE // 2 + 4 :].min() > 235  # black on top, white below


def _check_palette(array):
    assert (array[: SIDE // 2] == 255).all()  # the transparent index is white, not its black palette colour
    assert (array[SIDE // 2 :] == (200, 30, 30)).all()


KINDS = {
    "rgba.png": (_rgba_with_transparency, _check_rgba),
    "grey16.png": (_sixteen_bit_grey, _check_sixteen_bit),
    "rotated.jpg": (_exif_rotated_jpeg, _check_rotated),
    "palette.png": (_palette_with_transparent_index, _check_palette),
}


@pytest.fixture(params=list(KINDS))
def image_file(request, tmp_path):
    write, check = KINDS[request.param]
    path = tmp_path / request.param
    write(path)
    return path, check


def test_decoding_a_file_gives_upright_white_backed_8_bit_rgb(image_file):
    path, check = image_file
    array = np.asarray(decode_image(path))
    assert array.shape == (SIDE, SIDE, 3) and array.dtype == np.uint8
    check(array)


def test_processor_reads_paths_bytes_opened_and_decoded_files_identically(image_file):
    path, check = image_file
    processor = build_tiny_processor(image_size=SIDE)
    expected = np.asarray(decode_image(path))
    # a decoded image decodes to itself: the evaluation decodes first, then hands the image to the processor
    for given in (path, str(path), path.read_bytes(), PIL.Image.open(path), decode_image(path)):
        prepared = np.asarray(processor.prepare_image(given))
        assert np.array_equal(prepared, expected), type(given).__name__
    check(expected)


def test_collator_sees_the_same_pixels(image_file):
    path, _ = image_file
    processor = build_tiny_processor(image_size=SIDE)
    expected = processor.batch_prepared_images([PIL.Image.fromarray(np.asarray(decode_image(path)))])
    for image in ({"bytes": path.read_bytes(), "path": path.name}, {"bytes": None, "path": str(path)}, str(path)):
        batch = RelSimCollator(processor)([{"image": image, "caption": '"c"'}])
        assert batch["unreadable_images"] == []
        assert torch.equal(batch["pixel_values"], expected["pixel_values"])


class _RecordingMethod(MeanColourMethod):
    """Keeps the arrays the evaluation hands to a method's preprocessing."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def preprocess(self, images):
        self.seen += [np.asarray(image) for image in images]
        return super().preprocess(images)


def test_evaluation_embedding_sees_the_same_pixels(image_file, tmp_path):
    path, _ = image_file
    expected = np.asarray(decode_image(path))
    image, digest = read_image(str(path))
    assert np.array_equal(np.asarray(image), expected)
    method = _RecordingMethod()
    cache = EmbeddingCache(tmp_path / "cache", method.cache_identity())
    report = embed_pool(method, [PoolItem("a" * 32, str(path), "test")], cache, show_progress=False)
    assert report.embedded == 1 and not report.failures
    assert len(method.seen) == 1 and np.array_equal(method.seen[0], expected)
    assert cache.content_digests["a" * 32] == digest


class _RecordingJudge:
    def __init__(self):
        self.seen = []

    def identity(self):
        return {"judge": "recording"}

    def ask_many(self, pairs):
        self.seen += [(np.asarray(query), np.asarray(candidate)) for query, candidate in pairs]
        return ["Score: 5"] * len(pairs)


def test_judges_see_the_same_pixels(image_file, backbone_dir, tmp_path):
    path, _ = image_file
    expected = np.asarray(decode_image(path))
    items = {"q" * 32: PoolItem("q" * 32, str(path), "test"), "c" * 32: PoolItem("c" * 32, str(path), "test")}
    judge = _RecordingJudge()
    judge_retrievals(
        judge, [Retrieval("m", "q" * 32, ["c" * 32], [1.0])], items, JudgementCache(tmp_path / "a"), show_progress=False
    )
    assert [np.array_equal(array, expected) for array in judge.seen[0]] == [True, True]

    chat = QwenVLChat.from_pretrained(str(backbone_dir), max_pixels=SIDE * SIDE)
    assert np.array_equal(np.asarray(chat._resized(PIL.Image.open(path))), expected)
    batch = chat.build_batch([([PIL.Image.open(path)], "Describe.")])
    reference = chat.image_processor(images=[PIL.Image.fromarray(expected)], do_resize=False, return_tensors="pt")
    assert torch.equal(batch["pixel_values"], reference["pixel_values"])


def test_the_remote_judge_is_sent_transparency_as_white(tmp_path):
    _rgba_with_transparency(tmp_path / "rgba.png")
    url = image_data_url(PIL.Image.open(tmp_path / "rgba.png"))
    sent = np.asarray(PIL.Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    assert sent[SIDE // 2 + 4 :, SIDE // 2 + 4 :].min() > 240  # the hidden blue would be (0, 0, 255)


def _png_declaring_size(path, width, height):
    """A valid 8x8 PNG whose header claims `width` x `height`: opening it costs nothing, decoding would fail."""
    buffer = io.BytesIO()
    PIL.Image.new("RGB", (8, 8)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    header = struct.pack(">II", width, height) + data[24:29]
    data[16:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + header))
    path.write_bytes(bytes(data))
    return path


def test_a_144_megapixel_file_is_refused_before_decoding(tmp_path):
    path = _png_declaring_size(tmp_path / "huge.png", 12000, 12000)
    with PIL.Image.open(path) as image:
        assert image.size == (12000, 12000)
    for read in (decode_image, lambda file: build_tiny_processor().prepare_image(file), lambda f: read_image(str(f))):
        with pytest.raises(UnreadableImageError, match=r"12000x12000 is 144,000,000 pixels.*max_image_pixels") as error:
            read(path)
        assert error.value.source == str(path)


def test_the_default_limit_is_8192_squared(tmp_path):
    assert DEFAULT_MAX_IMAGE_PIXELS == 8192 * 8192
    with pytest.raises(UnreadableImageError, match="max_image_pixels=67,108,864"):
        decode_image(_png_declaring_size(tmp_path / "over.png", 8193, 8192))
    with pytest.raises(UnreadableImageError) as error:
        decode_image(_png_declaring_size(tmp_path / "at.png", 8192, 8192))
    assert "max_image_pixels" not in error.value.reason  # past the limit check; it fails on its missing pixel data


def test_the_pixel_limit_is_configurable_and_saved(tmp_path):
    PIL.Image.new("RGB", (100, 80), (10, 20, 30)).save(tmp_path / "photo.png")
    assert decode_image(tmp_path / "photo.png", max_image_pixels=8000).size == (100, 80)
    with pytest.raises(UnreadableImageError, match=r"photo\.png: 100x80 is 8,000 pixels"):
        decode_image(tmp_path / "photo.png", max_image_pixels=7999)
    with pytest.raises(UnreadableImageError, match="batch position 0: 100x80"):
        decode_image(np.zeros((80, 100, 3), np.uint8), source="at batch position 0", max_image_pixels=7999)
    strict = build_tiny_processor(max_image_pixels=5000)
    with pytest.raises(UnreadableImageError, match="max_image_pixels=5,000"):
        strict([tmp_path / "photo.png"])
    strict.save_pretrained(tmp_path / "processor")
    reloaded = RelSimProcessor.from_pretrained(tmp_path / "processor")
    assert reloaded.max_image_pixels == 5000
    unlimited = build_tiny_processor(max_image_pixels=None)
    assert unlimited([tmp_path / "photo.png"])["pixel_values"].shape[0] == 1
    tiny = np.zeros((2, 2, 3), np.uint8)
    assert build_tiny_processor(max_image_pixels=4)([tiny])["pixel_values"].shape[0] == 1
    with pytest.raises(ValueError, match="max_image_pixels must be a positive"):
        build_tiny_processor(max_image_pixels=0)
