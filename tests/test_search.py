"""Relational search: an incremental, resumable index of a folder, search by image and by relation text, "why"
labels, hostile names, the CLI's JSON output, and the trained fixture beating the untrained model."""

import functools
import json
import os
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import datasets
import pytest
import torch
from conftest import random_image
from search_helpers import CountingModel, write_images

from training.search.__main__ import main as search_cli
from training.search.index import INDEX_FILE, SearchIndex, index_collection, read_manifest
from training.search.model import SearchModel
from training.search.query import hits_as_json, query_vector, search
from training.search.synthetic_metrics import IMAGE_MAP, RELATION_TEXT_MAP, WHY_ACCURACY, synthetic_search_metrics
from training.search.why import CaptionBank, read_caption_bank, why
from training.tiny_backbone import build_tiny_model


@pytest.fixture
def search_model(model, processor):
    return CountingModel(model, processor, name="tiny")


def test_index_embeds_only_new_or_changed_files_drops_deleted_ones_and_lists_a_corrupt_file(tmp_path, search_model):
    images = tmp_path / "photos"
    write_images(images, range(5))
    write_images(images / "nested", [5])
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    report = index_collection(tmp_path / "idx", search_model, folder=images, show_progress=False)
    assert (report.indexed, report.embedded, search_model.embedded) == (6, 6, 6)
    assert [(os.path.basename(path), "broken" in path) for path, _ in report.unreadable] == [("broken.png", True)]
    assert "UnidentifiedImageError" in report.unreadable[0][1] or "cannot identify" in report.unreadable[0][1]
    manifest = read_manifest(tmp_path / "idx")
    assert {os.path.basename(entry.path) for entry in manifest} == {f"img{i:02d}.png" for i in range(6)}
    assert all(len(entry.sha256) == 64 and entry.size > 0 for entry in manifest)

    # grow by two, change one: three embeddings; the rest come from the store
    write_images(images, [6, 7])
    random_image(40, 56, 99).save(images / "img00.png")
    report = index_collection(tmp_path / "idx", search_model, folder=images, show_progress=False)
    assert (report.indexed, report.embedded, report.reused, search_model.embedded) == (8, 3, 5, 9)

    # shrink: nothing to embed, the deleted files leave the manifest and the FAISS index
    (images / "img01.png").unlink()
    (images / "nested" / "img05.png").unlink()
    report = index_collection(tmp_path / "idx", search_model, folder=images, show_progress=False)
    assert (report.indexed, report.embedded, report.dropped, search_model.embedded) == (6, 0, 2, 9)
    index = SearchIndex(tmp_path / "idx")
    assert len(index) == index.vectors.count == 6
    assert not any(path.endswith(("img01.png", "img05.png")) for path in index.by_path)


