"""The vision tower's index tensors computed on the host: same numbers, and nothing read back from the device.

A model on the `meta` device has no values, so any host read of a device tensor (`.tolist()`, `.item()`, `bool()`,
a data-dependent shape) raises there: a forward that runs on `meta` inputs reads nothing back from the device.
"""

import pytest
import torch
from conftest import random_image

from modeling_relsim import move_batch
from modeling_relsim.modeling_relsim import unpad_pixel_values
from modeling_relsim.vision_attention import window_groups
from modeling_relsim.vision_layout import VisionLayout


def on_meta(batch, keep_on_host=("image_grid_thw",)):
    return {key: value if key in keep_on_host else value.to("meta") for key, value in batch.items()}


def test_precomputed_layout_gives_the_towers_own_numbers(model, aspect_processor):
    """Ragged windows and four image shapes: the tower with the host layout equals the tower computing it itself."""
    images = [random_image(100, 150, 0), random_image(200, 90, 2), random_image(64, 64, 1), random_image(70, 260, 3)]
    batch = aspect_processor(images)
    visual = model.backbone.visual
    pixels = unpad_pixel_values(batch["pixel_values"], batch["image_grid_thw"])  # the tower's flat layout
    grid = batch["image_grid_thw"]
    layout = VisionLayout.from_grid(visual, grid).to(torch.device("cpu"))
    assert layout.position_ids.shape == (int(grid.prod(-1).sum()), 2)
    assert layout.cu_seqlens.tolist() == [0, *grid.prod(-1).cumsum(0).tolist()]
    assert len(layout.window_groups) > 1  # ragged windows: several window lengths
    with torch.no_grad():
        own = visual(pixels, grid_thw=grid).pooler_output
        given = visual(pixels, grid_thw=grid, **layout.tower_kwargs()).pooler_output
    torch.testing.assert_close(given, own, atol=1e-6, rtol=0)


def test_layout_refuses_a_grid_that_is_not_on_the_host(model):
    with pytest.raises(ValueError, match="on the host, got a tensor on meta"):
        VisionLayout.from_grid(model.backbone.visual, torch.tensor([[1, 8, 8]], device="meta"))


def test_embedding_forward_reads_nothing_back_from_the_device(model, processor, images):
    """With the grid on the host and no padding mask (what `embed_images` passes), every tensor the forward touches
    can live on an accelerator without a single device-to-host read, the vision tower's windowed blocks included."""
    batch = processor(images)
    assert bool(batch["attention_mask"].all())  # centre-cropped: no padding
    del batch["attention_mask"]
    meta_model = model.to("meta")
    with torch.no_grad():
        output = meta_model(**on_meta(batch))
    assert output.image_embeds.shape == (3, meta_model.config.projection_dim)
    assert output.image_embeds.device.type == "meta"
    # the same forward with the grid on the device needs a read of it, which meta refuses
    with pytest.raises((NotImplementedError, RuntimeError), match="meta"), torch.no_grad():
        meta_model(**on_meta(batch, keep_on_host=()))


def test_leaving_out_the_mask_of_an_unpadded_batch_changes_nothing(model, processor, images):
    batch = processor(images)
    with torch.no_grad():
        with_mask = model(**batch).image_embeds
        del batch["attention_mask"]
        without_mask = model(**batch).image_embeds
    torch.testing.assert_close(without_mask, with_mask, atol=1e-6, rtol=0)


def test_blocks_use_the_groups_of_the_host_boundaries(model, processor, images, monkeypatch):
    """`window_groups` runs on the host layout only: twice per forward (image and window boundaries), on CPU tensors,
    however many blocks the tower has."""
    import modeling_relsim.vision_attention as vision_attention
    import modeling_relsim.vision_layout as vision_layout

    calls = []

    def recorded(cu_seqlens):
        calls.append(cu_seqlens.device.type)
        return window_groups(cu_seqlens)

    monkeypatch.setattr(vision_layout, "window_groups", recorded)
    monkeypatch.setattr(vision_attention, "window_groups", recorded)
    with torch.no_grad():
        model(**processor(images))
    assert calls == ["cpu", "cpu"]
    assert len(model.backbone.visual.blocks) == 2


def test_move_batch_keeps_the_grid_on_the_host_and_drops_only_a_mask_without_padding(processor, aspect_processor):
    unpadded = processor([random_image(64, 64, 1), random_image(80, 120, 2)])
    moved = move_batch(unpadded, "meta")
    assert set(moved) == set(unpadded) - {"attention_mask"}
    assert moved["image_grid_thw"] is unpadded["image_grid_thw"]
    assert moved["input_ids"].device.type == moved["pixel_values"].device.type == "meta"
    padded = aspect_processor([random_image(64, 64, 1), random_image(80, 120, 2)])
    assert not bool(padded["attention_mask"].all())
    moved = move_batch(padded, "meta")
    assert moved["attention_mask"].device.type == "meta"
    assert moved["attention_mask"].shape == padded["attention_mask"].shape
