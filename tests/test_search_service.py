"""What the web app is built on, without a browser: gallery pages, what the server may serve, the baseline it picks
and caches, and the indexes it refuses."""

from pathlib import Path

import pytest
import torch
from conftest import random_image
from evaluation_helpers import save_tiny_clip

from training.evaluation.methods.attribute_baselines import ColourHistogramMethod
from training.search.__main__ import APP_BASELINES
from training.search.baseline import BASELINE_NAMES, BaselineNeighbours, choose_baseline, weights_available_locally
from training.search.index import SearchIndex, index_collection
from training.search.model import SearchModel
from training.search.search_service import SearchService
from training.search.served_files import ServedFiles
from training.search.sources import from_folder
from training.search.why import CaptionBank


def write_photos(folder: Path, count: int) -> list[Path]:
    paths = []
    for seed in range(count):
        path = folder / ("nested" if seed % 3 == 0 else "") / f"photo{seed:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        random_image(40, 48, seed).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def search_model(model, processor):
    return SearchModel(model, processor, name="tiny")


def bank() -> CaptionBank:
    """Two labels with fixed vectors: the text encoder is not needed to test the service's plumbing."""
    return CaptionBank(["{Object}s in a row", "an {Object} inside another"], embeddings=torch.eye(2, 384))


def test_pages_list_the_collection_in_index_order_and_clamp_page_numbers(tmp_path, search_model):
    write_photos(tmp_path / "photos", 7)
    index_collection(tmp_path / "index", search_model, folder=tmp_path / "photos", show_progress=False)
    index = SearchIndex(tmp_path / "index")
    service = SearchService(index, search_model, bank(), page_size=3)

    names = [name for number in (1, 2, 3) for _, name in service.page(number).images]
    assert names == [Path(entry.path).relative_to(tmp_path.resolve() / "photos").as_posix() for entry in index.entries]
    assert names[0] == "nested/photo00.png" and len(set(names)) == 7
    assert [(page.number, page.pages, page.total, len(page.images)) for page in map(service.page, (0, 3, 99))] == [
        (1, 3, 7, 3),
        (3, 3, 7, 1),
        (3, 3, 7, 1),
    ]


def test_the_server_may_serve_the_collection_folder_but_not_an_index_kept_inside_it(tmp_path, search_model):
    photos = tmp_path / "photos"
    write_photos(photos, 3)
    index_collection(photos / ".index", search_model, folder=photos, show_progress=False)
    service = SearchService(SearchIndex(photos / ".index"), search_model, bank())
    assert service.allowed_paths == [str(photos.resolve())]
    assert service.blocked_paths == [str((photos / ".index").resolve())]

    index_collection(tmp_path / "elsewhere", search_model, folder=photos, show_progress=False)
    assert SearchService(SearchIndex(tmp_path / "elsewhere"), search_model, bank()).blocked_paths == []


def test_an_index_of_listed_files_may_serve_exactly_those_files(tmp_path, search_model):
    paths = write_photos(tmp_path / "photos", 4)
    listed = [paths[0], paths[2]]
    (tmp_path / "list.txt").write_text("".join(f"{path}\n" for path in listed))
    index_collection(tmp_path / "index", search_model, paths=tmp_path / "list.txt", show_progress=False)
    service = SearchService(SearchIndex(tmp_path / "index"), search_model, bank())
    assert service.folder is None
    assert sorted(service.served_files) == sorted(str(path.resolve()) for path in listed)
    # Gradio is given the folder (one path to resolve per request, however many files), the middleware the files
    assert service.allowed_paths == sorted(str(path.parent.resolve()) for path in listed)  # photos/nested, photos
    guard = ServedFiles(None, service.served_files, service.allowed_paths, uploads=tmp_path / "gradio-uploads")
    assert [guard.refuses(str(path)) for path in paths] == [False, True, False, True]
    assert not guard.refuses(str(tmp_path / "gradio-uploads" / "query.png"))
    assert not guard.refuses(str(tmp_path / "elsewhere.png"))  # outside the folders: Gradio's own check decides


def test_an_index_made_from_a_dataset_is_refused_because_its_images_are_not_files(tmp_path, search_model):
    import datasets

    rows = datasets.Dataset.from_dict({"image": [random_image(32, 32, seed) for seed in range(2)]})
    rows = rows.cast_column("image", datasets.Image())
    index_collection(tmp_path / "index", search_model, dataset=rows, show_progress=False)
    with pytest.raises(ValueError, match=r"indexed from a dataset.*index a folder"):
        SearchService(SearchIndex(tmp_path / "index"), search_model, bank())


def fake_hub_cache(cache: Path, repo_id: str, files: list[str]) -> None:
    """The local Hugging Face cache layout of one downloaded snapshot (no network involved)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    for name in files:
        (snapshot / name).write_text("{}")


def test_auto_baseline_takes_clip_only_when_its_weights_are_on_this_machine(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from training.evaluation.methods.vision_encoders import CLIP_DEFAULT, DINO_DEFAULT

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert choose_baseline("auto") == "colour-histogram"
    fake_hub_cache(tmp_path / "hub", CLIP_DEFAULT, ["config.json"])  # a config alone is not the weights
    assert choose_baseline("auto") == "colour-histogram"
    fake_hub_cache(tmp_path / "hub", DINO_DEFAULT, ["config.json", "model.safetensors"])
    assert choose_baseline("auto") == "dino"
    assert choose_baseline("pixel") == "pixel"
    assert choose_baseline("auto", model=str(save_tiny_clip(tmp_path / "clip"))) == "clip-i"
    assert weights_available_locally(str(tmp_path / "clip")) and not weights_available_locally(str(tmp_path / "hub"))
    with pytest.raises(ValueError, match="unknown baseline 'lpips'; choose from auto, clip-i"):
        choose_baseline("lpips")


def test_the_command_line_offers_every_baseline_and_none():
    assert (*BASELINE_NAMES, "none") == APP_BASELINES


class CountingHistogram(ColourHistogramMethod):
    def __init__(self) -> None:
        super().__init__()
        self.embedded = 0

    def embed(self, batch, image_hashes):
        self.embedded += len(image_hashes)
        return super().embed(batch, image_hashes)


def test_baseline_vectors_are_cached_and_a_query_file_is_not_its_own_neighbour(tmp_path):
    paths = write_photos(tmp_path / "photos", 5)
    entries = from_folder(tmp_path / "photos").entries
    first = CountingHistogram()
    neighbours = BaselineNeighbours(first, entries, tmp_path / "cache")
    assert first.embedded == 5

    again = CountingHistogram()
    reopened = BaselineNeighbours(again, entries, tmp_path / "cache")
    assert again.embedded == 0  # read back from the cache, not embedded again
    query = tmp_path / "query.png"
    query.write_bytes(paths[1].read_bytes())
    hits = reopened.search(query, k=10)
    assert len(hits) == 4 and paths[1].name not in [Path(entries[hit.id].path).name for hit in hits]
    assert [hit.id for hit in hits] == [hit.id for hit in neighbours.search(query, k=10)]

    method = ColourHistogramMethod()
    vectors = method.embed(method.preprocess([random_image(40, 48, seed) for seed in range(5)]), [""] * 5)
    by_name = {path.name: float(vectors[seed] @ vectors[1]) for seed, path in enumerate(paths)}
    assert [round(hit.score, 5) for hit in hits] == sorted(
        (round(score, 5) for name, score in by_name.items() if name != paths[1].name), reverse=True
    )