def test_an_interrupted_index_run_resumes_with_the_images_it_had_not_embedded(tmp_path, model, processor):
    write_images(tmp_path / "photos", range(7))
    interrupted = CountingModel(model, processor, name="tiny", fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        index_collection(tmp_path / "idx", interrupted, folder=tmp_path / "photos", shard_size=2, show_progress=False)
    assert interrupted.embedded == 4  # two shards of two were saved before the interruption
    resumed = CountingModel(model, processor, name="tiny")
    report = index_collection(tmp_path / "idx", resumed, folder=tmp_path / "photos", shard_size=2, show_progress=False)
    assert (resumed.embedded, report.embedded, report.reused, report.indexed) == (3, 3, 4, 7)


@pytest.mark.parametrize("factory", ["Flat", "IVF2,Flat"])
def test_search_by_image_equals_exact_search_and_leaves_out_the_query(tmp_path, search_model, factory):
    # IVF with every list probed is exact too; it is trained on vectors gathered across the small shards
    write_images(tmp_path / "photos", range(12))
    index_collection(
        tmp_path / "idx", search_model, folder=tmp_path / "photos", factory=factory, shard_size=3, show_progress=False
    )
    index = SearchIndex(tmp_path / "idx")
    query = str(tmp_path / "photos" / "img03.png")
    hits = search(index, search_model, image=query, k=5)
    stored = index.stored_vectors(range(len(index)))
    scores = stored @ search_model.embed_image(query)
    scores[index.find(query)] = float("-inf")
    expected = scores.topk(5)
    assert [hit.id for hit in hits] == expected.indices.tolist()
    torch.testing.assert_close(torch.tensor([hit.score for hit in hits]), expected.values, atol=1e-5, rtol=0)
    assert [hit.rank for hit in hits] == [1, 2, 3, 4, 5] and query not in [hit.path for hit in hits]


def test_image_and_text_query_is_the_renormalised_weighted_sum(search_model, monkeypatch):
    image_vector = torch.nn.functional.normalize(torch.tensor([1.0, 0.0, 0.0]), dim=0)
    text_vector = torch.nn.functional.normalize(torch.tensor([0.0, 1.0, 1.0]), dim=0)
    monkeypatch.setattr(search_model, "embed_image", lambda image: image_vector)
    monkeypatch.setattr(search_model, "encode_texts", lambda texts: text_vector[None])
    combined = query_vector(search_model, image="q.png", text="a relation", text_weight=0.25)
    expected = 0.75 * image_vector + 0.25 * text_vector
    torch.testing.assert_close(combined, expected / expected.norm())
    torch.testing.assert_close(query_vector(search_model, text="a relation"), text_vector)
    with pytest.raises(ValueError, match="an image, a relation text, or both"):
        query_vector(search_model)


def test_an_index_refuses_another_model(tmp_path, search_model, processor):
    write_images(tmp_path / "photos", range(3))
    index_collection(tmp_path / "idx", search_model, folder=tmp_path / "photos", show_progress=False)
    other = SearchModel(build_tiny_model(processor, seed=1), processor, name="tiny")
    with pytest.raises(ValueError, match=r"was indexed with model tiny .* differ in weights"):
        index_collection(tmp_path / "idx", other, folder=tmp_path / "photos", show_progress=False)
    with pytest.raises(ValueError, match="differ in weights"):
        search(SearchIndex(tmp_path / "idx"), other, image=str(tmp_path / "photos" / "img00.png"))
    # the same weights under another name (a copied folder) are the same model
    renamed = SearchModel(search_model.model, search_model.processor, name="copied")
    assert len(search(SearchIndex(tmp_path / "idx"), renamed, image=str(tmp_path / "photos" / "img00.png"))) == 2


def test_hostile_names_never_reach_outside_the_collection(tmp_path, search_model):
    outside = tmp_path / "outside"
    write_images(outside, [50])
    collection = tmp_path / "collection"
    write_images(collection, [0, 1])
    (collection / "escape.png").symlink_to(outside / "img50.png")
    report = index_collection(tmp_path / "idx", search_model, folder=collection, show_progress=False)
    index = SearchIndex(tmp_path / "idx")
    assert report.indexed == 2 and all(path.startswith(str(collection.resolve())) for path in index.by_path)
    with pytest.raises(ValueError, match="not in the index"):
        index.find(collection / ".." / "outside" / "img50.png")
    # a list file's relative paths stay inside its folder
    (collection / "list.txt").write_text("img00.png\n../outside/img50.png\n# comment\n")
    report = index_collection(tmp_path / "idx2", search_model, paths=collection / "list.txt", show_progress=False)
    assert report.indexed == 1 and search_model.embedded == 3
    assert "leads outside" in dict(report.unreadable)["../outside/img50.png"]


def test_urls_of_a_list_are_fetched_by_img2dataset_and_a_grown_list_fetches_only_its_new_lines(tmp_path, search_model):
    served = tmp_path / "served"
    write_images(served, [60, 61, 62])
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(served))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        write_images(tmp_path / "local", [0])
        listing = tmp_path / "local" / "list.txt"
        listing.write_text(f"img00.png\n{base}/img60.png\n{base}/missing.png\n")
        report = index_collection(tmp_path / "idx", search_model, paths=listing, show_progress=False)
        assert report.indexed == 2 and search_model.embedded == 2
        assert "download failed" in dict(report.unreadable)[f"{base}/missing.png"]
        assert len(list((tmp_path / "idx" / "downloads").iterdir())) == 1
        listing.write_text(listing.read_text() + f"{base}/img61.png\n")
        report = index_collection(tmp_path / "idx", search_model, paths=listing, show_progress=False)
        # only the new URL is fetched (a second download batch) and embedded
        assert report.indexed == 3 and search_model.embedded == 3
        assert len(list((tmp_path / "idx" / "downloads").iterdir())) == 2
    finally:
        server.shutdown()
        server.server_close()


