"""build -> download (img2dataset on local file:// URLs, opted in; http(s) only otherwise) -> export -> load_dataset,
cards and push."""

import json

import datasets
import numpy as np
import PIL.Image
import pytest
from huggingface_hub import DatasetCard

from tests.url_server_helpers import serve_folder
from training.hub_data import publish
from training.hub_data.__main__ import main
from training.hub_data.export import export_hub_folder
from training.hub_data.publish import push_dataset_folder
from training.hub_data.store import load_built
from training.image_ids import url_image_hash


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Official-format files whose URLs point at local images: one missing, one not an image."""
    root = tmp_path_factory.mktemp("sources")
    (root / "images").mkdir()
    urls = []
    for index in range(6):
        path = root / "images" / f"{index}.png"
        PIL.Image.fromarray(np.full((60, 90, 3), 30 * index, np.uint8)).save(path)
        urls.append(f"file://{path}")
    urls.append(f"file://{root / 'images' / 'gone.png'}")
    (root / "images" / "broken.png").write_bytes(b"not an image")
    urls.append(f"file://{root / 'images' / 'broken.png'}")
    groups = [
        {"anonymous_caption": '"a row of {Object}s growing"', "image_urls": urls[0:3]},
        {"anonymous_caption": '"{Object}s mirrored across an axis"', "image_urls": [urls[3], urls[6]]},
    ]
    (root / "seed_group.json").write_text(json.dumps(groups, indent=1))

    def caption_row(index, caption):
        return json.dumps(
            {"image_hash": url_image_hash(urls[index]), "caption": f'"{caption}"', "url_link": urls[index]}
        )

    (root / "train.jsonl").write_text(
        caption_row(0, "a row of {Object}s growing") + "\n" + caption_row(4, "{A} over {B}")
    )
    (root / "test.jsonl").write_text(caption_row(5, "nested {Object}s") + "\n" + caption_row(7, "a {Shape} outline"))
    (root / "pool.jsonl").write_text(json.dumps({"image_hash": url_image_hash(urls[1]), "url_link": urls[1]}) + "\n")
    (root / "labels.csv").write_text(f"url,label,annotator\n{urls[2]},relational,a\n{urls[6]},not_relational,b\n")
    return root


@pytest.fixture(scope="module")
def pipeline(sources, tmp_path_factory):
    work = tmp_path_factory.mktemp("pipeline")
    built = work / "built"
    main(["build", "seed-groups", "--input", str(sources / "seed_group.json"), "--output", str(built)])
    captions = ["--train", str(sources / "train.jsonl"), "--test", str(sources / "test.jsonl")]
    main(["build", "anonymous-captions", *captions, "--output", str(built)])
    main(["build", "random-pool", "--input", str(sources / "pool.jsonl"), "--output", str(built)])
    main(["build", "filter-labels", "--input", str(sources / "labels.csv"), "--output", str(built)])
    main(["download", "--built", str(built), "--output", str(work / "downloads"), "--image-size", "32",
          "--threads", "2", "--allow-url-schemes", "file"])  # fmt: skip
    main(["export", "--built", str(built), "--output", str(work / "hub"), "--repo-id", "relsim/test-data"])
    return work


def test_download_statistics_and_missing_images_are_reported(pipeline):
    report = json.loads((pipeline / "downloads" / "download_report.json").read_text())
    assert (report["count"], report["successes"], report["failed_to_download"], report["failed_to_resize"]) == (
        8,
        6,
        1,
        1,
    )
    missing = {(row["config"], row["url"].rsplit("/", 1)[-1]) for row in report["missing"]}
    assert missing == {
        ("seed_groups", "gone.png"),
        ("seed_group_images", "gone.png"),
        ("anonymous_captions", "broken.png"),
        ("filter_labels", "gone.png"),
    }
    assert any("Image decoding error" in row["reason"] for row in report["missing"])


def test_download_fetches_http_only_and_reports_each_refused_url_with_its_reason(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    PIL.Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(served / "a.png")
    outside = tmp_path / "outside.png"
    PIL.Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(outside)
    with serve_folder(served) as server:
        urls = [server.url("a.png"), "file:///etc/passwd", outside.as_uri(), server.redirect(outside.as_uri()),
                server.url("huge.jpg")]  # fmt: skip
        (tmp_path / "pool.jsonl").write_text(
            "".join(json.dumps({"image_hash": url_image_hash(url), "url_link": url}) + "\n" for url in urls)
        )
        main(["build", "random-pool", "--input", str(tmp_path / "pool.jsonl"), "--output", str(tmp_path / "built")])
        main(["download", "--built", str(tmp_path / "built"), "--output", str(tmp_path / "downloads"), "--image-size",
              "32", "--threads", "2", "--max-image-bytes", "1000000"])  # fmt: skip

    report = json.loads((tmp_path / "downloads" / "download_report.json").read_text())
    assert (report["count"], report["successes"], report["failed_to_download"]) == (5, 1, 4)
    refusal = "URL scheme refused: file URLs are not fetched (only http, https; --allow-url-schemes file opts in)"
    assert report["refused"] == [
        {"url": url, "image_hash": url_image_hash(url), "reason": refusal} for url in (urls[1], urls[2])
    ]
    assert {row["url"]: row["reason"] for row in report["missing"]} == {
        urls[1]: refusal,
        urls[2]: refusal,
        urls[3]: f"redirect refused: {urls[3]} redirects to {outside.as_uri()} (only http, https followed)",
        urls[4]: f"image over the byte cap: {urls[4]} declares Content-Length 2000000000, more than 1000000 bytes",
    }
    pool = load_built(tmp_path / "built")["random_pool"]["train"]
    assert [row["image"] is not None for row in pool] == [True, False, False, False, False]


def test_images_are_attached_by_hash(pipeline):
    built = load_built(pipeline / "built")
    groups = built["seed_groups"]["train"]
    assert [image is None for image in groups[1]["images"]] == [False, True]
    first = groups[0]["images"][0]
    assert first.size == (48, 32)  # shorter side resized to 32 by img2dataset
    assert np.asarray(first.convert("RGB"))[0, 0].tolist() == [0, 0, 0]
    captions = built["anonymous_captions"]
    assert [image is None for image in captions["test"]["image"]] == [False, True]
    assert np.asarray(captions["test"][0]["image"].convert("RGB"))[0, 0, 0] == pytest.approx(150, abs=3)


def test_export_reloads_with_load_dataset(pipeline, tmp_path):
    built = load_built(pipeline / "built")
    for config, splits in built.items():
        # a fresh cache: pytest reuses temporary paths, and datasets would serve an earlier session's copy
        reloaded = datasets.load_dataset(str(pipeline / "hub"), config, cache_dir=str(tmp_path / "cache"))
        assert set(reloaded) == set(splits), config
        for split, dataset in splits.items():
            assert reloaded[split].features == dataset.features, config
            assert reloaded[split].num_rows == dataset.num_rows
            expected, actual = dataset.to_dict(), reloaded[split].to_dict()
            for column in expected:
                if column not in ("image", "images"):
                    assert actual[column] == expected[column], (config, column)


def test_the_card_declares_exactly_the_exported_configs(pipeline):
    card = DatasetCard.load(pipeline / "hub" / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "cc-by-nc-sa-4.0"
    assert {config["config_name"] for config in data["configs"]} == {
        path.name for path in (pipeline / "hub" / "data").iterdir()
    }
    captions = next(config for config in data["configs"] if config["config_name"] == "anonymous_captions")
    assert captions["data_files"] == [
        {"split": "train", "path": "data/anonymous_captions/train-*.parquet"},
        {"split": "test", "path": "data/anonymous_captions/test-*.parquet"},
    ]
    info = next(entry for entry in data["dataset_info"] if entry["config_name"] == "anonymous_captions")
    assert {split["name"]: split["num_examples"] for split in info["splits"]} == {"train": 2, "test": 2}
    assert 'load_dataset("relsim/test-data", "seed_groups")' in card.text


def test_dry_run_lists_exactly_the_exported_files(pipeline):
    listed = push_dataset_folder(pipeline / "hub", "relsim/test-data")
    on_disk = sorted(
        str(path.relative_to(pipeline / "hub")) for path in (pipeline / "hub").rglob("*") if path.is_file()
    )
    assert listed == on_disk
    assert "README.md" in listed and "data/random_pool/train-00000-of-00001.parquet" in listed


def test_push_creates_the_repo_and_uploads(pipeline, monkeypatch):
    calls = []

    class RecordingApi:
        def __init__(self, token):
            calls.append(("token", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))

    monkeypatch.setattr(publish, "HfApi", RecordingApi)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(ValueError, match="HF_TOKEN"):
        push_dataset_folder(pipeline / "hub", "relsim/test-data", dry_run=False)
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    main(["push", "--folder", str(pipeline / "hub"), "--repo-id", "relsim/test-data", "--no-dry-run"])
    assert calls[0] == ("token", "hf_secret")
    assert calls[1] == ("create_repo", "relsim/test-data", {"repo_type": "dataset", "private": False, "exist_ok": True})
    assert calls[2][1]["repo_type"] == "dataset" and calls[2][1]["folder_path"] == str(pipeline / "hub")


def test_export_shards_large_splits(pipeline, tmp_path):
    built = load_built(pipeline / "built")
    files = export_hub_folder({"seed_group_images": built["seed_group_images"]}, tmp_path, "x/y", max_rows_per_shard=2)
    assert sorted(path.name for path in files if path.suffix == ".parquet") == [
        "train-00000-of-00003.parquet",
        "train-00001-of-00003.parquet",
        "train-00002-of-00003.parquet",
    ]
    reloaded = datasets.load_dataset(str(tmp_path), "seed_group_images", cache_dir=str(tmp_path / "cache"))
    assert reloaded["train"].num_rows == 5


def test_evaluation_pool_manifest_from_the_pipeline_folders(pipeline, sources, tmp_path):
    from training.evaluation.__main__ import main as eval_main
    from training.evaluation.pool import read_pool

    images = sources / "images"
    output = tmp_path / "pool.jsonl"
    eval_main(["pool", "--built", str(pipeline / "built"), "--images", str(pipeline / "downloads"), "--output",
               str(output)])  # fmt: skip
    items = {item.image_hash: item for item in read_pool(output)}
    url = {index: url_image_hash(f"file://{images / f'{index}.png'}") for index in range(6)}
    # group 0 (images 0-2; image 1 is also a random-pool row but stays a group member), group 1 (image 3; its
    # partner is missing), the test caption of image 5; the broken and missing files are not in the pool
    assert set(items) == {url[0], url[1], url[2], url[3], url[5]}
    assert [items[url[index]].group_id for index in (0, 1, 2, 3)] == [0, 0, 0, 1]
    assert items[url[5]].caption == "nested {Object}s" and items[url[5]].group_id is None
    assert all(item.split == "test" and min(PIL.Image.open(item.image).size) == 32 for item in items.values())
