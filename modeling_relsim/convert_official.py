"""Converts the official relsim release (PEFT LoRA adapter + tokenizer + `projection_and_config.pt`) to a
standalone RelSimModel + RelSimProcessor folder (safetensors, remote code included).

    python -m training.trainer convert-official --checkpoint DIR --base Qwen/Qwen2.5-VL-7B-Instruct --output OUT

(console script `relsim-convert-official`; the command line lives in `training/trainer/convert.py`, outside this
package, whose import registers the Auto classes with transformers and would make `--help` slow).

The official embedding reads the final-norm hidden state at `<|query|>` of the prompt
`[default system] user: <image> <|query|>`; the query token's input vector is the base model's embedding row of its
id. The converted model reproduces exactly that: adapter merged, projection copied, query vector = that row,
no instruction, default system prompt, 448x448 centre crop.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.utils import cached_file

from .configuration_relsim import RelSimConfig
from .lora_adapters import merge_adapter
from .modeling_relsim import RelSimModel
from .processing_relsim import RelSimProcessor


logger = logging.getLogger(__name__)

EXTRAS_FILE = "projection_and_config.pt"
OFFICIAL_IMAGE_SIZE = 448


def load_official_extras(checkpoint_dir: Path) -> dict[str, Any]:
    """Reads and validates `projection_and_config.pt` (a pickle: tensors and plain values only)."""
    path = checkpoint_dir / EXTRAS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; an official relsim checkpoint ships it next to the adapter")
    extras = torch.load(path, map_location="cpu", weights_only=True)
    projection = extras.get("projection") if isinstance(extras, dict) else None
    if not isinstance(projection, dict) or not {"weight", "bias"} <= set(projection):
        raise ValueError(f"{path}: expected a dict with 'projection': {{'weight', 'bias'}}")
    weight, bias = projection["weight"], projection["bias"]
    if weight.dim() != 2 or bias.shape != (weight.shape[0],):
        raise ValueError(f"{path}: projection weight {tuple(weight.shape)} and bias {tuple(bias.shape)} do not fit")
    if not isinstance(extras.get("query_token_id"), int):
        raise ValueError(f"{path}: 'query_token_id' must be an int, got {extras.get('query_token_id')!r}")
    return extras


def merge_official_adapter(checkpoint_dir: Path, base: str, dtype: torch.dtype) -> Qwen2_5_VLForConditionalGeneration:
    """Base model + official LoRA, merged; raises unless every adapter tensor found its place."""
    return merge_adapter(Qwen2_5_VLForConditionalGeneration.from_pretrained(base, dtype=dtype), checkpoint_dir, base)


def load_chat_template(*sources: str | Path) -> str | None:
    """The first chat template found in the sources' `chat_template.jinja` / `chat_template.json`."""
    for source in sources:
        for filename in ("chat_template.jinja", "chat_template.json"):
            path = cached_file(
                str(source),
                filename,
                _raise_exceptions_for_missing_entries=False,
                _raise_exceptions_for_connection_errors=False,
            )
            if path is None:
                continue
            text = Path(path).read_text(encoding="utf-8")
            return json.loads(text)["chat_template"] if filename.endswith(".json") else text
    return None


def build_official_processor(checkpoint_dir: Path, base: str) -> RelSimProcessor:
    """Tokenizer from the checkpoint (it holds `<|query|>`), image processor and template from it or the base."""
    tokenizer = AutoTokenizer.from_pretrained(checkpoint_dir)
    has_image_config = (checkpoint_dir / "preprocessor_config.json").is_file()
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(checkpoint_dir if has_image_config else base)
    chat_template = load_chat_template(checkpoint_dir, base) or getattr(tokenizer, "chat_template", None)
    return RelSimProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=chat_template,
        instruction=None,
        use_system_prompt=True,
        image_size=OFFICIAL_IMAGE_SIZE,
        crop="center",
    )


def convert_official_checkpoint(
    checkpoint_dir: str | Path, base: str, output_dir: str | Path, dtype: torch.dtype = torch.float32
) -> Path:
    """Writes the converted RelSimModel + RelSimProcessor to `output_dir` and returns it."""
    checkpoint_dir, output_dir = Path(checkpoint_dir), Path(output_dir)
    extras = load_official_extras(checkpoint_dir)
    query_token_id = extras["query_token_id"]
    processor = build_official_processor(checkpoint_dir, base)
    if processor.query_token_id != query_token_id:
        raise ValueError(
            f"{EXTRAS_FILE} names query token id {query_token_id} but the checkpoint's tokenizer gives "
            f"{processor.query_token!r} id {processor.query_token_id}"
        )
    merged = merge_official_adapter(checkpoint_dir, base, dtype)
    backbone = merged.model
    embedding_rows = backbone.get_input_embeddings().weight
    if query_token_id >= embedding_rows.shape[0]:
        raise ValueError(
            f"query token id {query_token_id} lies past the base embedding ({embedding_rows.shape[0]} rows)"
        )
    projection = extras["projection"]
    if projection["weight"].shape[1] != backbone.config.text_config.hidden_size:
        raise ValueError(
            f"projection expects hidden size {projection['weight'].shape[1]}, "
            f"{base} has {backbone.config.text_config.hidden_size}"
        )
    config = RelSimConfig(
        backbone_config=backbone.config,
        projection_dim=projection["weight"].shape[0],
        query_token_id=query_token_id,
        **processor.settings(),
    )
    model = RelSimModel.around_backbone(backbone, config)
    with torch.no_grad():
        model.query_embedding.weight.copy_(embedding_rows[query_token_id])
        model.projection.weight.copy_(projection["weight"])
        model.projection.bias.copy_(projection["bias"])
        if "logit_scale" in extras:
            model.temperature.logit_scale.copy_(torch.as_tensor(extras["logit_scale"]).reshape(()))
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    logger.info("wrote %s", output_dir)
    return output_dir


if __name__ == "__main__":
    raise SystemExit(
        "the converter's command line is `python -m training.trainer convert-official` "
        "(console script relsim-convert-official)"
    )