def test_a_datasets_dataset_is_indexed_from_its_image_bytes(tmp_path, search_model):
    import datasets

    images = [random_image(32, 32, seed) for seed in range(4)]
    dataset = datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))
    report = index_collection(tmp_path / "idx", search_model, dataset=dataset, show_progress=False)
    assert report.indexed == 4 and read_manifest(tmp_path / "idx")[2].path == "dataset[2]"
    hits = search(SearchIndex(tmp_path / "idx"), search_model, image=images[2], k=1, exclude_query=False)
    assert hits[0].path == "dataset[2]" and hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_why_ranks_captions_by_the_smaller_of_their_two_cosines(search_model):
    bank = CaptionBank(["fits both", "fits only the query", "fits neither"], embeddings=torch.eye(3))
    query = torch.nn.functional.normalize(torch.tensor([0.6, 0.8, 0.0]), dim=0)
    result = torch.nn.functional.normalize(torch.tensor([0.6, -0.8, 0.0]), dim=0)
    labels = why(bank, query, result, top=3)
    assert [label.caption for label in labels] == ["fits both", "fits neither", "fits only the query"]
    assert labels[0].score == pytest.approx(0.6) and labels[2].query_cosine == pytest.approx(0.8)


def test_caption_banks_read_seed_groups_caption_rows_and_plain_lists(tmp_path):
    (tmp_path / "seed_group.json").write_text(
        json.dumps([{"anonymous_caption": '"a {Subject} at several stages"', "image_urls": []}] * 2)
    )
    (tmp_path / "captions.jsonl").write_text('{"image_hash": "x", "caption": "\\"one\\""}\n{"caption": "two"}\n')
    (tmp_path / "mine.txt").write_text("first label\n\nsecond label\n")
    assert read_caption_bank(tmp_path / "seed_group.json") == ["a {Subject} at several stages"]
    assert read_caption_bank(tmp_path / "captions.jsonl") == ["one", "two"]
    assert read_caption_bank(tmp_path / "mine.txt") == ["first label", "second label"]
    assert len(read_caption_bank("synthetic")) == 8
    (tmp_path / "bad.jsonl").write_text('{"caption": "ok"}\n{"text": "no caption"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: caption"):
        read_caption_bank(tmp_path / "bad.jsonl")


def test_cli_indexes_then_prints_search_results_as_json_that_parses(tmp_path, model, processor, capsys):
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    write_images(tmp_path / "photos", range(6))
    search_cli(["index", "--model", str(tmp_path / "model"), "--images", str(tmp_path / "photos"),
                "--output", str(tmp_path / "idx"), "--device", "cpu"])  # fmt: skip
    assert json.loads((tmp_path / "idx" / INDEX_FILE).read_text())["count"] == 6
    capsys.readouterr()
    query = str(tmp_path / "photos" / "img02.png")
    search_cli(["search", "--index", str(tmp_path / "idx"), "--image", query, "--top-k", "3", "--format", "json",
                "--device", "cpu"])  # fmt: skip
    document = json.loads(capsys.readouterr().out)
    assert [row["rank"] for row in document["results"]] == [1, 2, 3]
    assert document["query"]["image"] == query and all(row["path"] != query for row in document["results"])
    scores = [row["score"] for row in document["results"]]
    assert scores == sorted(scores, reverse=True)
    assert json.loads(hits_as_json([]))["results"] == []
    (tmp_path / "labels.txt").write_text("first label\nsecond label\nthird label\n")
    result = document["results"][0]["path"]
    labels_file = str(tmp_path / "labels.txt")
    search_cli(["why", "--index", str(tmp_path / "idx"), "--image", query, "--result", result,
                "--captions", labels_file, "--top", "2", "--format", "json", "--device", "cpu"])  # fmt: skip
    labels = json.loads(capsys.readouterr().out)["labels"]
    assert len(labels) == 2 and all(row["score"] == min(row["query_cosine"], row["result_cosine"]) for row in labels)


def test_a_one_shot_search_prints_its_answer_alone_and_verbose_adds_the_loading_bars_and_info_lines(
    tmp_path, model, processor
):
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    write_images(tmp_path / "photos", range(4))
    search_cli(["index", "--model", str(tmp_path / "model"), "--images", str(tmp_path / "photos"),
                "--output", str(tmp_path / "idx"), "--device", "cpu"])  # fmt: skip
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # a relation text loads the text encoder too: two weight loads, an INFO line naming the packaged MiniLM
    relation = "a {Subject} shown at several stages of growth"
    command = [sys.executable, "-m", "training.search", "search", "--index", str(tmp_path / "idx"),
               "--text", relation, "--top-k", "2", "--device", "cpu"]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": root, "HF_HUB_OFFLINE": "1"}
    quiet = subprocess.run(command, cwd=root, env=environment, capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    lines = quiet.stdout.splitlines()
    assert lines[0].split() == ["rank", "score", "path"] and [line.split()[0] for line in lines[1:]] == ["1", "2"]
    verbose = subprocess.run([*command, "--verbose"], cwd=root, env=environment, capture_output=True, text=True,
                             timeout=300)  # fmt: skip
    assert verbose.returncode == 0, verbose.stderr
    assert verbose.stderr.count("Loading weights") >= 2 and " INFO: " in verbose.stderr
    assert verbose.stdout.splitlines()[0] == lines[0] and len(verbose.stdout.splitlines()) == 3


def test_relation_text_and_why_beat_the_untrained_model(trained_tiny_relsim):
    from search_helpers import IMAGE_SIZE

    from training.evaluation.synthetic_retrieval import held_out_pool

    pool = held_out_pool(10, seed=1, image_size=IMAGE_SIZE)
    trained = synthetic_search_metrics(SearchModel(*trained_tiny_relsim.load(), name="trained"), pool)
    untrained = synthetic_search_metrics(SearchModel(*trained_tiny_relsim.untrained(), name="untrained"), pool)
    # measured: relation-text mAP 0.417 against 0.166, why accuracy 0.438 against 0.125 (chance), image mAP 0.390
    # against 0.229; the run is deterministic, the margins leave room for another CPU's last bits
    assert trained[RELATION_TEXT_MAP] > untrained[RELATION_TEXT_MAP] + 0.15
    assert trained[WHY_ACCURACY] > untrained[WHY_ACCURACY] + 0.15
    assert trained[IMAGE_MAP] > untrained[IMAGE_MAP]


class OneHotRelations:
    """Stands in for a model whose text encoder gives every relation caption its own axis."""

    def encode_texts(self, texts):
        from training.synthetic.factors import VALID_RELATIONS

        captions = [relation.caption for relation in VALID_RELATIONS]
        return torch.eye(len(captions))[[captions.index(text) for text in texts]]


def test_relation_search_metrics_split_seen_from_unseen_relations_and_name_the_exact_combination():
    from training.search.synthetic_metrics import relation_search_metrics
    from training.synthetic.factors import VALID_NAMES
    from training.synthetic.relations import relation_split

    unseen = {relation.name for relation in relation_split("heldout")}
    relations = [name for name in VALID_NAMES for _ in range(2)]
    pool = datasets.Dataset.from_dict({"relation": relations, "unseen": [name in unseen for name in relations]})
    axis = torch.eye(len(VALID_NAMES))
    exact = axis[[VALID_NAMES.index(name) for name in relations]]
    metrics = relation_search_metrics(OneHotRelations(), pool, image_embeddings=exact)
    assert metrics["why chance"] == pytest.approx(1 / 407)
    for split in ("seen", "unseen"):
        for name in (RELATION_TEXT_MAP, IMAGE_MAP, WHY_ACCURACY):
            assert metrics[f"{split} {name}"] == pytest.approx(1.0)
    # every unseen image embedded on the axis of the first seen relation: the unseen figures collapse, the seen ones
    # lose only on that one relation, which now shares its axis with all the unseen images
    first_seen = next(name for name in VALID_NAMES if name not in unseen)
    wrong = [first_seen if name in unseen else name for name in relations]
    shifted = axis[[VALID_NAMES.index(name) for name in wrong]]
    metrics = relation_search_metrics(OneHotRelations(), pool, image_embeddings=shifted)
    assert metrics[f"unseen {RELATION_TEXT_MAP}"] < 0.05 and metrics[f"unseen {WHY_ACCURACY}"] == 0.0
    assert metrics[f"seen {RELATION_TEXT_MAP}"] > 0.99 and metrics[f"seen {IMAGE_MAP}"] > 0.99
