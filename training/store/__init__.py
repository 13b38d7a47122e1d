"""One atomic, content-keyed store for caches and resumable outputs (the evaluation's embedding cache and judge
answers today; the data pipeline's shards and the search index next). It imports only the standard library, torch,
safetensors and huggingface_hub, so every product of `training/` can build on it.

A cached row is keyed by *what it was computed from*, never by a name that can come to mean something else:
the identity of the computation (method, settings and the model's weights fingerprint, `weights_fingerprint`) is
fixed per store folder, and each row carries the sha256 of its input file beside the row key.

- `atomic_write`: temporary file in the same folder, fsync, `os.replace` — readers see the old file or the new one.
- `TensorShardStore`: immutable safetensors shards named by the sha256 of their bytes (names never collide; nothing
  is overwritten), each with a manifest of row keys and content keys, verified whole on open and on every read
  (checksum, row count, finite values). A damaged shard is named in a warning and its rows count as missing; a
  rerun computes again exactly the missing, damaged and changed rows.
- `write_with_checksum` / `checksum_problem`: a fixed-name file's sha256 recorded beside it (`<name>.sha256`) when it
  is written and checked before the file is trusted (the pipeline's parquet shards).
- `RecordLog`: append-only JSON lines, each record fsynced as it arrives; a half-written last line is recovered
  (skipped, then cut before the next append), any other damaged line is an error naming file and line.
"""

from training.store.atomic import atomic_write
from training.store.checksums import checksum_path, checksum_problem, remove_with_checksum, write_with_checksum
from training.store.fingerprint import adapter_fingerprint, model_fingerprint, tensors_fingerprint, weights_fingerprint
from training.store.record_log import RecordLog
from training.store.tensor_shards import (
    DamagedShardError,
    IdentityMismatchError,
    TensorShardStore,
    read_identity,
    read_shard,
)


__all__ = [
    "DamagedShardError",
    "IdentityMismatchError",
    "RecordLog",
    "TensorShardStore",
    "adapter_fingerprint",
    "atomic_write",
    "checksum_path",
    "checksum_problem",
    "model_fingerprint",
    "read_identity",
    "read_shard",
    "remove_with_checksum",
    "tensors_fingerprint",
    "weights_fingerprint",
    "write_with_checksum",
]
