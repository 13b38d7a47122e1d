import io

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import AutoProcessor

from modeling_relsim import RelSimProcessor, UnreadableImageError
from training.tiny_backbone import build_tiny_tokenizer


def test_batch_layout_is_per_sample(processor, images):
    batch = processor(images)
    assert set(batch) == {"input_ids", "attention_mask", "pixel_values", "image_grid_thw"}
    assert batch["image_grid_thw"].tolist() == [[1, 8, 8]] * 3
    assert batch["pixel_values"].shape == (3, 64, 3 * 2 * 14 * 14)
    image_tokens = (batch["input_ids"] == processor.image_token_id).sum(-1)
    assert image_tokens.tolist() == [16, 16, 16]
    assert ((batch["input_ids"] == processor.query_token_id).sum(-1) == 1).all()


def test_padded_pixels_match_the_flat_image_processor_output(aspect_processor, images):
    batch = aspect_processor(images)
    grids = batch["image_grid_thw"]
    assert grids.tolist() == [[1, 6, 8], [1, 8, 8], [1, 10, 4]]
    flat = aspect_processor.image_processor(
        images=[aspect_processor.prepare_image(image) for image in images], do_resize=False, return_tensors="pt"
    )["pixel_values"]
    counts = grids.prod(-1).tolist()
    assert batch["pixel_values"].shape == (3, max(counts), flat.shape[1])
    for sample, piece in enumerate(torch.split(flat, counts)):
        assert torch.equal(batch["pixel_values"][sample, : counts[sample]], piece)
        assert (batch["pixel_values"][sample, counts[sample] :] == 0).all()


def test_prompt_follows_the_chat_template(processor):
    prompt = processor.render_prompt()
    assert prompt.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    assert prompt.endswith(processor.instruction + "<|vision_start|><|image_pad|><|vision_end|><|query|>")


def test_official_prompt_has_no_instruction(processor):
    processor.instruction = None
    assert processor.render_prompt() == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|><|query|>"
    )


def test_system_prompt_can_be_dropped(processor):
    processor.use_system_prompt = False
    assert processor.render_prompt().startswith("<|im_start|>user\n")
    assert "system" not in processor.render_prompt()


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_side(aspect_processor, images, side):
    batch = aspect_processor(images, padding_side=side)
    lengths = batch["attention_mask"].sum(-1)
    assert lengths.tolist() == [len(aspect_processor(image)["input_ids"][0]) for image in images]
    query_positions = (batch["input_ids"] == aspect_processor.query_token_id).int().argmax(-1)
    if side == "right":
        assert query_positions.tolist() == (lengths - 1).tolist()
    else:
        assert (query_positions == batch["input_ids"].shape[1] - 1).all()


def test_query_token_is_added_once():
    tokenizer = build_tiny_tokenizer()
    size = len(tokenizer)
    first = RelSimProcessor(tokenizer=tokenizer, image_size=112)
    second = RelSimProcessor(tokenizer=tokenizer, image_size=112)
    assert len(tokenizer) == size + 1
    assert first.query_token_id == second.query_token_id == size
    assert tokenizer.tokenize("a<|query|>b") == ["a", "<|query|>", "b"]


def test_center_crop_keeps_the_middle_square(processor):
    left, middle, right = (np.full((60, 60, 3), value, np.uint8) for value in (0, 200, 0))
    wide = PIL.Image.fromarray(np.concatenate([left, middle, right], axis=1))
    prepared = processor.prepare_image(wide)
    assert prepared.size == (112, 112)
    assert np.asarray(prepared).min() >= 190


def test_no_crop_keeps_the_aspect_ratio(aspect_processor):
    prepared = aspect_processor.prepare_image(PIL.Image.new("RGB", (300, 100)))
    width, height = prepared.size
    assert width % 28 == 0 and height % 28 == 0
    assert width / height == pytest.approx(3, rel=0.2)
    assert width * height <= 112 * 112


