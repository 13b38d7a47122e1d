"""The one store for caches: atomic writes, content-named tensor shards verified on load, the answer log's
recovery, and weights fingerprints."""

import hashlib
import json
import logging
import os
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from training.store import (
    DamagedShardError,
    IdentityMismatchError,
    RecordLog,
    TensorShardStore,
    atomic_write,
    checksum_problem,
    read_shard,
    tensors_fingerprint,
    weights_fingerprint,
    write_with_checksum,
)


def shard_paths(folder):
    return sorted(folder.glob("shard-*.safetensors"))


def overwrite_rows(path, values):
    """Replaces a shard's float32 data in place, keeping its header (and so its manifest) intact."""
    data = bytearray(path.read_bytes())
    (header_length,) = struct.unpack("<Q", data[:8])
    start = 8 + header_length
    data[start:] = np.asarray(values, dtype=np.float32).tobytes()
    path.write_bytes(bytes(data))


def test_atomic_write_replaces_whole_files_and_leaves_nothing_when_the_writer_fails(tmp_path):
    path = tmp_path / "sub" / "out.json"
    atomic_write(path, b"old")

    def failing_writer(temporary):
        temporary.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, failing_writer)
    assert path.read_bytes() == b"old" and os.listdir(path.parent) == ["out.json"]
    atomic_write(path, lambda temporary: save_file({"x": torch.ones(2)}, str(temporary)))
    torch.testing.assert_close(load_file(str(path))["x"], torch.ones(2))
    assert os.listdir(path.parent) == ["out.json"]


def test_a_file_written_with_its_checksum_is_trusted_until_its_bytes_change(tmp_path):
    path = write_with_checksum(tmp_path / "part-00000.parquet", b"0123456789")
    recorded = tmp_path / "part-00000.parquet.sha256"
    assert recorded.read_text() == hashlib.sha256(b"0123456789").hexdigest() + "  part-00000.parquet\n"
    assert checksum_problem(path) is None

    path.write_bytes(b"0123X56789")  # same size, one byte changed
    assert checksum_problem(path) == (
        "its bytes do not match the sha256 recorded in part-00000.parquet.sha256 when it was written "
        "(damaged or edited)"
    )
    recorded.unlink()
    assert checksum_problem(path) == "no sha256 was recorded when it was written (part-00000.parquet.sha256 is missing)"


