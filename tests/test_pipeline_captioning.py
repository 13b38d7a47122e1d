"""The anonymous captioners (training/pipeline/captioning): prompts, caches, batching, the released adapter's
loading, SFT, quality measures and unreadable images, on the tiny generating Qwen2.5-VL."""

import json

import numpy as np
import PIL.Image
import pytest
import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
from safetensors.torch import save_file

from training.image_ids import url_image_hash
from training.pipeline.captioning.group import (
    GroupCaptioner,
    SeedGroup,
    seed_groups_from_dataset,
    seed_groups_from_json,
    write_seed_group_json,
)
from training.pipeline.captioning.prompts import GROUP_PROMPT, CaptionPrompt, single_image_prompt
from training.pipeline.captioning.quality import evaluate_captioner
from training.pipeline.captioning.single import (
    SingleImageCaptioner,
    load_captioner,
    sft_rows_from_groups,
    train_single_captioner,
)
from training.vlm.decoding import Decoding
from training.vlm.sft_data import ChatSFTCollator
from training.vlm.tiny import build_tiny_chat
from training.vlm.tiny_pretraining import word_tokens


CAPTIONS = ("the same {Object} repeated in a row", "{Object}s stacked into a tower")
SHORT = Decoding(max_new_tokens=6)


def image(seed: int, height: int = 112, width: int = 112) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture
def chat():
    return build_tiny_chat(word_tokens(CAPTIONS), seed=0)


class CountingChat:
    """The chat with every generate call's conversations recorded."""

    def __init__(self, chat):
        self.inner, self.calls = chat, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, conversations, **kwargs):
        self.calls.append(list(conversations))
        return self.inner.generate(conversations, **kwargs)

    @property
    def asked(self):
        return sum(len(call) for call in self.calls)


def test_group_prompt_holds_every_image_of_its_group(chat, tmp_path, monkeypatch):
    prompts = []
    generate = chat.model.generate
    monkeypatch.setattr(chat.model, "generate", lambda **batch: prompts.append(batch["input_ids"]) or generate(**batch))
    groups = [SeedGroup("a", [image(0), image(1), image(2)]), SeedGroup("b", [image(3), image(4, 56, 112)])]
    run = GroupCaptioner(chat, tmp_path / "groups.jsonl", decoding=SHORT)(groups, batch_size=2)
    (input_ids,) = prompts  # both groups in one batch
    # a 112x112 image is 16 image tokens, a 56x112 one 8: group a holds its 3 images, group b its 2
    assert (input_ids == chat.image_token_id).sum(-1).tolist() == [48, 24]
    assert [caption.group_id for caption in run.captions] == ["a", "b"]
    assert [len(caption.image_hashes) for caption in run.captions] == [3, 2]


def test_group_cache_rerun_asks_only_new_groups(chat, tmp_path):
    cache = tmp_path / "groups.jsonl"
    old = [SeedGroup("a", [image(0), image(1)]), SeedGroup("b", [image(2), image(3)])]
    first_chat = CountingChat(chat)
    first = GroupCaptioner(first_chat, cache, decoding=SHORT)(old)
    assert (first_chat.asked, first.generated, first.reused) == (2, 2, 0)

    rerun_chat = CountingChat(chat)
    rerun = GroupCaptioner(rerun_chat, cache, decoding=SHORT)([*old, SeedGroup("c", [image(4), image(5)])])
    assert rerun_chat.asked == 1 and len(rerun_chat.calls[0][0][0]) == 2  # only group c, with its two images
    assert (rerun.generated, rerun.reused) == (1, 2)
    assert [caption.caption for caption in rerun.captions[:2]] == [caption.caption for caption in first.captions]
    assert len(cache.read_text().splitlines()) == 3


def test_changed_prompt_changes_the_cache_key(chat, tmp_path):
    cache = tmp_path / "groups.jsonl"
    groups = [SeedGroup("a", [image(0), image(1)])]
    GroupCaptioner(chat, cache, decoding=SHORT)(groups)
    edited = CaptionPrompt(GROUP_PROMPT.name, GROUP_PROMPT.edition, GROUP_PROMPT.text + " Be brief.")
    assert edited.version != GROUP_PROMPT.version and edited.version.startswith("group-v1:")
    counting = CountingChat(chat)
    run = GroupCaptioner(counting, cache, prompt=edited, decoding=SHORT)(groups)
    assert counting.asked == 1 and run.captions[0].prompt_version == edited.version
    assert counting.calls[0][0][1].endswith("Be brief.")
    # the same prompt again is served from the cache, whichever of the two was asked
    again = CountingChat(chat)
    GroupCaptioner(again, cache, decoding=SHORT)(groups)
    assert again.asked == 0


