"""Does the installed transformers still have the internals relsim's vision fast path is built on?

The fast path (`vision_attention.py`, `vision_layout.py`) reaches into transformers' Qwen2.5-VL vision tower: it swaps
the class of each block's attention for a subclass that reuses its projections and rotary helper, and it hands the
tower index tensors precomputed on the host through keyword arguments that `transformers.vision_utils` pops. None of
that is public API, and users may run any transformers from 5.17 on. This module inspects those internals (names,
signatures, attributes, the pop of precomputed values) without running the tower, so that a model whose transformers
has moved on falls back to transformers' own code instead of failing or, worse, computing something else.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .vision_layout import layout_helpers


QWEN2_5_VL_MODELING = "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl"
ATTENTION_CLASS = "Qwen2_5_VLVisionAttention"
ROTARY_FUNCTION = "apply_rotary_pos_emb_vision"
# what the batched forward accepts by name; the blocks' other keyword arguments reach it through **kwargs
ATTENTION_PARAMETERS = {"hidden_states", "cu_seqlens", "position_embeddings", "rotary_pos_emb", "max_seqlen"}
HELPER_MODULES = {"get_max_seqlen": "transformers.utils.generic"}
TOWER_ATTRIBUTES = ("blocks", "config", "spatial_merge_size", "window_size", "patch_size")


def fast_path_mismatches(visual: nn.Module) -> list[str]:
    """What differs between the installed transformers and what the fast path expects, one sentence each.

    Args:
        visual: the backbone's vision tower (`Qwen2_5_VLModel.visual`), on any device, `meta` included.

    Returns:
        An empty list when both the batched window attention and the host-computed vision layout fit.
    """
    missing = [name for name in TOWER_ATTRIBUTES if not hasattr(visual, name)]
    if missing:
        return [f"the vision tower {type(visual).__name__} has no {', '.join(missing)}"]
    try:
        return [*_attention_mismatches(visual), *_layout_mismatches(visual)]
    except Exception as error:  # internals too different to inspect: a model must still load, on the reference path
        return [f"inspecting the vision tower failed ({type(error).__name__}: {error})"]


def _attention_mismatches(visual: nn.Module) -> list[str]:
    """The class swap needs transformers' attention class, its forward's arguments, its rotary helper and the
    attributes the batched forward reads."""
    try:
        modeling = importlib.import_module(QWEN2_5_VL_MODELING)
    except ImportError as error:
        return [f"{QWEN2_5_VL_MODELING} does not import ({error})"]
    attention_class = getattr(modeling, ATTENTION_CLASS, None)
    if not isinstance(attention_class, type):
        return [f"{QWEN2_5_VL_MODELING} has no class {ATTENTION_CLASS}"]
    attentions = [getattr(block, "attn", None) for block in visual.blocks]
    foreign = {type(attention).__name__ for attention in attentions if not isinstance(attention, attention_class)}
    if foreign:
        return [f"vision blocks use {sorted(foreign)} instead of {ATTENTION_CLASS}"]

    mismatches = []
    parameters = _named_parameters(attention_class.forward)
    if parameters[:2] != ["hidden_states", "cu_seqlens"] or "position_embeddings" not in parameters:
        mismatches.append(f"{ATTENTION_CLASS}.forward takes ({', '.join(parameters)})")
    elif unknown := sorted(set(parameters) - ATTENTION_PARAMETERS):
        mismatches.append(f"{ATTENTION_CLASS}.forward has new arguments {unknown}")
    rotary = getattr(modeling, ROTARY_FUNCTION, None)
    if not callable(rotary):
        mismatches.append(f"{QWEN2_5_VL_MODELING} has no {ROTARY_FUNCTION}")
    elif len(rotary_parameters := _named_parameters(rotary, skip_self=False)) != 4:
        mismatches.append(f"{ROTARY_FUNCTION} takes ({', '.join(rotary_parameters)}) instead of (q, k, cos, sin)")
    if attentions:
        mismatches.extend(_attention_attribute_mismatches(attentions[0]))
    return mismatches


def _attention_attribute_mismatches(attention: nn.Module) -> list[str]:
    """The batched forward splits `qkv` into heads of `num_heads`, scales by `scaling`, attends without mask or
    dropout and projects with `proj`; the backend is read from `config._attn_implementation`."""
    qkv, proj, num_heads = (
        getattr(attention, "qkv", None),
        getattr(attention, "proj", None),
        getattr(attention, "num_heads", None),
    )
    if not isinstance(qkv, nn.Linear) or not isinstance(proj, nn.Linear) or not isinstance(num_heads, int):
        return [f"{ATTENTION_CLASS} no longer has the linear layers qkv and proj and an integer num_heads"]
    mismatches = []
    if qkv.out_features != 3 * qkv.in_features or qkv.in_features % num_heads:
        mismatches.append(
            f"{ATTENTION_CLASS}.qkv maps {qkv.in_features} to {qkv.out_features} features with {num_heads} heads"
        )
    if not isinstance(getattr(attention, "scaling", None), float):
        mismatches.append(f"{ATTENTION_CLASS} has no float scaling")
    if not hasattr(getattr(attention, "config", None), "_attn_implementation"):
        mismatches.append(f"{ATTENTION_CLASS} has no config._attn_implementation")
    if getattr(attention, "is_causal", False) or getattr(attention, "attention_dropout", 0.0):
        mismatches.append(f"{ATTENTION_CLASS} is causal or has attention dropout")
    return mismatches


def _layout_mismatches(visual: nn.Module) -> list[str]:
    """The host layout needs `transformers.vision_utils`' helpers, called as `VisionLayout.from_grid` calls them,
    popping precomputed values from their `kwargs`, and a tower forward that calls those very helpers."""
    helpers = layout_helpers()
    missing = [name for name, helper in helpers.items() if not callable(helper)]
    if missing:
        return [f"{HELPER_MODULES.get(name, 'transformers.vision_utils')}.{name} is missing" for name in missing]
    mismatches = [f"{name} {problem}" for name, problem in _precomputed_pop_problems(visual, helpers).items()]
    tower_forward = inspect.unwrap(type(visual).forward)
    tower_module = inspect.getmodule(tower_forward)
    called_names = getattr(getattr(tower_forward, "__code__", None), "co_names", ())
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(tower_forward).parameters.values())
    if not takes_kwargs:
        mismatches.append(f"{type(visual).__name__}.forward takes no keyword arguments")
    for name, helper in helpers.items():
        if name not in called_names or getattr(tower_module, name, None) is not helper:
            mismatches.append(f"{type(visual).__name__}.forward does not call transformers' {name}")
    return mismatches


def _precomputed_pop_problems(visual: nn.Module, helpers: dict[str, Callable[..., Any]]) -> dict[str, str]:
    """Calls each helper as the tower does, with its precomputed values in `kwargs`: it must hand those very objects
    back and remove them from `kwargs` (which also shows that `VisionLayout.from_grid`'s arguments still bind)."""
    # a valid image grid, so that a helper that computes instead of popping returns a value rather than failing;
    # an explicit device, because the model may be built under a `meta` default device
    side = 2 * visual.spatial_merge_size
    grid = torch.tensor([[1, side, side]], device="cpu")
    cu_seqlens = torch.tensor([0, side * side], dtype=torch.int32, device="cpu")
    first, second = object(), object()
    window_kwargs = {"spatial_merge_size": visual.spatial_merge_size, "window_size": visual.window_size,
                     "patch_size": visual.patch_size}  # fmt: skip
    probes = {
        "get_vision_position_ids": (
            lambda kwargs: helpers["get_vision_position_ids"](grid, visual.spatial_merge_size, kwargs=kwargs),
            {"position_ids": first},
        ),
        "get_vision_attention_seqlens": (
            lambda kwargs: helpers["get_vision_attention_seqlens"](grid, visual.config, kwargs=kwargs),
            {"cu_seqlens": first, "max_seqlen": second},
        ),
        "get_vision_window_index": (
            lambda kwargs: helpers["get_vision_window_index"](grid, **window_kwargs, kwargs=kwargs),
            {"window_index": first, "cu_window_seqlens": second},
        ),
        "get_max_seqlen": (
            lambda kwargs: helpers["get_max_seqlen"](
                cu_seqlens, visual.config, kwargs=kwargs, kwarg_name="max_window_seqlen"
            ),
            {"max_window_seqlen": first},
        ),
    }
    problems = {}
    for name, (call, precomputed) in probes.items():
        kwargs = dict(precomputed)
        try:
            returned = call(kwargs)
        except Exception as error:  # any failure means the helper is no longer the one the layout was written for
            problems[name] = f"fails when given precomputed {sorted(precomputed)} ({type(error).__name__}: {error})"
            continue
        returned = returned if isinstance(returned, tuple) else (returned,)
        handed_back = len(returned) == len(precomputed) and all(
            got is given for got, given in zip(returned, precomputed.values(), strict=False)
        )
        if not handed_back or kwargs:
            problems[name] = f"does not hand back and pop the precomputed {sorted(precomputed)}"
    return problems


def _named_parameters(function: Callable[..., Any], skip_self: bool = True) -> list[str]:
    """Names of the parameters that can be given by name (no *args / **kwargs), in order."""
    names = [
        parameter.name
        for parameter in inspect.signature(function).parameters.values()
        if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    ]
    return names[1:] if skip_self and names[:1] == ["self"] else names


__all__ = ["fast_path_mismatches"]