def test_shards_are_named_by_their_content_and_never_overwritten(tmp_path):
    store = TensorShardStore(tmp_path, {"method": "m"})
    first = store.add(["a", "b"], ["ca", "cb"], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    first.unlink()  # as a user deleting a shard
    second = store.add(["c"], ["cc"], torch.tensor([[0.5, 0.5]]))
    third = TensorShardStore(tmp_path, {"method": "m"}).add(["a", "b"], ["ca", "cb"], torch.ones(2, 2))
    assert len({first, second, third}) == 3 and shard_paths(tmp_path) == sorted([second, third])
    assert all(path.name == f"shard-{hashlib.sha256(path.read_bytes()).hexdigest()}.safetensors"
               for path in (second, third))  # fmt: skip
    reopened = TensorShardStore.open(tmp_path)
    assert len(reopened) == 3 and sorted(key for keys, _ in reopened.iter_shards() for key in keys) == ["a", "b", "c"]


def test_rows_held_with_the_same_content_are_not_stored_twice_and_new_content_supersedes(tmp_path):
    store = TensorShardStore(tmp_path, {"method": "m"})
    store.add(["a", "b"], ["ca", "cb"], torch.tensor([[1.0], [2.0]]))
    assert store.add(["a"], ["ca"], torch.tensor([[9.0]])) is None  # same key, same content: nothing new
    store.add(["a"], ["ca2"], torch.tensor([[3.0]]))  # the file behind "a" changed
    reopened = TensorShardStore.open(tmp_path)
    rows = {key: row.item() for keys, block in reopened.iter_shards() for key, row in zip(keys, block, strict=True)}
    assert rows == {"a": 3.0, "b": 2.0} and reopened.content_keys() == {"a": "ca2", "b": "cb"}


def test_a_store_refuses_another_identity_and_names_the_difference(tmp_path):
    TensorShardStore(tmp_path, {"method": "m", "weights": "sha256:1"})
    with pytest.raises(IdentityMismatchError, match=r"differ in weights"):
        TensorShardStore(tmp_path, {"method": "m", "weights": "sha256:2"})


def test_non_finite_rows_are_never_stored(tmp_path):
    store = TensorShardStore(tmp_path, {"method": "m"})
    with pytest.raises(ValueError, match=r"1 rows .* are not finite, e.g. \['b'\]; none was stored"):
        store.add(["a", "b"], ["ca", "cb"], torch.tensor([[1.0], [float("nan")]]))
    assert shard_paths(tmp_path) == [] and len(store) == 0


def test_a_shard_with_a_damaged_header_is_named_and_its_rows_count_as_missing(tmp_path, caplog):
    store = TensorShardStore(tmp_path, {"method": "m"})
    damaged = store.add(["a", "b"], ["ca", "cb"], torch.ones(2, 3))
    kept = store.add(["c"], ["cc"], torch.ones(1, 3))
    damaged.write_bytes(b"\xff" * 8 + damaged.read_bytes()[8:])
    with caplog.at_level(logging.WARNING):
        reopened = TensorShardStore.open(tmp_path)
    assert str(damaged) in caplog.text and "count as missing" in caplog.text
    assert list(reopened.damaged) == [damaged] and "a" not in reopened and "c" in reopened
    assert [keys for keys, _ in reopened.iter_shards()] == [["c"]] and kept.is_file() and damaged.is_file()


@pytest.mark.parametrize("bad_value", [float("nan"), 1e36])
def test_a_shard_with_damaged_data_is_rejected_by_its_checksum(tmp_path, bad_value):
    store = TensorShardStore(tmp_path, {"method": "m"})
    path = store.add(["a", "b"], ["ca", "cb"], torch.ones(2, 2))
    overwrite_rows(path, [1.0, 1.0, bad_value, 1.0])
    with pytest.raises(DamagedShardError, match=r"do not match the sha256 in its name") as error:
        read_shard(path)
    assert error.value.path == path and str(error.value).startswith(str(path))
    assert len(TensorShardStore.open(tmp_path)) == 0


def forged_shard(folder, keys, rows, count=None):
    """A shard whose name matches its bytes but whose content is wrong: what a buggy writer would leave."""
    from safetensors.torch import save

    metadata = {"format": "relsim-tensor-shard-1", "keys": json.dumps(keys), "content_keys": json.dumps(keys),
                "rows": str(len(keys) if count is None else count), "created_ns": "1"}  # fmt: skip
    data = save({"rows": rows}, metadata=metadata)
    path = folder / f"shard-{hashlib.sha256(data).hexdigest()}.safetensors"
    path.write_bytes(data)
    return path


def test_incomplete_or_non_finite_shards_are_rejected_even_with_a_matching_checksum(tmp_path):
    TensorShardStore(tmp_path, {"method": "m"})
    short = forged_shard(tmp_path, ["a"], torch.ones(2, 2))
    huge = forged_shard(tmp_path, ["b", "c"], torch.tensor([[1.0, float("inf")], [0.0, 1.0]]))
    with pytest.raises(DamagedShardError, match=r"incomplete: its manifest lists 1 keys .* and it holds 2"):
        read_shard(short)
    with pytest.raises(DamagedShardError, match=r"1 rows are not finite, e.g. \['b'\]"):
        read_shard(huge)
    store = TensorShardStore.open(tmp_path)
    assert len(store) == 0 and set(store.damaged) == {short, huge}


def test_record_log_recovers_a_half_written_last_line_and_names_earlier_damage(tmp_path, caplog):
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"key": "a"}\n{"key": "b", "va')
    log = RecordLog(path, what="answer", required=("key",))
    assert [record for _, record in log.records()] == [{"key": "a"}] and "log.jsonl:2: the last line" in caplog.text
    log.append({"key": "c"})
    assert path.read_bytes() == b'{"key": "a"}\n{"key": "c"}\n'

    path.write_bytes(b'{"key": "a"}')  # a whole record that lost only its newline is kept
    RecordLog(path, required=("key",)).append({"key": "b"})
    assert path.read_bytes() == b'{"key": "a"}\n{"key": "b"}\n'

    path.write_bytes(b'{"key": "a"}\n[1]\n{"key": "b"}\n')
    with pytest.raises(ValueError, match=r"log\.jsonl:2: <line>: expected a JSON object"):
        list(RecordLog(path).records())
    path.write_bytes(b'{"key": "a"}\n{"other": 1}\n')
    with pytest.raises(ValueError, match=r"log\.jsonl:2: key: missing from this answer record"):
        list(RecordLog(path, what="answer", required=("key",)).records())


def save_weights(folder, seed):
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {"weight": torch.randn(4, 4, generator=torch.Generator().manual_seed(seed))}, str(folder / "w.safetensors")
    )
    (folder / "config.json").write_text('{"hidden": 4}')


def test_weights_fingerprint_follows_the_bytes_not_the_path_or_the_clock(tmp_path):
    save_weights(tmp_path / "model", seed=0)
    before = weights_fingerprint(tmp_path / "model")
    save_weights(tmp_path / "copy", seed=0)
    assert weights_fingerprint(tmp_path / "copy") == before  # same files elsewhere: same weights
    (tmp_path / "model" / "optimizer.pt").write_bytes(b"trainer state")
    (tmp_path / "model" / "README.md").write_text("notes")
    assert weights_fingerprint(tmp_path / "model") == before  # neither changes what the model computes

    weights = tmp_path / "model" / "w.safetensors"
    stat = weights.stat()
    save_weights(tmp_path / "model", seed=1)  # retrained: same header, same size, new values
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights.stat().st_size == stat.st_size and weights_fingerprint(tmp_path / "model") != before


def test_tensors_fingerprint_changes_with_any_value():
    state = {"a": torch.zeros(3, dtype=torch.bfloat16), "b": torch.tensor(1.0)}
    changed = {**state, "b": torch.tensor(1.0001)}
    assert tensors_fingerprint(state.items()) == tensors_fingerprint(reversed(list(state.items())))
    assert tensors_fingerprint(state.items()) != tensors_fingerprint(changed.items())


def test_a_hub_id_is_fingerprinted_by_its_cached_commit_and_an_unknown_one_is_refused(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from training.store import model_fingerprint, tensors_fingerprint

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--org--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert model_fingerprint("org/tiny") == f"hub:org/tiny@{commit}"
    with pytest.raises(FileNotFoundError, match="cannot fingerprint the weights of 'org/other'"):
        model_fingerprint("org/other")
    module = torch.nn.Linear(2, 2)
    assert model_fingerprint("org/other", module) == tensors_fingerprint(module.state_dict().items())
