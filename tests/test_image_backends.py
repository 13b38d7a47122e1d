"""The image processor backend: torchvision when installed (faster normalise + patchify), PIL otherwise; both give
the same pixels because resizing is always relsim's own."""

import pytest
import torch
from conftest import random_image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

import modeling_relsim.processing_relsim as processing
from modeling_relsim import RelSimProcessor


@pytest.fixture
def saved_processor(tmp_path, aspect_processor):
    aspect_processor.save_pretrained(tmp_path)
    return tmp_path


def test_pil_backend_is_loaded_on_request_and_without_torchvision(saved_processor, monkeypatch):
    assert type(RelSimProcessor.from_pretrained(saved_processor, image_backend="pil").image_processor) is (
        Qwen2VLImageProcessorPil
    )
    monkeypatch.setattr(processing, "is_torchvision_available", lambda: False)
    assert type(RelSimProcessor.from_pretrained(saved_processor).image_processor) is Qwen2VLImageProcessorPil
    with pytest.raises(ImportError, match="needs torchvision"):
        RelSimProcessor.from_pretrained(saved_processor, image_backend="torchvision")
    with pytest.raises(ValueError, match="image_backend must be one of"):
        RelSimProcessor.from_pretrained(saved_processor, image_backend="cv2")


@pytest.mark.torchvision
def test_torchvision_backend_gives_the_pil_backends_batches(saved_processor):
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    fast = RelSimProcessor.from_pretrained(saved_processor)
    pil = RelSimProcessor.from_pretrained(saved_processor, image_backend="pil")
    assert type(fast.image_processor) is Qwen2VLImageProcessor
    images = [random_image(100, 150, 0), random_image(64, 64, 1), random_image(200, 90, 2)]
    fast_batch, pil_batch = fast(images), pil(images)
    for key in ("input_ids", "attention_mask", "image_grid_thw"):
        assert torch.equal(fast_batch[key], pil_batch[key])
    torch.testing.assert_close(fast_batch["pixel_values"], pil_batch["pixel_values"], atol=1e-5, rtol=0)
