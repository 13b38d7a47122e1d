"""The image processor backend: torchvision when installed (faster normalise + patchify), PIL otherwise; both give
the same pixels because resizing is always relsim's own."""

import pytest
import torch
from conftest import random_image
from transformers import AutoProcessor
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
    # AutoProcessor hands image_backend through to relsim's from_pretrained
    with pytest.raises(ImportError, match="needs torchvision"):
        AutoProcessor.from_pretrained(saved_processor, image_backend="torchvision")
    assert type(AutoProcessor.from_pretrained(saved_processor, image_backend="pil").image_processor) is (
        Qwen2VLImageProcessorPil
    )


def test_loading_overrides_no_private_processor_mixin_step():
    """transformers renames or drops private ProcessorMixin steps between minor releases (5.25 dropped
    `_get_arguments_from_pretrained`, which silently ignored image_backend): relsim overrides public API only."""
    methods = {name: value for name, value in vars(RelSimProcessor).items() if not name.startswith("__")}
    private_overrides = [
        name
        for name, value in methods.items()
        if name.startswith("_") and (callable(value) or isinstance(value, (classmethod, staticmethod)))
    ]
    assert private_overrides == []


def test_saved_settings_reload_and_keywords_override_them(saved_processor, aspect_processor):
    reloaded = RelSimProcessor.from_pretrained(saved_processor, image_backend="pil", local_files_only=True)
    assert reloaded.settings() == aspect_processor.settings()
    assert reloaded.chat_template == aspect_processor.chat_template
    overridden = RelSimProcessor.from_pretrained(saved_processor, image_backend="pil", instruction=None)
    assert overridden.instruction is None and overridden.crop == aspect_processor.crop
    with pytest.raises(TypeError, match="image_sise"):
        RelSimProcessor.from_pretrained(saved_processor, image_backend="pil", image_sise=224)


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
