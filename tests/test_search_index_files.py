"""The search index's files: paths stored one way whatever form the source was given in, one recorded generation of
manifest, FAISS index and shards (a torn or damaged file is named with its repair, never answered from), `--verify`
for files replaced under the same size and time, and a list file that stays inside its folder."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import random_image
from search_helpers import CountingModel, write_images

from training.cli import run_program
from training.image_ids import file_sha256
from training.search.__main__ import main as search_cli
from training.search.index import (
    INDEX_FILE,
    MANIFEST_FILE,
    VECTORS_FILE,
    DamagedIndexError,
    SearchIndex,
    index_collection,
    read_manifest,
)
from training.search.query import search


@pytest.fixture
def search_model(model, processor):
    return CountingModel(model, processor, name="tiny")


def hit_rows(index_folder, model, query):
    return [(hit.path, round(hit.score, 5)) for hit in search(SearchIndex(index_folder), model, image=query, k=3)]


def recorded_shards(index_folder: Path) -> list[Path]:
    info = json.loads((index_folder / INDEX_FILE).read_text())
    return [index_folder / "embeddings" / name for name in info["shards"]]


def test_a_relative_images_folder_reruns_relative_and_absolute_without_embedding_again(
    tmp_path, search_model, monkeypatch
):
    write_images(tmp_path / "photos", range(4))
    monkeypatch.chdir(tmp_path)
    first = index_collection("photos.index", search_model, folder="photos", show_progress=False)
    manifest = read_manifest("photos.index")
    hits = hit_rows("photos.index", search_model, "photos/img01.png")

    again = index_collection("photos.index", search_model, folder="photos", show_progress=False)
    absolute = index_collection(
        tmp_path / "photos.index", search_model, folder=tmp_path / "photos", show_progress=False
    )
    assert (first.embedded, again.embedded, absolute.embedded, search_model.embedded) == (4, 0, 0, 4)
    assert again.reused == absolute.reused == 4
    assert read_manifest("photos.index") == manifest
    assert [entry.path for entry in manifest] == [
        str((tmp_path / "photos").resolve() / f"img{i:02d}.png") for i in range(4)
    ]
    assert hit_rows("photos.index", search_model, "photos/img01.png") == hits
    assert len(hits) == 3 and all(path.endswith(("img00.png", "img02.png", "img03.png")) for path, _ in hits)


@pytest.mark.parametrize("damage", ["missing", "corrupted"])
def test_a_missing_or_corrupted_shard_is_named_by_why_and_a_rerun_embeds_its_images_again(
    tmp_path, search_model, damage
):
    write_images(tmp_path / "photos", range(5))
    index_collection(tmp_path / "idx", search_model, folder=tmp_path / "photos", shard_size=2, show_progress=False)
    index = SearchIndex(tmp_path / "idx")
    before = index.stored_vectors(range(5))
    shards = recorded_shards(tmp_path / "idx")
    assert len(shards) == 3  # 2 + 2 + 1 images
    if damage == "missing":
        shards[1].unlink()
    else:
        data = bytearray(shards[1].read_bytes())
        data[-3] ^= 0xFF
        shards[1].write_bytes(bytes(data))

    index = SearchIndex(tmp_path / "idx")  # search needs only the FAISS index and still works
    assert len(search(index, search_model, image=str(tmp_path / "photos" / "img00.png"), k=4)) == 4
    torch.testing.assert_close(index.stored_vectors([0, 1, 4]), before[[0, 1, 4]])
    reason = "missing" if damage == "missing" else "do not match the sha256 in its name"
    with pytest.raises(
        DamagedIndexError, match=rf"{shards[1].name}: .*{reason}.*img0[23]\.png.*rerun `index`"
    ) as caught:
        index.stored_vectors([2])
    assert caught.value.path == shards[1] and "\n" not in str(caught.value)

    report = index_collection(tmp_path / "idx", search_model, folder=tmp_path / "photos", show_progress=False)
    assert (report.embedded, report.reused, search_model.embedded) == (2, 3, 7)
    repaired = SearchIndex(tmp_path / "idx")
    in_old_order = [repaired.find(entry.path) for entry in index.entries]  # the images embedded again come last
    assert in_old_order == [0, 1, 3, 4, 2]
    torch.testing.assert_close(repaired.stored_vectors(in_old_order), before, atol=1e-5, rtol=0)


def test_a_truncated_vectors_file_is_named_with_its_repair_and_a_rerun_rebuilds_it(tmp_path, search_model):
    write_images(tmp_path / "photos", range(4))
    index_collection(tmp_path / "idx", search_model, folder=tmp_path / "photos", show_progress=False)
    vectors = tmp_path / "idx" / VECTORS_FILE
    size = vectors.stat().st_size
    vectors.write_bytes(vectors.read_bytes()[: size // 2])
    with pytest.raises(DamagedIndexError, match=rf"{VECTORS_FILE}: {size // 2} bytes where index.json records {size} "
                       r"\(truncated, or replaced\); rerun `index`") as caught:  # fmt: skip
        SearchIndex(tmp_path / "idx")
    assert caught.value.path == vectors

    report = index_collection(tmp_path / "idx", search_model, folder=tmp_path / "photos", show_progress=False)
    assert report.embedded == 0 and SearchIndex(tmp_path / "idx").vectors.count == 4


def test_files_of_another_generation_are_refused_by_name_not_answered_from(tmp_path, search_model):
    write_images(tmp_path / "photos", range(4))
    write_images(tmp_path / "others", range(10, 14))
    index_collection(tmp_path / "idx", search_model, folder=tmp_path / "photos", show_progress=False)
    index_collection(tmp_path / "other", search_model, folder=tmp_path / "others", show_progress=False)
    query = str(tmp_path / "photos" / "img00.png")
    hits = hit_rows(tmp_path / "idx", search_model, query)

    # the other index's FAISS file: same count, same size; alone it would return wrong paths at full scores
    original = (tmp_path / "idx" / VECTORS_FILE).read_bytes()
    assert len(original) == (tmp_path / "other" / VECTORS_FILE).stat().st_size
    for name in (VECTORS_FILE, VECTORS_FILE + ".json"):
        shutil.copy(tmp_path / "other" / name, tmp_path / "idx" / name)
    with pytest.raises(DamagedIndexError, match=rf"{VECTORS_FILE}: its sha256 .* is not the recorded one"):
        SearchIndex(tmp_path / "idx")
    (tmp_path / "idx" / VECTORS_FILE).write_bytes(original)
    assert hit_rows(tmp_path / "idx", search_model, query) == hits

    # a record that points a shard outside the embeddings folder
    info_path = tmp_path / "idx" / INDEX_FILE
    recorded = info_path.read_text()
    info = json.loads(recorded)
    info["shards"][0] = "../../other/embeddings/" + info["shards"][0]
    info_path.write_text(json.dumps(info))
    with pytest.raises(DamagedIndexError, match=r"index\.json: shards\[0\]: '\.\./\.\./other/.*' is not a shard file"):
        SearchIndex(tmp_path / "idx")
    info_path.write_text(recorded)

    # a manifest of the same length from elsewhere
    manifest = tmp_path / "idx" / MANIFEST_FILE
    manifest.write_text(manifest.read_text().replace("img01.png", "img99.png"))
    with pytest.raises(DamagedIndexError, match=rf"{MANIFEST_FILE}: not the file index.json records"):
        SearchIndex(tmp_path / "idx")
    report = index_collection(tmp_path / "idx", search_model, folder=tmp_path / "photos", show_progress=False)
    assert report.embedded == 0 and hit_rows(tmp_path / "idx", search_model, query) == hits


def test_an_index_without_the_generation_record_is_refused_until_a_rerun_upgrades_it(tmp_path, search_model):
    write_images(tmp_path / "photos", range(3))
    index_collection(tmp_path / "idx", search_model, folder=tmp_path / "photos", show_progress=False)
    info_path = tmp_path / "idx" / INDEX_FILE
    info = json.loads(info_path.read_text())
    info["format"] = "relsim-search-index-1"
    del info["files"], info["shards"]
    info_path.write_text(json.dumps(info))
    with pytest.raises(ValueError, match=r"format 'relsim-search-index-1'.*rerun `index` .* to upgrade it"):
        SearchIndex(tmp_path / "idx")
    report = index_collection(tmp_path / "idx", search_model, folder=tmp_path / "photos", show_progress=False)
    assert (report.embedded, report.reused, len(SearchIndex(tmp_path / "idx"))) == (0, 3, 3)

    info_path.write_text('{"format": "relsim-search-index-2", "mod')  # a record cut short
    with pytest.raises(DamagedIndexError, match=r"index\.json: malformed JSON .*; rerun `index`"):
        SearchIndex(tmp_path / "idx")
    report = index_collection(tmp_path / "idx", search_model, folder=tmp_path / "photos", show_progress=False)
    assert (report.embedded, report.reused, len(SearchIndex(tmp_path / "idx"))) == (0, 3, 3)


def test_verify_embeds_again_a_file_replaced_under_the_same_size_and_modification_time(tmp_path, search_model):
    # BMP files of one shape have one size, so a swap keeps the size; os.utime puts the old time back
    write_images(tmp_path / "photos", range(3), suffix=".bmp")
    swapped = tmp_path / "photos" / "img01.bmp"
    index_collection(tmp_path / "idx", search_model, folder=tmp_path / "photos", show_progress=False)
    status = swapped.stat()
    old_sha256 = file_sha256(swapped)
    random_image(40, 56, 77).save(swapped)
    os.utime(swapped, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert (swapped.stat().st_size, swapped.stat().st_mtime_ns) == (status.st_size, status.st_mtime_ns)
    new_vector = search_model.embed_image(str(swapped))
    search_model.embedded = 0

    plain = index_collection(tmp_path / "idx", search_model, folder=tmp_path / "photos", show_progress=False)
    index = SearchIndex(tmp_path / "idx")
    row = index.find(swapped)
    assert (plain.embedded, search_model.embedded, index.entries[row].sha256) == (0, 0, old_sha256)
    assert float(index.stored_vectors([row])[0] @ new_vector) < 0.999  # the old picture's vector

    verified = index_collection(
        tmp_path / "idx", search_model, folder=tmp_path / "photos", verify=True, show_progress=False
    )
    index = SearchIndex(tmp_path / "idx")
    row = index.find(swapped)  # its new vector sits in a newer shard, so its FAISS id moved
    assert (verified.embedded, verified.reused, search_model.embedded) == (1, 2, 1)
    assert index.entries[row].sha256 == file_sha256(swapped) != old_sha256
    torch.testing.assert_close(index.stored_vectors([row])[0], new_vector, atol=1e-5, rtol=0)


def test_a_list_file_refuses_absolute_and_relative_paths_outside_its_folder_unless_allowed(tmp_path, search_model):
    write_images(tmp_path / "outside", [50, 51])
    write_images(tmp_path / "collection", [0])
    listing = tmp_path / "collection" / "list.txt"
    outside = tmp_path / "outside" / "img50.png"
    listing.write_text(
        f"# photos\nimg00.png\n{outside}\n../outside/img51.png\n{tmp_path / 'collection' / 'img00.png'}\n"
    )
    report = index_collection(tmp_path / "idx", search_model, paths=listing, show_progress=False)
    refused = dict(report.unreadable)
    assert report.indexed == 2 and len(refused) == 2  # img00.png listed twice, by its relative and absolute path
    assert refused[str(outside)].startswith(f"{listing}:3: leads outside {listing.parent.resolve()}")
    assert refused["../outside/img51.png"].startswith(f"{listing}:4: leads outside")
    assert "--allow-outside-list-folder" in refused[str(outside)]

    allowed = index_collection(
        tmp_path / "idx2", search_model, paths=listing, allow_outside_list_folder=True, show_progress=False
    )
    assert (allowed.indexed, allowed.unreadable) == (4, [])
    assert {entry.path for entry in read_manifest(tmp_path / "idx2")} == {
        str((tmp_path / name).resolve()) for name in ("collection/img00.png", "outside/img50.png", "outside/img51.png")
    }


def test_the_command_line_reruns_a_relative_folder_and_names_damaged_files_in_one_line(
    tmp_path, model, processor, monkeypatch, capsys
):
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    write_images(tmp_path / "photos", range(3))
    write_images(tmp_path / "outside", [50])
    (tmp_path / "photos" / "list.txt").write_text(f"img00.png\n{tmp_path / 'outside' / 'img50.png'}\n")
    monkeypatch.chdir(tmp_path)

    def run(*argv):
        capsys.readouterr()
        status = run_program(search_cli, [*argv, "--device", "cpu"], prog="relsim-search", has_commands=True)
        return status, capsys.readouterr().err

    index = ["index", "--model", "model", "--output", "photos.index"]
    assert run(*index, "--images", "photos")[0] == 0
    assert run(*index, "--images", "photos")[0] == 0  # the rerun that failed with "is not in the subpath of 'photos'"
    assert run(*index, "--images", str(tmp_path / "photos"), "--verify")[0] == 0
    assert len(read_manifest("photos.index")) == 3

    query = ["--index", "photos.index", "--image", "photos/img00.png"]
    shard = recorded_shards(Path("photos.index"))[0]
    shard.unlink()
    status, err = run("why", *query, "--result", str((tmp_path / "photos" / "img01.png").resolve()))
    assert status == 2 and "Traceback" not in err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(f"relsim-search why: error: {Path('photos.index') / 'embeddings' / shard.name}: missing")
    )
    assert err.strip().endswith(
        "rerun `index` with the same source and --output to repair it (stored embeddings are reused)"
    )

    vectors = Path("photos.index") / VECTORS_FILE
    vectors.write_bytes(vectors.read_bytes()[:100])
    status, err = run("search", *query)
    assert status == 2 and "Traceback" not in err
    assert (
        err.strip().splitlines()[-1].startswith(f"relsim-search search: error: {vectors}: 100 bytes where index.json")
    )

    assert run(*index, "--list", "photos/list.txt", "--allow-outside-list-folder")[0] == 0
    assert sorted(Path(entry.path).name for entry in read_manifest("photos.index")) == ["img00.png", "img50.png"]
