"""The offline proof that the single-image captioner learns: the tiny generating Qwen2.5-VL, fine-tuned with TRL on
synthetic seed groups (images of one relation family, captioned with that family's anonymous caption, training
shapes and colours only), must write for held-out shapes and colours a caption whose MiniLM embedding lies nearest
the right family's caption (`CaptionerQuality.family_accuracy`); its leak rate is measured against the
generator's literal descriptions of the held-out images.

The tiny offline tokenizer was trained on a handful of sentences and spells most caption words in many byte
pieces. The caption vocabulary (every word of the family captions, with and without its leading space) is therefore
added to the tiny tokenizer as whole tokens: it stands in for the vocabulary a real Qwen tokenizer already has,
where such a caption is a dozen ordinary tokens. It changes how captions are spelled, not what must be learnt: which
caption fits the image.

With `synthetic_world: relations` the seed groups are images of one of the compositional world's training
relations (training looks), and held-out looks of the seen and of the unseen relations are captioned: an unseen
relation's caption can only be written by composing phrases learnt in other combinations
(`training.pipeline.captioning.composition`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.pipeline.captioning.composition import composition_scores
from training.pipeline.captioning.group import SeedGroup
from training.pipeline.captioning.quality import CaptionerQuality, evaluate_captioner, load_text_encoder
from training.pipeline.captioning.recipe import CaptionerDataArguments, CaptionerRecipe, load_captioner_recipe
from training.pipeline.captioning.single import SingleImageCaptioner, sft_rows_from_groups, train_single_captioner
from training.synthetic.dataset import synthetic_examples
from training.synthetic.factors import VALID_RELATIONS, Relation
from training.synthetic.families import FAMILIES
from training.synthetic.literal import literal_description
from training.synthetic.relation_subset import relation_subset
from training.synthetic.relations import relation_examples
from training.vlm.chat import QwenVLChat
from training.vlm.tiny import add_word_tokens, build_tiny_chat
from training.vlm.tiny_pretraining import word_tokens


logger = logging.getLogger(__name__)


def synthetic_seed_groups(examples: Sequence[dict], group_size: int, key: str = "family") -> list[SeedGroup]:
    """Consecutive examples of each family (or of whatever `key` names, e.g. `relation`) in groups of
    `group_size` (the last group of a family may be smaller, never below two), each captioned with its family's
    caption."""
    by_family: dict[str, list[dict]] = {}
    for example in examples:
        by_family.setdefault(example[key], []).append(example)
    groups = []
    for family, members in by_family.items():
        for start in range(0, len(members), group_size):
            chunk = members[start : start + group_size]
            if len(chunk) < 2 and groups and groups[-1].group_id.startswith(f"{family}-"):
                groups[-1].images += [example["image"] for example in chunk]
                groups[-1].names += [f"{family}/{example['index']}" for example in chunk]
                continue
            groups.append(
                SeedGroup(
                    f"{family}-{start // group_size}",
                    [example["image"] for example in chunk],
                    [f"{family}/{example['index']}" for example in chunk],
                    chunk[0]["caption"],
                )
            )
    return groups


def synthetic_captioner_data(data: CaptionerDataArguments) -> tuple[list[dict], list[dict], str, dict[str, str]]:
    """The recipe's world: (training examples, held-out-look examples, the key naming an example's relation, every
    relation's caption by name). The compositional world holds out the seen relations' images, then the unseen."""
    size, seed = data.synthetic_image_size, data.synthetic_seed
    if data.synthetic_world == "relations":
        seen, unseen = (
            relation_subset("train", data.synthetic_max_relations),
            relation_subset("heldout", data.synthetic_max_relations),
        )
        train = relation_examples(data.synthetic_num_per_family, "train", relations=seen, seed=seed, image_size=size)
        heldout = [
            example
            for relations in (seen, unseen)
            for example in relation_examples(
                data.synthetic_eval_num_per_family, "heldout", relations=relations, seed=seed, image_size=size
            )
        ]
        return list(train), heldout, "relation", {relation.name: relation.caption for relation in VALID_RELATIONS}
    train = synthetic_examples(data.synthetic_num_per_family, "train", seed, size)
    heldout = synthetic_examples(data.synthetic_eval_num_per_family, "heldout", seed, size)
    return list(train), list(heldout), "family", {name: family.caption for name, family in FAMILIES.items()}


def seen_and_unseen_composition(heldout: Sequence[dict], per_caption: Sequence[dict]) -> dict[str, dict[str, Any]]:
    """`CompositionScores` of the held-out captions of seen and of unseen relations (`per_caption` rows of
    `evaluate_captioner` with every relation's caption as a family: their `predicted_family` is the nearest)."""
    unseen = {relation.name for relation in relation_subset("heldout")}
    scores = {}
    for name, wanted in (("seen_relations", False), ("unseen_relations", True)):
        chosen = [
            (example, row)
            for example, row in zip(heldout, per_caption, strict=True)
            if (example["relation"] in unseen) == wanted
        ]
        if chosen:
            scores[name] = composition_scores(
                [row["caption"] for _, row in chosen],
                [Relation.from_name(example["relation"]) for example, _ in chosen],
                [row["predicted_family"] for _, row in chosen],
            ).to_dict()
    return scores


def train_synthetic_captioner(
    output_dir: str | Path, recipe: CaptionerRecipe | str | Path = "training/configs/captioner-tiny-cpu.yaml"
) -> tuple[QwenVLChat, CaptionerQuality]:
    """Trains the tiny captioner on synthetic seed groups and measures it on held-out shapes and colours.

    Writes `<output_dir>/model` (the fine-tuned tiny chat), `heldout_captions.jsonl` (the caption cache) and
    `quality.json` (the summary with training and captioning seconds).

    Returns:
        the trained chat and its quality (mean cosine to the family caption, placeholder rate, family accuracy).
    """
    if not isinstance(recipe, CaptionerRecipe):
        recipe = load_captioner_recipe(recipe, {"output_dir": str(Path(output_dir) / "model")})
    output_dir = Path(output_dir)
    data = recipe.data
    if data.synthetic_num_per_family < 1 or data.synthetic_eval_num_per_family < 1:
        raise ValueError(
            "the synthetic captioner needs synthetic_num_per_family and synthetic_eval_num_per_family >= 1"
        )
    train_examples, heldout, key, family_captions = synthetic_captioner_data(data)
    if recipe.model.tiny_pretrained:  # its tokenizer already holds the family captions' words
        chat = recipe.model.load_chat()
        if key == "relation":
            add_word_tokens(chat, word_tokens(family_captions.values()))
    else:
        extra_tokens = list(dict.fromkeys([*recipe.model.tiny_extra_tokens, *word_tokens(family_captions.values())]))
        chat = build_tiny_chat(extra_tokens, seed=recipe.model.initializer_seed, max_pixels=recipe.model.max_pixels)
    prompt = recipe.captioner.caption_prompt()
    rows, _ = sft_rows_from_groups(synthetic_seed_groups(train_examples, data.synthetic_group_size, key), prompt)
    started = time.perf_counter()
    chat, fingerprint = train_single_captioner(chat, rows, recipe.sft)
    training_seconds = time.perf_counter() - started
    started = time.perf_counter()
    captioner = SingleImageCaptioner(
        chat, output_dir / "heldout_captions.jsonl", prompt, recipe.captioner.decoding(), fingerprint,
        recipe.captioner.generation_batch_size,
    )  # fmt: skip
    captions = captioner([example["image"] for example in heldout]).texts()
    captioning_seconds = time.perf_counter() - started
    quality = evaluate_captioner(
        captions,
        load_text_encoder(),
        references=[example["caption"] for example in heldout],
        families=[example[key] for example in heldout],
        family_captions=family_captions,
        literal_descriptions=[[literal_description(example)] for example in heldout],
    )
    if key == "relation":
        quality.composition = seen_and_unseen_composition(heldout, quality.per_caption)
    summary = {
        **quality.summary(),
        "training_rows": len(rows),
        "training_seconds": round(training_seconds, 1),
        "captioning_seconds": round(captioning_seconds, 1),
    }
    (output_dir / "quality.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    logger.info("synthetic captioner: %s", summary)
    return chat, quality
