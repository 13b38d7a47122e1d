"""The one FAISS builder: exact search equals a matrix product, IVF-PQ reports its recall, save/load round trip."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.vector_index import VectorIndex, build_index, recall_against_exact, search, sidecar_path


def unit_vectors(count: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    return F.normalize(torch.randn(count, dim, generator=torch.Generator().manual_seed(seed)), dim=-1).numpy()


def test_flat_index_filled_in_chunks_equals_exact_search():
    pool, queries = unit_vectors(200), unit_vectors(7, seed=1)
    index = build_index([pool[:64], pool[64:150], pool[150:]], dim=32)
    scores, ids = search(index, queries, k=10)
    exact = queries @ pool.T
    expected = np.argsort(-exact, axis=1)[:, :10]
    assert (ids == expected).all()
    np.testing.assert_allclose(scores, np.take_along_axis(exact, expected, axis=1), atol=1e-5)


def test_l2_scores_are_minus_squared_distances():
    pool = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    index = build_index([pool], dim=8, metric="l2")
    scores, ids = index.search(pool[:3], k=4)
    distances = ((pool[:3, None] - pool[None]) ** 2).sum(-1)
    expected = np.argsort(distances, axis=1)[:, :4]
    assert (ids == expected).all()
    np.testing.assert_allclose(scores, -np.take_along_axis(distances, expected, axis=1), atol=1e-4)


def test_ivf_pq_is_trained_on_a_sample_and_reports_its_recall_against_exact():
    # ~200 vectors: 4 lists, 8 sub-quantizers of 4 bits (16 centroids each)
    pool, queries = unit_vectors(200), unit_vectors(20, seed=2)
    index = VectorIndex(32, "IVF4,PQ8x4")
    index.train(pool[::2])
    for start in range(0, 200, 50):
        index.add(pool[start : start + 50])
    _, approximate = index.search(queries, k=10, nprobe=4)
    exact = np.argsort(-(queries @ pool.T), axis=1)[:, :10]
    recall = recall_against_exact(approximate, exact)
    assert 0.3 < recall < 1.0  # compressed codes lose some neighbours, but far better than chance (0.05)
    assert recall_against_exact(exact, exact) == 1.0


def test_save_and_load_round_trip_with_sidecar(tmp_path):
    pool = unit_vectors(30)
    index = build_index([pool], dim=32)
    path = index.save(tmp_path / "vectors.faiss")
    assert json.loads(sidecar_path(path).read_text()) == {
        "factory": "Flat", "dim": 32, "count": 30, "metric": "inner_product", "format": "relsim-vector-index-1"
    }  # fmt: skip
    loaded = VectorIndex.load(path)
    assert (loaded.search(pool[:2], 3)[1] == index.search(pool[:2], 3)[1]).all()


def test_a_sidecar_that_disagrees_with_the_index_is_refused(tmp_path):
    path = build_index([unit_vectors(30)], dim=32).save(tmp_path / "vectors.faiss")
    build_index([unit_vectors(31)], dim=32).save(tmp_path / "other.faiss")
    sidecar_path(path).write_text(sidecar_path(tmp_path / "other.faiss").read_text())
    with pytest.raises(ValueError, match="31 of dim 32"):
        VectorIndex.load(path)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="'NoSuchIndex'"):
        VectorIndex(8, "NoSuchIndex")
    with pytest.raises(ValueError, match="have 4 dimensions; this index holds 8"):
        VectorIndex(8).add(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        VectorIndex(2).add(np.array([[0.0, np.nan]], np.float32))
    with pytest.raises(ValueError, match="cannot train FAISS index 'IVF64,Flat' on 10 vectors"):
        VectorIndex(32, "IVF64,Flat").train(unit_vectors(10))


def test_a_truncated_index_file_is_named_instead_of_faiss_raw_error(tmp_path):
    path = build_index([unit_vectors(30)], dim=32).save(tmp_path / "vectors.faiss")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"vectors\.faiss: FAISS cannot read it \(truncated, or not a FAISS index"):
        VectorIndex.load(path)


def test_a_recorded_checksum_is_checked_on_the_bytes_that_are_read(tmp_path):
    import hashlib

    path = build_index([unit_vectors(30)], dim=32).save(tmp_path / "vectors.faiss")
    recorded = hashlib.sha256(path.read_bytes()).hexdigest()
    assert VectorIndex.load(path, sha256=recorded).count == 30
    build_index([unit_vectors(30, seed=5)], dim=32).save(path)  # same count, same size, other vectors
    with pytest.raises(ValueError, match=rf"vectors\.faiss: its sha256 .* is not the recorded one \({recorded[:12]}"):
        VectorIndex.load(path, sha256=recorded)