@pytest.mark.parametrize(
    "image",
    [
        PIL.Image.new("RGBA", (40, 40), (255, 0, 0, 0)),
        PIL.Image.new("LA", (40, 40), (0, 0)),
        PIL.Image.new("RGBA", (40, 40), (255, 255, 255, 255)).convert("P"),
        PIL.Image.new("L", (40, 40), 255),
        PIL.Image.new("CMYK", (40, 40), (0, 0, 0, 0)),
        PIL.Image.fromarray(np.full((40, 40), 65535, np.uint16)),
        PIL.Image.new("1", (40, 40), 1),
        np.full((40, 40), 255, np.uint8),
        np.ones((40, 40, 3), np.float32),
        np.full((3, 40, 40), 255, np.uint8),
        torch.ones(3, 40, 40),
        np.full((40, 40, 4), 255, np.uint8),
    ],
    ids=["RGBA-transparent", "LA", "P", "L", "CMYK", "I;16", "1", "HW", "HWC-float", "CHW", "tensor", "HWC4"],
)
def test_every_mode_becomes_white_rgb(processor, image):
    prepared = processor.prepare_image(image)
    assert prepared.mode == "RGB"
    assert prepared.size == (112, 112)
    assert np.asarray(prepared).min() >= 250


def test_files_are_read_and_exif_rotated(processor, tmp_path):
    image = PIL.Image.new("RGB", (80, 40), (0, 0, 255))
    exif = PIL.Image.Exif()
    exif[0x0112] = 6
    image.save(tmp_path / "rotated.jpg", exif=exif)
    opened = processor.prepare_image(tmp_path / "rotated.jpg")
    assert opened.size == (112, 112)
    processor.crop = "none"
    width, height = processor.prepare_image(str(tmp_path / "rotated.jpg")).size
    assert height > width


def test_encoded_bytes_are_decoded(processor, images):
    buffer = io.BytesIO()
    images[0].save(buffer, "PNG")
    from_bytes = processor([buffer.getvalue()])
    from_image = processor([images[0]])
    for key in from_image:
        assert torch.equal(from_bytes[key], from_image[key]), key
    with pytest.raises(UnreadableImageError, match="batch position 1"):
        processor([buffer.getvalue(), buffer.getvalue()[:40]])


def test_missing_file_names_the_file(processor, tmp_path):
    with pytest.raises(UnreadableImageError, match=r"nowhere\.png.*file not found"):
        processor([tmp_path / "nowhere.png"])


def test_truncated_file_names_the_file(processor, tmp_path):
    buffer = io.BytesIO()
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(UnreadableImageError, match=r"cut\.jpg") as error:
        processor([tmp_path / "cut.jpg"])
    assert error.value.source == str(tmp_path / "cut.jpg")


def test_non_image_file_names_the_file(processor, tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(UnreadableImageError, match=r"notes\.png"):
        processor([tmp_path / "notes.png"])


def test_urls_are_not_fetched(processor):
    with pytest.raises(UnreadableImageError, match="img2dataset"):
        processor(["https://example.com/a.jpg"])


def test_bad_arrays_name_their_position(processor, images):
    with pytest.raises(UnreadableImageError, match="batch position 1"):
        processor([images[0], np.zeros((5, 5, 7), np.uint8)])
    with pytest.raises(UnreadableImageError, match="NaN"):
        processor([np.full((5, 5), np.nan, np.float32)])


def test_empty_batch_and_wrong_inputs_are_refused(processor, images):
    with pytest.raises(ValueError, match="empty batch"):
        processor([])
    with pytest.raises(ValueError, match="empty batch"):
        processor(None)
    with pytest.raises(TypeError, match="batch position 0 is a dict"):
        processor([{"image": 1}])
    with pytest.raises(ValueError, match="images only"):
        processor(images, text=["a caption"])


def test_center_crop_needs_a_patch_multiple():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        RelSimProcessor(tokenizer=build_tiny_tokenizer(), image_size=100)


def test_save_and_reload(processor, images, tmp_path):
    processor.instruction = None
    processor.crop = "none"
    processor.save_pretrained(tmp_path)
    assert {"processing_relsim.py", "image_decoding.py"} <= {path.name for path in tmp_path.glob("*.py")}
    # the fixture's PIL backend: with torchvision installed "auto" would pick a backend that agrees only to 1e-6
    reloads = (
        RelSimProcessor.from_pretrained(tmp_path, image_backend="pil"),
        AutoProcessor.from_pretrained(tmp_path, image_backend="pil"),
    )
    for reloaded in reloads:
        assert isinstance(reloaded, RelSimProcessor)
        assert reloaded.settings() == processor.settings()
        assert reloaded.query_token_id == processor.query_token_id
        expected, actual = processor(images), reloaded(images)
        for key in expected:
            assert torch.equal(expected[key], actual[key]), key


def test_loads_from_a_qwen_backbone_folder(backbone_dir, images):
    processor = RelSimProcessor.from_pretrained(backbone_dir, instruction=None, image_size=112)
    assert processor.instruction is None
    assert processor.query_token_id == len(processor.tokenizer) - 1
    assert processor(images)["input_ids"].shape[0] == 3
