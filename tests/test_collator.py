import io

import pytest
import torch
from helpers import pattern_dataset

from training.trainer.collator import RelSimCollator
from training.trainer.losses import caption_id


@pytest.fixture
def examples():
    rows = []
    for index, example in enumerate(pattern_dataset(4, seed=1)):
        buffer = io.BytesIO()
        example["image"].save(buffer, "PNG")
        rows.append(
            {"image": {"bytes": buffer.getvalue(), "path": f"photo-{index}.png"}, "caption": example["caption"]}
        )
    return rows


def test_batch_holds_model_inputs_and_caption_ids(processor, examples):
    batch = RelSimCollator(processor)(examples)
    assert batch["input_ids"].shape[0] == 4 and batch["pixel_values"].shape[0] == 4
    assert batch["captions"][0] == "stripes of {Colour} running from left to right"
    assert batch["caption_ids"].dtype == torch.long
    assert batch["caption_ids"].tolist() == [caption_id(caption) for caption in batch["captions"]]
    assert batch["unreadable_images"] == [] and batch["num_examples"] == 4


def test_unreadable_images_are_left_out_and_listed(processor, examples, tmp_path):
    examples[1]["image"]["bytes"] = b"\x89PNG broken"
    examples[3] = {"image": str(tmp_path / "gone.jpg"), "caption": examples[3]["caption"]}
    examples.append({"image": "", "image_hash": "abc123", "caption": '"x"'})
    batch = RelSimCollator(processor)(examples)
    assert batch["input_ids"].shape[0] == 2 and len(batch["captions"]) == 2
    assert batch["num_examples"] == 5
    sources = [failure["source"] for failure in batch["unreadable_images"]]
    assert sources == ["photo-1.png", str(tmp_path / "gone.jpg"), "abc123"]
    reasons = [failure["reason"] for failure in batch["unreadable_images"]]
    assert "UnidentifiedImageError" in reasons[0] and reasons[1] == "file not found"
    assert reasons[2] == "no image file for this example"


def test_a_batch_with_no_readable_image_stops_with_a_clear_error(processor, examples):
    for example in examples:
        example["image"]["bytes"] = b"nothing"
    with pytest.raises(RuntimeError, match=r"all 4 images of a batch are unreadable.*photo-0\.png"):
        RelSimCollator(processor)(examples)


def test_collator_batches_exactly_what_the_processor_builds(aspect_processor, images):
    batch = RelSimCollator(aspect_processor)([{"image": image, "caption": "c"} for image in images])
    expected = aspect_processor(images)
    assert expected["image_grid_thw"].tolist() == [[1, 6, 8], [1, 8, 8], [1, 10, 4]]
    for key in expected:
        assert torch.equal(batch[key], expected[key]), key
