"""The one folder scan: sha256 beside the image hash in one read, and unchanged files trusted without a read."""

import hashlib
import os

from conftest import random_image

import training.image_folder as image_folder
from training.image_folder import scan_image_folder


def test_a_rescan_reads_only_files_whose_size_or_modification_time_changed(tmp_path, monkeypatch):
    for seed in range(3):
        random_image(20, 20, seed).save(tmp_path / f"{seed}.png")
    reads = []
    real = image_folder.file_image_hash_and_sha256
    monkeypatch.setattr(image_folder, "file_image_hash_and_sha256", lambda path: reads.append(path) or real(path))
    first = scan_image_folder(tmp_path, with_sha256=True)
    assert len(reads) == 3
    image = first.images[0]
    assert image.sha256 == hashlib.sha256(image.path.read_bytes()).hexdigest()
    assert image.image_hash == hashlib.md5(image.path.read_bytes()).hexdigest()
    known = {image.path: image for image in first.images}
    reads.clear()
    assert scan_image_folder(tmp_path, with_sha256=True, known=known).images == first.images and reads == []
    random_image(20, 20, 9).save(tmp_path / "1.png")
    os.utime(tmp_path / "1.png", ns=(1, 1))
    rescanned = scan_image_folder(tmp_path, with_sha256=True, known=known)
    assert reads == [tmp_path / "1.png"] and rescanned.images[1].sha256 != first.images[1].sha256
