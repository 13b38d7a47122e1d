"""The describers of the conceptual distance: any saved chat model with its prompt, and the offline literal
describer, the tiny VLM fine-tuned (TRL SFT, `train_chat_sft`) to write the generator's literal descriptions of
synthetic images ("three teal stars in a row, growing, on a cream background").

The anonymous variant needs no code of its own: it is the pipeline's single-image captioner (for instance the tiny
one `train_synthetic_captioner` writes to `<output_dir>/model`) with its captioning prompt.

As for the tiny captioner, the words of the literal descriptions are added to the tiny tokenizer as whole tokens (it
spells most words in many byte pieces otherwise; a real Qwen tokenizer already has them). The tiny VLM learns slowly
(the filter's binary loss stays near ln 2 for ~1,500 steps), so the recipe's step count is a field to raise, not a
measured optimum.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.studies.conceptual_distance_runner import Describer
from training.vlm.chat import QwenVLChat


logger = logging.getLogger(__name__)

LITERAL_PROMPT = "Describe this image literally."
DESCRIBER_FILE = "describer.json"  # the prompt a saved describer was trained with
LITERAL_RECIPE = "training/configs/literal-describer-tiny-cpu.yaml"


@dataclass
class LiteralDescriberArguments:
    """The literal describer's prompt and its synthetic training images."""

    prompt: str = field(default=LITERAL_PROMPT, metadata={"help": "the user turn that asks for a description"})
    synthetic_num_per_family: int = field(default=100, metadata={"help": "training images per relation family"})
    synthetic_image_size: int = 112
    synthetic_seed: int = 0

    def __post_init__(self) -> None:
        if self.synthetic_num_per_family < 1:
            raise ValueError(f"synthetic_num_per_family must be at least 1, got {self.synthetic_num_per_family}")


def literal_vocabulary(examples: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every word of the examples' literal descriptions (punctuation split off: the tokenizer has it), plus every
    word the generator's attributes and the descriptions' either-or branches can write, held-out shapes and colours
    included, so any synthetic image's description is spelled in whole words."""
    from training.pipeline.captioning.synthetic import caption_vocabulary
    from training.synthetic.attributes import BACKGROUNDS, COLOURS, SHAPES
    from training.synthetic.literal import literal_description, number_word, plural

    texts = [literal_description(example) for example in examples]
    texts += [*SHAPES, *map(plural, SHAPES), *COLOURS, *BACKGROUNDS, *map(number_word, range(15))]
    texts += ["row column growing shrinking outlined striped small large"]
    return caption_vocabulary([" ".join(word.strip(",.") for word in text.split()) for text in texts])


def literal_sft_rows(examples: Sequence[Mapping[str, Any]], prompt: str = LITERAL_PROMPT) -> list[dict[str, Any]]:
    """One SFT row (image, prompt, literal description) per synthetic example."""
    from training.synthetic.literal import literal_description

    return [
        {"images": [example["image"]], "prompt": prompt, "answer": literal_description(example)} for example in examples
    ]


def load_literal_describer_recipe(path: str | Path = LITERAL_RECIPE, overrides: Mapping[str, Any] | None = None):
    """`(ChatModelArguments, LiteralDescriberArguments, VLMSFTArguments)` from a YAML recipe."""
    from training.vlm.sft_training import ChatModelArguments, VLMSFTArguments, load_recipe

    return load_recipe(path, [ChatModelArguments, LiteralDescriberArguments, VLMSFTArguments], overrides)


def train_literal_describer(
    output_dir: str | Path, recipe: str | Path = LITERAL_RECIPE, overrides: Mapping[str, Any] | None = None
) -> Describer:
    """Fine-tunes the tiny VLM on literal descriptions of synthetic training images (training shapes and colours)
    and saves it to `output_dir` with `describer.json` (its prompt), so `load_describer(output_dir)` reloads it.

    Returns:
        the trained describer, named "literal".
    """
    from training.synthetic import synthetic_examples
    from training.vlm.sft_training import train_chat_sft
    from training.vlm.tiny import build_tiny_chat

    model_arguments, arguments, sft_arguments = load_literal_describer_recipe(
        recipe, {**(overrides or {}), "output_dir": str(output_dir)}
    )
    if not model_arguments.tiny_model:
        raise ValueError(f"{recipe}: the literal describer is trained from the tiny VLM offline; set tiny_model: true")
    examples = list(
        synthetic_examples(arguments.synthetic_num_per_family, "train", arguments.synthetic_seed,
                           arguments.synthetic_image_size)
    )  # fmt: skip
    tokens = list(dict.fromkeys([*model_arguments.tiny_extra_tokens, *literal_vocabulary(examples)]))
    chat = build_tiny_chat(tokens, seed=model_arguments.initializer_seed, max_pixels=model_arguments.max_pixels)
    trained = train_chat_sft(chat, literal_sft_rows(examples, arguments.prompt), sft_arguments)
    output_dir = Path(output_dir)
    (output_dir / DESCRIBER_FILE).write_text(json.dumps({"prompt": arguments.prompt, "name": "literal"}) + "\n")
    trained.model_name_or_path = str(output_dir)
    return Describer(trained, arguments.prompt, "literal")


def load_describer(
    model_name_or_path: str,
    prompt: str | None = None,
    name: str = "describer",
    max_pixels: int = 448 * 448,
    device: str = "cpu",
    dtype=None,
    adapter: str | None = None,
) -> Describer:
    """A saved chat (folder or hub id, optionally with a LoRA `adapter` merged in) and its prompt: `prompt`, else
    the one in the folder's `describer.json` (written by `train_literal_describer`).

    Raises:
        ValueError: no prompt was given and the folder has no `describer.json`.
    """
    import torch

    if prompt is None:
        saved = Path(model_name_or_path) / DESCRIBER_FILE
        if not saved.is_file():
            raise ValueError(f"{model_name_or_path} has no {DESCRIBER_FILE}: give the describer's prompt")
        prompt = json.loads(saved.read_text(encoding="utf-8"))["prompt"]
    chat = QwenVLChat.from_pretrained(
        model_name_or_path, device=device, dtype=dtype or torch.float32, max_pixels=max_pixels, adapter=adapter
    )
    fingerprint = None
    if adapter:
        from training.evaluation.model_fingerprint import model_fingerprint
        from training.pipeline.captioning.cache_keys import adapter_fingerprint

        base = model_fingerprint(model_name_or_path, chat.model)
        adapter_id = adapter_fingerprint(adapter)
        fingerprint = f"{base}+{adapter_id}" if adapter_id else None  # None: the merged tensors are fingerprinted
        if fingerprint is None:
            from training.store import tensors_fingerprint

            fingerprint = tensors_fingerprint(chat.model.state_dict().items())
    return Describer(chat, prompt, name, fingerprint)