def test_single_image_prompt_recipe_field():
    assert single_image_prompt(None).version.startswith("single-image-v1:")
    official_like = single_image_prompt("Only output the caption.")
    assert official_like.text == "Only output the caption." and official_like.name == "single-image-custom"
    with pytest.raises(ValueError, match="empty"):
        single_image_prompt("  ")


def test_unreadable_images_are_reported_and_counted(chat, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    missing = tmp_path / "missing.png"
    image(0).save(tmp_path / "good.png")
    groups = [
        SeedGroup("kept", [tmp_path / "good.png", image(1), broken]),
        SeedGroup("too-few", [image(2), missing]),
    ]
    counting = CountingChat(chat)
    run = GroupCaptioner(counting, tmp_path / "groups.jsonl", decoding=SHORT)(groups)
    assert counting.asked == 1 and len(counting.calls[0][0][0]) == 2  # the broken image left out
    assert [caption.group_id for caption in run.captions] == ["kept"]
    assert [(item.group_id, item.source) for item in run.unreadable] == [
        ("kept", str(broken)),
        ("too-few", str(missing)),
    ]
    assert "UnidentifiedImageError" in run.unreadable[0].reason and run.unreadable[1].reason == "file not found"
    assert run.skipped_groups == [{"group_id": "too-few", "reason": "1 of 2 images readable; a group needs 2"}]
    assert run.summary() == {
        "captioned": 1, "generated": 1, "reused": 0, "unreadable_images": 2, "skipped_groups": 1
    }  # fmt: skip

    single = SingleImageCaptioner(chat, tmp_path / "single.jsonl", decoding=SHORT)([image(3), broken, missing])
    assert [caption is None for caption in single.captions] == [False, True, True]
    assert [item.source for item in single.unreadable] == [str(broken), str(missing)]


def test_seed_group_json_in_and_out(chat, tmp_path):
    urls = [f"https://example.org/{index}.jpg" for index in range(3)]
    source = tmp_path / "seed_group.json"
    source.write_text(json.dumps([{"anonymous_caption": '"{Object}s in a row"', "image_urls": urls}]))
    images = tmp_path / "images"
    images.mkdir()
    for index, url in enumerate(urls[:2]):
        image(index).save(images / f"{url_image_hash(url)}.png")
    (group,) = seed_groups_from_json(source, images)
    assert group.reference_caption == "{Object}s in a row" and group.names == urls
    run = GroupCaptioner(chat, tmp_path / "groups.jsonl", decoding=SHORT)([group])
    assert [item.source for item in run.unreadable] == [urls[2]]  # never downloaded
    written = json.loads(write_seed_group_json(run, tmp_path / "out.json").read_text())
    assert written == [{"anonymous_caption": run.captions[0].caption, "image_urls": urls[:2]}]


def test_seed_groups_dataset_with_a_failed_download(chat, tmp_path):
    import datasets

    features = datasets.Features(
        {
            "group_id": datasets.Value("int32"),
            "anonymous_caption": datasets.Value("string"),
            "image_urls": datasets.List(datasets.Value("string")),
            "images": datasets.List(datasets.Image()),
        }
    )
    urls = ["https://example.org/a.jpg", "https://example.org/b.jpg", "https://example.org/c.jpg"]
    rows = {"group_id": [7], "anonymous_caption": ["{Object}s in a row"], "image_urls": [urls]}
    dataset = datasets.Dataset.from_dict({**rows, "images": [[image(0), image(1), None]]}, features=features)
    (group,) = seed_groups_from_dataset(dataset)
    run = GroupCaptioner(chat, tmp_path / "groups.jsonl", decoding=SHORT)([group])
    assert run.captions[0].group_id == "7" and run.captions[0].image_names == urls[:2]
    assert [(item.source, item.reason) for item in run.unreadable] == [
        (urls[2], "no image (the row has none: was it downloaded?)")
    ]


def test_batched_generation_equals_one_by_one(chat, tmp_path):
    images = [image(0), image(1, 56, 112), image(2, 112, 56), image(3), image(4, 84, 112)]
    batched = SingleImageCaptioner(chat, tmp_path / "batched.jsonl", decoding=Decoding(12), batch_size=5)(images)
    alone = SingleImageCaptioner(chat, tmp_path / "alone.jsonl", decoding=Decoding(12), batch_size=1)(images)
    assert batched.texts() == alone.texts()
    assert len(set(batched.texts())) > 1  # the images are told apart, so the comparison means something


def test_single_image_cache_rerun_captions_only_new_images(chat, tmp_path):
    cache = tmp_path / "single.jsonl"
    SingleImageCaptioner(chat, cache, decoding=SHORT)([image(0), image(1)])
    counting = CountingChat(chat)
    run = SingleImageCaptioner(counting, cache, decoding=SHORT)([image(0), image(2), image(1)])
    assert counting.asked == 1 and (run.generated, run.reused) == (1, 2)
    sampled = CountingChat(chat)
    SingleImageCaptioner(sampled, cache, decoding=Decoding(6, do_sample=True, temperature=0.7, top_p=0.9, seed=0))(
        [image(0)]
    )
    assert sampled.asked == 1  # other decoding settings: another key


def sft_loss(chat, rows) -> float:
    with torch.no_grad():
        return chat.model(**ChatSFTCollator(chat)(rows)).loss.item()


def test_single_image_sft_loss_falls_in_a_few_steps(chat, tmp_path):
    from training.vlm.sft_training import VLMSFTArguments

    groups = [
        SeedGroup("rows", [image(index) for index in range(4)], reference_caption=f'"{CAPTIONS[0]}"'),
        SeedGroup("towers", [image(index) for index in range(4, 8)], reference_caption=CAPTIONS[1]),
    ]
    rows, unreadable = sft_rows_from_groups(groups, single_image_prompt("Caption:"))
    assert len(rows) == 8 and not unreadable and rows[0]["answer"] == CAPTIONS[0]  # quotes removed
    before = sft_loss(chat, rows)
    arguments = VLMSFTArguments(
        output_dir=str(tmp_path / "run"), use_lora=False, per_device_train_batch_size=8, max_steps=10,
        learning_rate=4e-3, warmup_steps=0, weight_decay=0.0, use_cpu=True, bf16=False, report_to="none",
        save_strategy="no", logging_steps=100, seed=0,
    )  # fmt: skip
    trained, fingerprint = train_single_captioner(chat, rows, arguments)
    after = sft_loss(trained, rows)
    assert after < 0.7 * before, (before, after)
    assert fingerprint.startswith("sha256:")  # the saved folder's files


def save_legacy_adapter(chat, folder, seed=1):
    """A PEFT LoRA (q_proj, v_proj of the language model) saved as transformers 4.x named Qwen2.5-VL's keys, the
    released captioner's layout; returns the adapted model for reference."""
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    peft_model = get_peft_model(chat.model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    state = get_peft_model_state_dict(peft_model)
    legacy = {
        key.replace("base_model.model.model.language_model.", "base_model.model.model."): value
        for key, value in state.items()
    }
    assert legacy.keys() != state.keys() and all(".language_model." not in key for key in legacy)
    folder.mkdir()
    save_file({key: value.contiguous() for key, value in legacy.items()}, folder / "adapter_model.safetensors")
    config.base_model_name_or_path = "Qwen/Qwen2.5-VL-7B-Instruct"
    config.save_pretrained(folder)
    return peft_model


def test_released_adapter_layout_with_legacy_keys_loads(tmp_path):
    from training.vlm.chat_model import ChatModelArguments
    from training.vlm.tiny import save_tiny_chat

    base_dir = save_tiny_chat(tmp_path / "base", extra_tokens=word_tokens(CAPTIONS))
    reference = build_tiny_chat(word_tokens(CAPTIONS), seed=0)
    batch = reference.build_batch([([image(0)], "Caption:")])
    with torch.no_grad():
        base_logits = reference.model(**batch).logits
        adapted = save_legacy_adapter(reference, tmp_path / "adapter")
        adapted_logits = adapted(**batch).logits
    arguments = ChatModelArguments(
        model_name_or_path=str(base_dir), adapter=str(tmp_path / "adapter"), max_pixels=112 * 112
    )
    loaded, fingerprint = load_captioner(arguments)
    with torch.no_grad():
        loaded_logits = loaded.model(**batch).logits
    assert (adapted_logits - base_logits).abs().max() > 1e-2  # the adapter changes the model
    torch.testing.assert_close(loaded_logits, adapted_logits, atol=1e-5, rtol=1e-5)
    _, base_fingerprint = load_captioner(ChatModelArguments(model_name_or_path=str(base_dir)))
    assert fingerprint.startswith(base_fingerprint + "+sha256:")


class FixedEncoder:
    """Unit vectors by hand: cosines are known exactly."""

    VECTORS = {
        "the same {Object} in a row": [1.0, 0.0, 0.0],
        "{Object}s stacked into a tower": [0.0, 1.0, 0.0],
        "a row of {Object}s": [0.6, 0.8, 0.0],
        "a red apple": [0.0, 0.0, 1.0],
        "a row of red {Object}s": [0.8, 0.6, 0.0],
    }

    def encode(self, captions, **kwargs):
        return np.array([self.VECTORS[caption] for caption in captions], dtype=np.float32)


def test_quality_measures_on_hand_made_captions():
    families = {"row": "the same {Object} in a row", "tower": "{Object}s stacked into a tower"}
    generated = ["the same {Object} in a row", "a row of {Object}s", "a red apple", "a row of red {Object}s"]
    truth = ["row", "row", "tower", "row"]
    quality = evaluate_captioner(
        generated,
        FixedEncoder(),
        references=[families[name] for name in truth],
        families=truth,
        family_captions=families,
        literal_descriptions=[["an apple"], ["a pear"], ["a red apple"], ["a red pear"]],
        leak_check=lambda caption, descriptions: sorted(
            set(caption.split()) & {word for text in descriptions for word in text.split()} - {"a", "of", "in", "the"}
        ),
    )
    # cosines to the reference: 1, 0.6, 0 (apple vs tower), 0.8 -> mean 0.6
    assert quality.mean_cosine == pytest.approx(0.6, abs=1e-6)
    assert quality.placeholder_rate == 0.75  # "a red apple" has none
    assert quality.leak_rate == 0.5  # "apple"/"red" in the third, "red" in the fourth
    # nearest family: row, tower (0.8 > 0.6), tie 0/0 -> the first family (row), row: 2 of 4 right
    assert [row["predicted_family"] for row in quality.per_caption] == ["row", "tower", "row", "row"]
    assert quality.family_accuracy == 0.5


def test_quality_with_the_real_minilm(caption_encoder):
    families = {"row": "the same {Object} repeated in a row", "tower": "{Object}s stacked one on top of another"}
    quality = evaluate_captioner(
        ["{Object}s stacked one on top of another", "the same {Object} repeated in a row"],
        caption_encoder.model,
        references=list(families.values())[::-1],
        families=["tower", "row"],
        family_captions=families,
    )
    assert quality.mean_cosine == pytest.approx(1.0, abs=1e-5) and quality.family_accuracy == 1.0
    # the pipeline's own leak checker: "red" and "star" name what one image shows
    leaks = evaluate_captioner(
        ["{Object}s in a red row", "{Object}s in a row"],
        caption_encoder.model,
        literal_descriptions=[["three red stars in a row"], ["three red stars in a row"]],
    )
    assert leaks.leak_rate == 0.5 and leaks.per_caption[0]["leaked_words"] == ["red"]
    with pytest.raises(ValueError, match="families has 1 entries for 2 captions"):
        evaluate_captioner(["a", "b"], caption_encoder.model, families=["row"], family_captions=families)


def test_synthetic_captioner_trains_and_reports(tmp_path):
    from training.pipeline.captioning.recipe import load_captioner_recipe
    from training.pipeline.captioning.synthetic import train_synthetic_captioner

    overrides = {
        "output_dir": str(tmp_path / "model"), "max_steps": 2, "warmup_steps": 0, "synthetic_num_per_family": 2,
        "synthetic_eval_num_per_family": 1, "synthetic_group_size": 2, "max_new_tokens": 8,
    }  # fmt: skip
    recipe = load_captioner_recipe("training/configs/captioner-tiny-cpu.yaml", overrides)
    chat, quality = train_synthetic_captioner(tmp_path, recipe)
    summary = json.loads((tmp_path / "quality.json").read_text())
    assert summary["count"] == quality.count == 8 and summary["training_rows"] == 16
    assert {row["family"] for row in quality.per_caption} == set(recipe_families())
    assert 0 <= summary["family_accuracy"] <= 1 and summary["leak_rate"] is not None
    assert (tmp_path / "model" / "model.safetensors").is_file()
    # the caption vocabulary is whole tokens: a family caption is one token per word (and its comma)
    assert len(chat.tokenizer.tokenize("{Object}s stacked one on top of another into a tower")) == 10


def recipe_families():
    from training.synthetic.families import FAMILY_NAMES

    return FAMILY_NAMES


def test_recipe_trains_on_seed_group_json_and_measures_heldout_groups(tmp_path):
    from training.pipeline.captioning.recipe import load_captioner_recipe, train_captioner_from_recipe

    images = tmp_path / "images"
    images.mkdir()
    groups = []
    for group in range(3):
        urls = [f"https://example.org/{group}/{index}.jpg" for index in range(2)]
        for index, url in enumerate(urls):
            image(10 * group + index).save(images / f"{url_image_hash(url)}.png")
        groups.append({"anonymous_caption": f'"{CAPTIONS[group % 2]}"', "image_urls": urls})
    (tmp_path / "seed_group.json").write_text(json.dumps(groups))
    overrides = {
        "seed_group_json": str(tmp_path / "seed_group.json"), "image_dir": str(images), "heldout_group_fraction": 0.34,
        "output_dir": str(tmp_path / "run"), "max_steps": 1, "max_new_tokens": 4,
    }  # fmt: skip
    recipe = load_captioner_recipe("training/configs/captioner-tiny-cpu.yaml", overrides)
    _, fingerprint, quality = train_captioner_from_recipe(recipe)
    assert quality.count == 2  # one held-out group of two images, never trained on
    assert json.loads((tmp_path / "run" / "quality.json").read_text())["count"] == 2
    assert (
        fingerprint.startswith("sha256:")
        and len((tmp_path / "run" / "heldout_captions.jsonl").read_text().splitlines()) == 2
    )


def test_composition_scores_count_exact_per_factor_and_nearest_with_their_chance():
    from training.pipeline.captioning.composition import composition_scores
    from training.synthetic.factors import Relation

    row, column = Relation("row", "growing", "none", "none"), Relation("column", "none", "colour", "none")
    captions = [
        row.caption,  # exact
        "{Object}s in a row, shrinking step by step.",  # layout right, change wrong
        "{Object}s in a column, exactly one of them a different colour ",  # exact after trimming
        "a spiral of things",  # nothing readable
    ]
    scores = composition_scores(captions, [row, row, column, column], [row.name, row.name, row.name, column.name])
    assert (scores.count, scores.exact, scores.nearest) == (4, 0.5, 0.75)
    assert scores.factors == {"layout": 0.75, "change": 0.5, "exception": 0.75, "structure": 0.75}
    assert scores.chance == {
        "exact": 1 / 407, "nearest": 1 / 407, "layout": 0.5, "change": 0.5, "exception": 0.5, "structure": 1.0
    }  # fmt: skip
    with pytest.raises(ValueError, match="got 1 captions, 2 relations and 2 nearest names"):
        composition_scores(captions[:1], [row, row], [row.name, row.name])


def test_synthetic_captioner_on_the_compositional_world_scores_seen_and_unseen_relations(tmp_path):
    from training.pipeline.captioning.recipe import load_captioner_recipe
    from training.pipeline.captioning.synthetic import train_synthetic_captioner
    from training.synthetic.factors import VALID_RELATIONS

    overrides = {
        "output_dir": str(tmp_path / "model"), "max_steps": 2, "warmup_steps": 0, "synthetic_world": "relations",
        "synthetic_max_relations": 3, "synthetic_num_per_family": 2, "synthetic_eval_num_per_family": 1,
        "synthetic_group_size": 2, "max_new_tokens": 8,
    }  # fmt: skip
    recipe = load_captioner_recipe("training/configs/captioner-tiny-cpu.yaml", overrides)
    chat, quality = train_synthetic_captioner(tmp_path, recipe)
    summary = json.loads((tmp_path / "quality.json").read_text())
    assert summary["count"] == quality.count == 6 and summary["training_rows"] == 6
    assert set(summary["composition"]) == {"seen_relations", "unseen_relations"}
    unseen = summary["composition"]["unseen_relations"]
    assert unseen["count"] == 3 and unseen["candidates"] == 407 and unseen["chance"]["nearest"] == 1 / 407
    assert set(unseen["factors"]) == {"layout", "change", "exception", "structure"}
    # every relation caption's words are whole tokens (a comma stays with its word), one token per word
    longest = max((relation.caption for relation in VALID_RELATIONS), key=len)
    assert len(chat.tokenizer.tokenize(longest)) == len(longest.split()) == 26
