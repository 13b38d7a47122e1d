"""RelSimModel: a Qwen2.5-VL backbone (no lm_head) read out at one query token, projected and L2-normalised.

This file travels as remote code next to saved weights, so it imports only torch, transformers and its siblings.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from torch.utils.data import DataLoader
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, Qwen2_5_VLModel
from transformers import initialization as init
from transformers.utils import ModelOutput, logging

from .configuration_relsim import RelSimConfig
from .fast_path_compat import fast_path_mismatches
from .image_batches import ON_ERROR_POLICIES, BatchPreparedImages, ImageEmbeddings, PreparedImages
from .image_decoding import UnreadableImageError, as_image_list, is_single_image
from .processing_relsim import RelSimProcessor, add_query_token
from .vision_attention import VISION_ATTENTION_MODES, set_vision_attention
from .vision_layout import VisionLayout


logger = logging.get_logger(__name__)

NEW_MODULES = ("query_embedding", "projection", "temperature")


@dataclass
class RelSimOutput(ModelOutput):
    """Output of [`RelSimModel`].

    Args:
        image_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`):
            Relational embeddings, L2-normalised.
        query_hidden_states (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
            Final-norm last hidden state at each sample's query token, before the projection.
        logit_scale (`torch.FloatTensor` of shape `()`):
            The learnable log inverse temperature. Returned by the forward so that, under DDP, it is part of every
            forward graph and its gradient is reduced with the others.
    """

    image_embeds: torch.FloatTensor | None = None
    query_hidden_states: torch.FloatTensor | None = None
    logit_scale: torch.FloatTensor | None = None


class RelSimQueryEmbedding(nn.Module):
    """The learnable input vector written at the query position; a module so PEFT can train and save it."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(hidden_size))

    def forward(self) -> torch.Tensor:
        return self.weight


class RelSimTemperature(nn.Module):
    """CLIP-style learnable log inverse temperature; a module (not a bare parameter) so PEFT can train and save it."""

    def __init__(self, init_value: float) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(float(init_value)))

    def forward(self) -> torch.Tensor:
        return self.logit_scale


def _checks_cost_nothing(tensor: torch.Tensor) -> bool:
    """Input checks that read a value back to the host run on CPU tensors only: on an accelerator they would stall
    the stream every forward, and under torch.compile they would break the graph. The processor guarantees them."""
    return tensor.device.type == "cpu" and not torch.compiler.is_compiling()


def unpad_pixel_values(pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> torch.Tensor:
    """`(batch, max_patches, patch_dim)` per-sample layout -> `(total_patches, patch_dim)` the vision tower reads.

    A 2-D input is already flat (the stock Qwen2.5-VL processor's layout) and is returned as is. When every image has
    the full patch count (centre-cropped batches) this is a free reshape. RelSimModel passes the grid on the host, so
    reading the patch counts costs no stall.
    """
    if pixel_values.dim() == 2:
        return pixel_values
    patches_per_image = image_grid_thw.prod(-1)
    if not torch.compiler.is_compiling() and bool((patches_per_image == pixel_values.shape[1]).all()):
        return pixel_values.reshape(-1, pixel_values.shape[-1])
    patches_per_image = patches_per_image.to(pixel_values.device, non_blocking=True)
    keep = torch.arange(pixel_values.shape[1], device=pixel_values.device) < patches_per_image[:, None]
    return pixel_values[keep]


def move_batch(batch: Mapping[str, Any], device: torch.device | str) -> dict[str, Any]:
    """A processor batch on `device`, laid out the way the forward reads it without waiting on the device.

    Tensors are copied asynchronously (from pinned memory when the DataLoader pins it). The image grid stays on the
    host, where the vision layout is computed from it. The attention mask is left out when nothing is padded (read
    here, on the host), so the language model takes the plain causal path without looking at it.
    """
    moved = {}
    for key, value in batch.items():
        unpadded = key == "attention_mask" and value.device.type == "cpu" and bool(value.all())
        if unpadded:
            continue
        if isinstance(value, torch.Tensor) and key != "image_grid_thw":
            value = value.to(device, non_blocking=True)
        moved[key] = value
    return moved


def multimodal_position_ids(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    image_grid_thw: torch.Tensor | None,
    image_token_id: int,
    spatial_merge_size: int,
) -> torch.Tensor:
    """Qwen2.5-VL's 3-D (temporal, height, width) rotary positions for image+text rows, vectorised over the batch.

    Text tokens advance all three axes by one; an image's tokens sit at `start + (t, row, col)` of its merged grid and
    the text after it resumes at `start + max(height, width)`. Padding is skipped (position 0), so a sample gets the
    same positions whatever padding surrounds it. Still images only (`t` is the index inside the temporal grid).

    Returns:
        `torch.LongTensor` of shape `(3, batch_size, sequence_length)`.
    """
    attended = attention_mask.bool()
    is_image = (input_ids == image_token_id) & attended
    step = attended.long()
    offset_t = offset_h = offset_w = torch.zeros_like(step)
    if image_grid_thw is not None and image_grid_thw.numel() > 0:
        grid = image_grid_thw.to(input_ids.device, non_blocking=True).long()
        merged_h = grid[:, 1] // spatial_merge_size
        merged_w = grid[:, 2] // spatial_merge_size
        area = merged_h * merged_w
        image_end = (grid[:, 0] * area).cumsum(0)
        ordinal = (is_image.reshape(-1).long().cumsum(0) - 1).clamp(min=0).reshape(is_image.shape)
        image_index = torch.searchsorted(image_end, ordinal, right=True).clamp(max=grid.shape[0] - 1)
        index_in_image = ordinal - (image_end - grid[:, 0] * area)[image_index]
        extent = torch.maximum(merged_h, merged_w)[image_index]
        first_token = is_image & (index_in_image == 0)
        zeros = torch.zeros_like(step)
        step = torch.where(is_image, torch.where(first_token, extent, zeros), step)
        back_to_start = torch.where(is_image & ~first_token, extent, zeros)
        image_area, image_width = area[image_index], merged_w[image_index]
        offset_t = torch.where(is_image, index_in_image // image_area - back_to_start, zeros)
        offset_h = torch.where(is_image, (index_in_image % image_area) // image_width - back_to_start, zeros)
        offset_w = torch.where(is_image, index_in_image % image_width - back_to_start, zeros)
    start = step.cumsum(-1) - step
    positions = torch.stack([start + offset_t, start + offset_h, start + offset_w])
    return positions.masked_fill(~attended, 0)


class RelSimPreTrainedModel(PreTrainedModel):
    config_class = RelSimConfig
    config: RelSimConfig
    base_model_prefix = "backbone"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock"]
    _skip_keys_device_placement = ["past_key_values"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """New parameters get seeded draws, so two builds from the same backbone are identical."""
        std = self.config.initializer_range
        seed = self.config.initializer_seed
        if isinstance(module, RelSimQueryEmbedding):
            generator = torch.Generator(device=module.weight.device).manual_seed(seed)
            init.normal_(module.weight, mean=0.0, std=std, generator=generator)
        elif isinstance(module, RelSimTemperature):
            init.constant_(module.logit_scale, self.config.logit_scale_init)
        elif module is getattr(self, "projection", None):
            generator = torch.Generator(device=module.weight.device).manual_seed(seed + 1)
            init.normal_(module.weight, mean=0.0, std=std, generator=generator)
            init.zeros_(module.bias)
        else:
            super()._init_weights(module)


class RelSimModel(RelSimPreTrainedModel):
    r"""Relational image embedding model.

    The image is read by Qwen2.5-VL followed by a `<|query|>` token whose input vector is learned; the query
    position's final-norm last hidden state is projected to `projection_dim` and L2-normalised. The backbone has
    no lm_head: no vocabulary logits are ever computed or stored.
    """

    def __init__(self, config: RelSimConfig) -> None:
        super().__init__(config)
        self.backbone = AutoModel.from_config(config.backbone_config)
        self._check_vision_fast_path()
        hidden_size = config.backbone_config.text_config.hidden_size
        self.query_embedding = RelSimQueryEmbedding(hidden_size)
        self.projection = nn.Linear(hidden_size, config.projection_dim)
        self.temperature = RelSimTemperature(config.logit_scale_init)
        self.post_init()

    @property
    def logit_scale(self) -> torch.Tensor:
        """Log inverse temperature (a scalar parameter); `logit_scale.exp()` multiplies the cosine similarities."""
        return self.temperature()

    def get_input_embeddings(self) -> nn.Module:
        return self.backbone.get_input_embeddings()

    @property
    def uses_vision_fast_path(self) -> bool:
        """Whether the vision tower runs relsim's fast path (batched window attention and the host-computed layout):
        False when `config.vision_attention` is `"reference"` or when the installed transformers does not have the
        internals the fast path is built on (see `vision_fast_path_mismatches`)."""
        return self.config.vision_attention == "batched" and not self.vision_fast_path_mismatches

    def _check_vision_fast_path(self) -> None:
        """Inspects the backbone's vision internals once per build, and warns once per process when they differ
        from what the fast path was written for; the model then runs transformers' own vision code."""
        self.vision_fast_path_mismatches = fast_path_mismatches(self.backbone.visual)
        if self.vision_fast_path_mismatches:
            logger.warning_once(
                f"relsim's vision fast path does not fit transformers {transformers.__version__}: "
                f"{'; '.join(self.vision_fast_path_mismatches)}. The vision tower runs transformers' own attention "
                "and layout code instead (same embeddings, slower on GPU)."
            )
        self.set_vision_attention(self.config.vision_attention)

    def set_vision_attention(self, mode: str) -> None:
        """`"batched"` (one attention call per window length) or `"reference"` (transformers' per-window loop).

        The choice is kept in the config; `"batched"` runs the reference loop where the installed transformers does
        not fit the fast path (see `uses_vision_fast_path`).
        """
        if mode not in VISION_ATTENTION_MODES:
            raise ValueError(f"vision_attention must be one of {VISION_ATTENTION_MODES}, got {mode!r}")
        self.config.vision_attention = mode
        set_vision_attention(self.backbone.visual, "batched" if self.uses_vision_fast_path else "reference")

    def compile_vision(self, **compile_kwargs: Any) -> None:
        """`torch.compile`s each vision block in place (weights and state-dict names unchanged). It pays on GPU,
        where the blocks' many small element-wise kernels fuse; the window grouping runs eagerly once per forward."""
        for block in self.backbone.visual.blocks:
            block.compile(**{"dynamic": True, **compile_kwargs})

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.backbone.set_input_embeddings(value)

    def find_query_positions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Index of each sample's query token, `(batch_size,)`; each sample must hold exactly one (attended) query."""
        query_token_id = self.config.query_token_id
        if query_token_id is None:
            raise ValueError(
                "config.query_token_id is not set: build the model with RelSimModel.from_backbone, or set it to "
                "the processor's query_token_id"
            )
        query_mask = (input_ids == query_token_id) & attention_mask.bool()
        counts = query_mask.sum(-1)
        if _checks_cost_nothing(counts) and bool((counts != 1).any()):
            sample = int((counts != 1).nonzero()[0, 0])
            raise ValueError(
                f"sample {sample} holds {int(counts[sample])} query tokens ({self.config.query_token!r}, id "
                f"{query_token_id}); every sample needs exactly one"
            )
        return query_mask.int().argmax(-1)

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        image_features: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> RelSimOutput | tuple[torch.Tensor, ...]:
        r"""Embeds a batch built by [`RelSimProcessor`].

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
                Prompt tokens with the image placeholders and one query token per sample; left or right padded.
            attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*):
                1 for real tokens, 0 for padding. Leave it out for a batch without padding: the language model then
                needs no look at the mask to take the plain causal attention path (`embed_images` does this).
            pixel_values (`torch.Tensor`, *optional*):
                Patchified images, `(batch_size, max_patches, patch_dim)` per sample (zero-padded) or
                `(total_patches, patch_dim)` flat.
            image_grid_thw (`torch.LongTensor` of shape `(batch_size, 3)`):
                Temporal, height and width patch grid of each image.
            image_features (`torch.Tensor` of shape `(image_tokens, hidden_size)`, *optional*):
                The vision tower's output from [`get_vision_features`], instead of `pixel_values`: the tower is
                frozen in relsim's recipe, so a GradCache replay can reuse the features of its first pass.
            kwargs: passed to the language model (e.g. attention-backend options).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        language_attention_mask = attention_mask
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        query_positions = self.find_query_positions(input_ids, attention_mask)
        query_mask = input_ids == self.config.query_token_id
        backbone_config = self.config.backbone_config

        # The query token's own vocabulary row is never read: its id may even lie past the embedding matrix.
        inputs_embeds = self.get_input_embeddings()(input_ids.masked_fill(query_mask, 0))
        if image_features is None and pixel_values is not None:
            image_features = self.get_vision_features(pixel_values, image_grid_thw)
        if image_features is not None:
            image_mask = input_ids == backbone_config.image_token_id
            if _checks_cost_nothing(image_mask) and int(image_mask.sum()) != image_features.shape[0]:
                raise ValueError(
                    f"the batch holds {int(image_mask.sum())} image tokens but the images give "
                    f"{image_features.shape[0]} features; were input_ids and pixel_values made together?"
                )
            inputs_embeds = inputs_embeds.masked_scatter(
                image_mask.unsqueeze(-1), image_features.to(inputs_embeds.dtype)
            )
        query_vector = self.query_embedding().to(inputs_embeds.dtype)
        inputs_embeds = torch.where(query_mask.unsqueeze(-1), query_vector, inputs_embeds)

        position_ids = multimodal_position_ids(
            input_ids,
            attention_mask,
            image_grid_thw,
            backbone_config.image_token_id,
            backbone_config.vision_config.spatial_merge_size,
        )
        language_output = self.backbone.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=language_attention_mask,
            position_ids=position_ids,
            use_cache=False,
            **kwargs,
        )
        hidden_states = language_output.last_hidden_state
        batch_index = torch.arange(hidden_states.shape[0], device=hidden_states.device)
        query_hidden_states = hidden_states[batch_index, query_positions.to(hidden_states.device)]
        projection_dtype = next(self.projection.parameters()).dtype
        projected = self.projection(query_hidden_states.to(projection_dtype))
        image_embeds = F.normalize(projected, dim=-1)
        logit_scale = self.logit_scale
        if not return_dict:
            return (image_embeds, query_hidden_states, logit_scale)
        return RelSimOutput(image_embeds=image_embeds, query_hidden_states=query_hidden_states, logit_scale=logit_scale)

    def get_vision_features(self, pixel_values: torch.Tensor, image_grid_thw: torch.LongTensor) -> torch.Tensor:
        """The vision tower's merged patch features `(image_tokens, hidden_size)` of a processor batch.

        On the fast path the tower's positions, window order and attention groups are computed on the host from the
        grid ([`VisionLayout`]): none of the tower's blocks reads a value back from the device. A grid on the host (as
        `embed_images` keeps it) costs no read at all; a grid on the device costs one. On the reference path the
        tower computes them itself, as in transformers.
        """
        if image_grid_thw is None:
            raise ValueError("pixel_values were given without image_grid_thw")
        visual = self.backbone.visual
        host_grid = image_grid_thw.cpu()
        flat_pixels = unpad_pixel_values(pixel_values, host_grid)
        layout_kwargs = {}
        if self.uses_vision_fast_path:
            layout_kwargs = VisionLayout.from_grid(visual, host_grid).to(flat_pixels.device).tower_kwargs()
        vision_output = visual(flat_pixels.to(visual.dtype), grid_thw=image_grid_thw, **layout_kwargs)
        return getattr(vision_output, "pooler_output", vision_output)

    def get_image_features(self, **inputs: Any) -> torch.Tensor:
        """L2-normalised relational embeddings `(batch_size, projection_dim)` of a processor batch."""
        inputs.pop("return_dict", None)
        return self.forward(**inputs, return_dict=True).image_embeds

    def check_processor(self, processor: RelSimProcessor) -> None:
        """Raises if the processor would build prompts or pixels this model was not configured for."""
        expected = {
            **self.config.processor_settings(),
            "query_token_id": self.config.query_token_id,
            "patch_size": self.config.backbone_config.vision_config.patch_size,
            "merge_size": self.config.backbone_config.vision_config.spatial_merge_size,
        }
        actual = {
            **processor.settings(),
            "query_token_id": processor.query_token_id,
            "patch_size": processor.image_processor.patch_size,
            "merge_size": processor.image_processor.merge_size,
        }
        mismatched = [
            f"{key}: model {expected[key]!r}, processor {actual[key]!r}"
            for key in expected
            if expected[key] != actual[key]
        ]
        if mismatched:
            raise ValueError("processor and model disagree on " + "; ".join(mismatched))

    @torch.no_grad()
    def embed_images(
        self,
        images: Any,
        processor: RelSimProcessor,
        batch_size: int = 32,
        num_workers: int = 0,
        show_progress: bool | None = None,
        on_error: str = "raise",
    ) -> torch.FloatTensor | ImageEmbeddings:
        """Embeds images (file paths, encoded bytes, PIL images, numpy arrays or tensors) in batches.

        `images` is a sequence of images, a 4-D array/tensor stack of them, or one image (which gives one row: a
        single path or array is never read as a list of characters or rows). Preprocessing runs in DataLoader
        workers when `num_workers > 0`, into pinned memory on CUDA. Batches go to the device asynchronously with
        their image grid kept on the host, and the embeddings come back once at the end, so the host never waits for
        the device between batches. A progress bar appears for lists of more than ten batches unless
        `show_progress` says otherwise.

        Args:
            on_error: what an unreadable image (missing, truncated, not an image, over the processor's
                `max_image_pixels`, an aspect ratio the processor refuses) does. `"raise"`: raise
                `UnreadableImageError` naming the file, with or without workers. `"skip"`: leave it out, log it, and
                return the others with the list of failures.

        Returns:
            `on_error="raise"`: `torch.FloatTensor` of shape `(len(images), projection_dim)` on the CPU,
            L2-normalised. `on_error="skip"`: an `ImageEmbeddings` with `embeddings` `(kept, projection_dim)`,
            `indices` (the input positions of those rows) and `failures` (`ImageFailure(index, source, reason)`).

        Raises:
            UnreadableImageError: with `on_error="raise"`, the first unreadable image, named by path or position.
            TypeError: an element is not an image input; its position is named.
        """
        if on_error not in ON_ERROR_POLICIES:
            raise ValueError(f"on_error must be one of {ON_ERROR_POLICIES}, got {on_error!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        images = as_image_list(images)
        if len(images) == 0:
            raise ValueError("embed_images got no images")
        for index, image in enumerate(images):
            if not is_single_image(image):
                shape = f" of shape {tuple(image.shape)}" if hasattr(image, "shape") else ""
                raise TypeError(
                    f"images[{index}] is a {type(image).__name__}{shape}; expected a file path, encoded bytes, a PIL "
                    "image, or an HW / HWC / CHW array or tensor"
                )
        self.check_processor(processor)
        device = self.get_input_embeddings().weight.device
        loader = DataLoader(
            PreparedImages(images, processor),
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            collate_fn=BatchPreparedImages(processor),
            pin_memory=device.type == "cuda",
        )
        if show_progress is None:
            show_progress = len(loader) > 10
        was_training = self.training
        self.eval()
        embeddings, indices, failures = [], [], []
        try:
            for kept, batch, batch_failures in logging.tqdm(
                loader, desc="embedding images", unit="batch", disable=not show_progress
            ):
                if batch_failures and on_error == "raise":
                    raise UnreadableImageError(batch_failures[0].source, batch_failures[0].reason)
                failures += batch_failures
                if kept:
                    embeddings.append(self.get_image_features(**move_batch(batch, device)).float())
                    indices += kept
        finally:
            self.train(was_training)
        result = torch.cat(embeddings).cpu() if embeddings else torch.empty(0, self.config.projection_dim)
        if on_error == "raise":
            return result
        if failures:
            shown = "; ".join(f"{failure.source}: {failure.reason}" for failure in failures[:3])
            logger.warning(f"{len(failures)} of {len(images)} images could not be read and were left out ({shown})")
        return ImageEmbeddings(result, indices, failures)

    @torch.no_grad()
    def similarity(
        self,
        images_a: Any,
        images_b: Any,
        processor: RelSimProcessor,
        batch_size: int = 32,
        num_workers: int = 0,
        show_progress: bool | None = None,
    ) -> torch.FloatTensor:
        """Relational similarity of image pairs, as LPIPS / DreamSim score pairs: `images_a[i]` against `images_b[i]`.

        Each side takes what [`embed_images`] takes (paths, bytes, PIL images, arrays, a 4-D stack, or one image). A
        side of one image is compared with every image of the other side (one reference against a set).

        Returns:
            `torch.FloatTensor` of shape `(n,)` on the CPU: the cosine of the two relsim embeddings of each pair, in
            [-1, 1], higher = more alike in relational logic; `n` is the longer side's length.

        Raises:
            ValueError: the sides hold different numbers of images and neither holds exactly one.
        """
        images_a, images_b = as_image_list(images_a), as_image_list(images_b)
        if len(images_a) != len(images_b) and 1 not in (len(images_a), len(images_b)):
            raise ValueError(
                f"similarity pairs images_a[i] with images_b[i]: got {len(images_a)} and {len(images_b)} images "
                "(give equal numbers, or one image on a side to compare it with all of the other)"
            )
        options = {"batch_size": batch_size, "num_workers": num_workers, "show_progress": show_progress}
        embeddings_a = self.embed_images(images_a, processor, **options)
        embeddings_b = self.embed_images(images_b, processor, **options)
        return (embeddings_a * embeddings_b).sum(dim=-1)

    @classmethod
    def around_backbone(cls, backbone: Qwen2_5_VLModel, config: RelSimConfig) -> RelSimModel:
        """Wraps an already-loaded backbone without allocating a second one; new parameters come from the seed.

        `config.backbone_config` should be `backbone.config`; the new parameters take the backbone's device and dtype.
        """
        with torch.device("meta"):
            model = cls(config)
        model.backbone = backbone
        model._check_vision_fast_path()
        model.config.backbone_config = backbone.config
        model.config._attn_implementation = backbone.config._attn_implementation
        reference = backbone.get_input_embeddings().weight
        for name in NEW_MODULES:
            module = getattr(model, name).to_empty(device=reference.device)
            model._init_weights(module)
            module.to(reference.dtype)
        return model.eval()

    @classmethod
    def from_backbone(
        cls,
        backbone_name_or_path: str,
        processor: RelSimProcessor | None = None,
        output_loading_info: bool = False,
        **kwargs: Any,
    ) -> RelSimModel | tuple[RelSimModel, dict[str, list[str]]]:
        """Builds a RelSimModel around a pretrained Qwen2.5-VL (hub id or local folder), leaving its lm_head behind.

        Every backbone weight must load: a missing or mis-shaped key raises instead of staying random. The new
        parameters (query vector, projection, logit scale) are initialised from `config.initializer_seed`.

        Args:
            backbone_name_or_path: e.g. `"Qwen/Qwen2.5-VL-7B-Instruct"`.
            processor: its prompt/image settings and query token id go into the config; without it the query token
                id comes from the backbone's tokenizer (the id the processor will give the token).
            output_loading_info: also return `{"newly_initialized_keys", "missing_keys", "unexpected_keys",
                "mismatched_keys"}`.
            kwargs: `RelSimConfig` fields (`projection_dim`, `instruction`, ...); the rest goes to
                `Qwen2_5_VLModel.from_pretrained` (`dtype`, `attn_implementation`, `device_map`, `revision`, ...).
        """
        config_fields = set(inspect.signature(RelSimConfig.__init__).parameters) - {"self", "kwargs", "backbone_config"}
        config_kwargs = {key: kwargs.pop(key) for key in list(kwargs) if key in config_fields}
        if processor is not None:
            for key, value in {**processor.settings(), "query_token_id": processor.query_token_id}.items():
                if key in config_kwargs and config_kwargs[key] != value:
                    raise ValueError(f"{key}={config_kwargs[key]!r} disagrees with the processor's {value!r}")
                config_kwargs[key] = value
        elif config_kwargs.get("query_token_id") is None:
            hub_kwargs = {k: kwargs[k] for k in ("revision", "token", "cache_dir", "local_files_only") if k in kwargs}
            tokenizer = AutoTokenizer.from_pretrained(backbone_name_or_path, **hub_kwargs)
            config_kwargs["query_token_id"] = add_query_token(tokenizer, config_kwargs.get("query_token", "<|query|>"))

        backbone, backbone_info = Qwen2_5_VLModel.from_pretrained(
            backbone_name_or_path, output_loading_info=True, **kwargs
        )
        missing = sorted(backbone_info["missing_keys"])
        mismatched = sorted(str(entry) for entry in backbone_info["mismatched_keys"])
        if missing or mismatched:
            raise ValueError(
                f"{backbone_name_or_path} is not a complete Qwen2.5-VL checkpoint; these weights would stay random: "
                f"missing {missing[:10]}{' ...' if len(missing) > 10 else ''}, mismatched {mismatched[:10]}"
            )
        unexpected = sorted(key for key in backbone_info["unexpected_keys"] if not key.startswith("lm_head."))
        if unexpected:
            logger.warning(
                f"ignored weights of {backbone_name_or_path} that the backbone does not use: {unexpected[:10]}"
            )

        model = cls.around_backbone(backbone, RelSimConfig(backbone_config=backbone.config, **config_kwargs))
        backbone_keys = {f"backbone.{key}" for key in backbone.state_dict()}
        newly_initialized = sorted(set(model.state_dict()) - backbone_keys)
        logger.info(f"newly initialised parameters: {newly_initialized}")
        if not output_loading_info:
            return model
        return model, {
            "newly_initialized_keys": newly_initialized,
            "missing_keys": missing,
            "unexpected_keys": sorted(backbone_info["unexpected_keys"]),
            "mismatched_keys": mismatched,
        }


__all__ = [
    "RelSimModel",
    "RelSimOutput",
    "RelSimPreTrainedModel",
    "move_batch",
    "multimodal_position_ids",
    "unpad_pixel_values",
]
