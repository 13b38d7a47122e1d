"""The batched vision window attention against transformers' per-window loop (CPU, fp32, tiny model)."""

import pytest
import torch
from conftest import random_image

from modeling_relsim import RelSimConfig
from modeling_relsim.vision_attention import set_vision_attention, window_groups


class AttentionCallCounter:
    def __init__(self, monkeypatch):
        self.calls = 0
        original = torch.nn.functional.scaled_dot_product_attention

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counted)


def embed_both_ways(model, batch):
    with torch.no_grad():
        model.set_vision_attention("reference")
        reference = model(**batch).image_embeds
        model.set_vision_attention("batched")
        batched = model(**batch).image_embeds
    return reference, batched


def test_batched_is_the_default_and_is_saved_in_the_config(model, tmp_path):
    assert model.config.vision_attention == "batched"
    assert type(model.backbone.visual.blocks[0].attn).__name__.startswith("Batched")
    model.set_vision_attention("reference")
    model.save_pretrained(tmp_path)
    assert RelSimConfig.from_pretrained(tmp_path).vision_attention == "reference"
    with pytest.raises(ValueError, match="vision_attention must be"):
        RelSimConfig(vision_attention="fast")


def test_square_images_match_the_reference(model, processor, images):
    reference, batched = embed_both_ways(model, processor(images))
    torch.testing.assert_close(batched, reference, atol=1e-5, rtol=0)


def test_ragged_windows_and_padded_batches_match_the_reference(model, aspect_processor):
    images = [random_image(100, 150, 0), random_image(200, 90, 2), random_image(64, 64, 1), random_image(70, 260, 3)]
    batch = aspect_processor(images, padding_side="left")
    grids = batch["image_grid_thw"].tolist()
    assert len({tuple(grid) for grid in grids}) == 4  # four shapes, so four token counts in one padded batch
    reference, batched = embed_both_ways(model, batch)
    torch.testing.assert_close(batched, reference, atol=1e-5, rtol=0)
    # each image alone (no padding) gives the same embedding as inside the batch
    for index, image in enumerate(images):
        with torch.no_grad():
            alone = model(**aspect_processor([image])).image_embeds
        torch.testing.assert_close(alone[0], batched[index], atol=1e-5, rtol=0)


def test_window_groups_cover_every_token_once():
    boundaries = torch.tensor([0, 4, 8, 10, 14, 16, 20])
    groups = window_groups(boundaries)
    assert sorted((length, windows) for length, windows, _ in groups) == [(2, 2), (4, 4)]
    covered = torch.cat([index for _, _, index in groups]).sort().values
    assert covered.tolist() == list(range(20))
    [(length, windows, index)] = window_groups(torch.tensor([0, 4, 8, 12]))
    assert (length, windows, index) == (4, 3, None)  # one group in order: no gather at all


def test_batched_path_makes_one_call_per_window_length(model, aspect_processor, monkeypatch):
    images = [random_image(100, 150, 0), random_image(200, 90, 2)]
    batch = aspect_processor(images)
    visual = model.backbone.visual
    full_blocks = len(visual.fullatt_block_indexes)
    windowed_blocks = len(visual.blocks) - full_blocks
    counter = AttentionCallCounter(monkeypatch)
    with torch.no_grad():
        model.set_vision_attention("reference")
        model(**batch)
        reference_calls = counter.calls
        counter.calls = 0
        model.set_vision_attention("batched")
        model(**batch)
        batched_calls = counter.calls
    language_calls = model.config.backbone_config.text_config.num_hidden_layers
    # count windows and lengths the way the tower does, from its own window boundaries
    from transformers.vision_utils import get_vision_attention_seqlens, get_vision_window_index

    grid = batch["image_grid_thw"]
    cu_seqlens, _ = get_vision_attention_seqlens(grid, visual.config, kwargs={})
    _, cu_windows = get_vision_window_index(grid, spatial_merge_size=visual.spatial_merge_size,
                                            window_size=visual.window_size, patch_size=visual.patch_size)  # fmt: skip
    windows = int((torch.unique_consecutive(cu_windows).diff() > 0).sum())
    window_lengths = len(set(torch.unique_consecutive(cu_windows).diff().tolist()))
    image_lengths = len(set(cu_seqlens.diff().tolist()))
    assert window_lengths > 1  # ragged windows are present
    assert reference_calls == windowed_blocks * windows + full_blocks * len(images) + language_calls
    assert batched_calls == windowed_blocks * window_lengths + full_blocks * image_lengths + language_calls
    assert batched_calls < reference_calls


def test_compiled_vision_blocks_give_the_same_numbers(model, processor, images):
    batch = processor(images)
    with torch.no_grad():
        eager = model(**batch).image_embeds
        model.compile_vision(backend="eager")  # dynamo's graph capture without inductor code generation
        compiled = model(**batch).image_embeds
    torch.testing.assert_close(compiled, eager, atol=1e-6, rtol=0)
    set_vision_attention(model.backbone.visual, "batched")
