"""Each method's real loading code on tiny random models saved to disk, against the model's own forward."""

import pytest
import torch
import torch.nn.functional as F
from conftest import random_image
from evaluation_helpers import save_tiny_clip, save_tiny_dinov2
from transformers import AutoTokenizer, CLIPModel, Dinov2Model
from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil

from training.evaluation.captioner import MAX_CAPTION_WORDS, Captioner, limit_words
from training.evaluation.methods.build import MethodOptions, build_method
from training.evaluation.methods.caption_text import ClipTextMethod, QwenTextMethod
from training.vlm.chat import QwenVLChat


@pytest.fixture
def pil_images():
    return [random_image(48, 64, 10), random_image(64, 40, 11), random_image(32, 32, 12)]


def test_relsim_method_loads_a_saved_model_and_matches_embed_images(tmp_path, model, processor, pil_images):
    model.save_pretrained(tmp_path / "relsim")
    processor.save_pretrained(tmp_path / "relsim")
    method = build_method("relsim", MethodOptions(model=str(tmp_path / "relsim")))
    embedded = method.embed(method.preprocess(pil_images), ["a", "b", "c"])
    torch.testing.assert_close(embedded, model.embed_images(pil_images, processor), atol=1e-5, rtol=0)
    assert method.cache_identity()["method"] == "relsim" and method.metric == "cosine"


def test_clip_image_method_is_the_normalised_projected_image_feature(tmp_path, pil_images):
    folder = save_tiny_clip(tmp_path / "clip")
    method = build_method("clip-i", MethodOptions(model=str(folder)))
    pixels = method.preprocess(pil_images)
    assert pixels.shape == (3, 3, 32, 32)
    reference = CLIPModel.from_pretrained(folder).eval()
    with torch.no_grad():
        vision = reference.vision_model(pixel_values=pixels).pooler_output
        expected = F.normalize(reference.visual_projection(vision), dim=-1)
    torch.testing.assert_close(method.embed(pixels, ["a", "b", "c"]), expected, atol=1e-6, rtol=0)


def test_dino_method_is_the_normalised_cls_token(tmp_path, pil_images):
    folder = save_tiny_dinov2(tmp_path / "dino")
    method = build_method("dino", MethodOptions(model=str(folder)))
    reference = Dinov2Model.from_pretrained(folder).eval()
    pixels = BitImageProcessorPil.from_pretrained(folder)(images=pil_images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = F.normalize(reference(pixel_values=pixels).pooler_output, dim=-1)
    embedded = method.embed(method.preprocess(pil_images), ["a", "b", "c"])
    assert embedded.shape == (3, 32)
    torch.testing.assert_close(embedded, expected, atol=1e-6, rtol=0)


def test_limit_words_enforces_the_thirty_word_bar():
    text = " ".join(f"w{index}" for index in range(45)) + "\n"
    assert len(limit_words(text).split()) == MAX_CAPTION_WORDS
    assert limit_words("  a  short\ncaption ") == "a short caption"


@pytest.fixture
def chat(backbone_dir):
    return QwenVLChat.from_pretrained(str(backbone_dir), max_pixels=56 * 56)


def test_qwen_chat_expands_each_image_to_its_token_count(chat, pil_images):
    batch = chat.build_batch([([pil_images[0]], "describe"), (pil_images[1:], "compare")])
    grid_tokens = batch["image_grid_thw"].prod(-1) // chat.image_processor.merge_size**2
    assert batch["image_grid_thw"].shape == (3, 3)
    assert batch["mm_token_type_ids"].sum(1).tolist() == [int(grid_tokens[0]), int(grid_tokens[1:].sum())]
    assert (batch["attention_mask"][:, -1] == 1).all()  # left padded for generation


def test_captioner_caches_captions_by_content(chat, pil_images, tmp_path):
    calls = []
    generate = chat.generate
    chat.generate = lambda conversations, **kwargs: (
        calls.append(len(conversations)) or generate(conversations, **kwargs)
    )
    captioner = Captioner(chat, tmp_path / "captions.jsonl")
    first = captioner(pil_images[:2], ["a", "b"])
    again = Captioner(chat, tmp_path / "captions.jsonl")(pil_images, ["a", "b", "c"])
    assert calls == [2, 1]  # only "c" was new to the reloaded cache
    assert again[:2] == first
    assert all(len(caption.split()) <= MAX_CAPTION_WORDS for caption in again)
    Captioner(chat, tmp_path / "captions.jsonl")([pil_images[2].rotate(90)], ["a"])  # "a" changed on disk
    Captioner(chat, tmp_path / "captions.jsonl", prompt="Name the objects.")(pil_images[:1], ["a"])  # another prompt
    assert calls == [2, 1, 1, 1]


def test_clip_text_and_qwen_text_embed_the_captions(chat, pil_images, tmp_path, caption_encoder):
    captioner = Captioner(chat, tmp_path / "captions.jsonl")
    clip_folder = save_tiny_clip(tmp_path / "clip")
    clip_text = ClipTextMethod(captioner, str(clip_folder))
    embedded = clip_text.embed(pil_images, ["a", "b", "c"])
    captions = captioner(pil_images, ["a", "b", "c"])
    reference = CLIPModel.from_pretrained(clip_folder).eval()
    tokens = AutoTokenizer.from_pretrained(clip_folder)(
        captions, padding=True, truncation=True, max_length=77, return_tensors="pt"
    )
    with torch.no_grad():
        expected_text = F.normalize(reference.text_projection(reference.text_model(**tokens).pooler_output), dim=-1)
    assert embedded.shape == (3, 16)
    torch.testing.assert_close(embedded, expected_text, atol=1e-6, rtol=0)

    qwen_text = QwenTextMethod(captioner)
    expected = caption_encoder.model.encode(captions, convert_to_tensor=True, normalize_embeddings=True).cpu()
    torch.testing.assert_close(qwen_text.embed(pil_images, ["a", "b", "c"]), expected, atol=1e-5, rtol=0)
    assert qwen_text.cache_identity()["captioner"] == str(chat.model_name_or_path)
