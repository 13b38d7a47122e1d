"""The human judgements of the studies app, in one SQLite database in WAL mode: one row per judgement, append-only.

Why SQLite in WAL mode: several annotators write at once (one connection per request, readers never block the
writer), each judgement is committed (`synchronous=FULL`) before the page moves on, so a server killed mid-session
loses nothing already submitted. Append-only is enforced by the database itself (triggers refuse UPDATE and DELETE
of judgement rows): a changed mind is a new row, and the latest row of an annotator for an item is their answer.

Annotators are registered by an admin (`add_annotator` returns a secret token; only its sha256 is stored). Every
write names its annotator by `Credentials` and is checked against the stored token in the same transaction, so a
person can write only their own judgements.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


SCHEMA_VERSION = 1
LOCK_TIMEOUT_S = 5.0
ANNOTATOR_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")
VERDICTS = ("accept", "edit", "reject")
AB_CHOICES = ("left", "right", "neither")
JUDGEMENT_TABLES = ("label_judgements", "group_judgements", "ab_judgements")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS annotators (
    name TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS label_judgements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    annotator TEXT NOT NULL REFERENCES annotators(name),
    created_at TEXT NOT NULL,
    image TEXT NOT NULL,
    relational INTEGER NOT NULL CHECK (relational IN (0, 1))
);
CREATE TABLE IF NOT EXISTS group_judgements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    annotator TEXT NOT NULL REFERENCES annotators(name),
    created_at TEXT NOT NULL,
    group_id INTEGER NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('accept', 'edit', 'reject')),
    caption TEXT NOT NULL,
    original_caption TEXT NOT NULL,
    image_urls TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ab_judgements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    annotator TEXT NOT NULL REFERENCES annotators(name),
    created_at TEXT NOT NULL,
    query TEXT NOT NULL,
    left_method TEXT NOT NULL,
    right_method TEXT NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ('left', 'right', 'neither')),
    CHECK (left_method != right_method)
);
"""
_APPEND_ONLY = """
CREATE TRIGGER IF NOT EXISTS {table}_no_update BEFORE UPDATE ON {table}
BEGIN SELECT RAISE(ABORT, '{table} is append-only: record a new judgement instead'); END;
CREATE TRIGGER IF NOT EXISTS {table}_no_delete BEFORE DELETE ON {table}
BEGIN SELECT RAISE(ABORT, '{table} is append-only: judgements are never deleted'); END;
"""


class StoreLockedError(TimeoutError):
    """Another process holds the database's write lock for longer than the store waits."""


@dataclass(frozen=True)
class Credentials:
    """Who writes: an annotator's name and the token `add_annotator` issued (checked on every write)."""

    name: str
    token: str

    def __repr__(self) -> str:  # the token never reaches a log line
        return f"Credentials(name={self.name!r})"


@dataclass(frozen=True)
class LabelJudgement:
    id: int
    annotator: str
    created_at: str
    image: str
    relational: bool


@dataclass(frozen=True)
class GroupJudgement:
    id: int
    annotator: str
    created_at: str
    group_id: int
    verdict: str
    caption: str
    original_caption: str
    image_urls: list[str]


@dataclass(frozen=True)
class AbJudgement:
    id: int
    annotator: str
    created_at: str
    query: str
    left_method: str
    right_method: str
    choice: str

    @property
    def winner(self) -> str | None:
        """The preferred method, or None for "neither"."""
        return {"left": self.left_method, "right": self.right_method}.get(self.choice)


def check_annotator_name(name: str) -> str:
    """The name, when it is 1-40 letters, digits, `_` or `-` (starting with a letter or digit): nothing that could
    be a path (`../x`) or markup (`<b>`) in an export, a log line or a page.

    Raises:
        ValueError: any other name, quoted.
    """
    if not isinstance(name, str) or not ANNOTATOR_NAME.fullmatch(name):
        raise ValueError(
            f"annotator name {name!r} is not allowed: use 1-40 letters, digits, '_' or '-', starting with a letter "
            "or digit"
        )
    return name


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class JudgementStore:
    """The judgements database at `path` (created with its schema when missing).

    Every call opens its own connection (Gradio runs handlers in threads), waits up to `lock_timeout_s` for a
    write lock, and commits before returning.

    Raises:
        ValueError: `path` is not a SQLite database, or one of another schema.
        StoreLockedError: the database stays locked by another process.
        OSError: the folder does not exist or cannot be written.
    """

    def __init__(self, path: str | Path, lock_timeout_s: float = LOCK_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s
        if not self.path.parent.is_dir():
            raise FileNotFoundError(2, "no such folder for the judgements database", str(self.path.parent))
        with self._connect() as connection:
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise OSError(f"{self.path}: SQLite would not switch to WAL mode (got {mode!r}); use a local disk")
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise ValueError(
                    f"{self.path}: a judgements database of schema {version}; this code reads {SCHEMA_VERSION}"
                )
            if version == SCHEMA_VERSION:
                return
            # IMMEDIATE: a deferred transaction upgraded to a write fails at once (no busy wait) under a concurrent
            # writer in WAL mode
            connection.executescript(
                "BEGIN IMMEDIATE;"
                + _SCHEMA
                + "".join(_APPEND_ONLY.format(table=table) for table in JUDGEMENT_TABLES)
                + f"PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
            )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection for one operation: a transaction committed on success, rolled back on error, always closed;
        SQLite's own errors turned into ones that name the file."""
        connection = None
        try:
            connection = sqlite3.connect(self.path, timeout=self.lock_timeout_s, isolation_level=None)
            connection.execute("PRAGMA foreign_keys=ON")
            connection.execute("PRAGMA synchronous=FULL")
            yield connection
        except sqlite3.OperationalError as error:
            if "locked" in str(error) or "busy" in str(error):
                raise StoreLockedError(
                    f"{self.path}: the database stayed locked by another process for {self.lock_timeout_s:g} s "
                    f"({error}); close it there, or wait and retry"
                ) from error
            raise OSError(f"{self.path}: {error}") from error
        except sqlite3.IntegrityError as error:
            raise ValueError(f"{self.path}: refused: {error}") from error
        except sqlite3.DatabaseError as error:
            raise ValueError(
                f"{self.path}: not a judgements database ({error}); point --db at a new file or an existing "
                "judgements.sqlite"
            ) from error
        finally:
            if connection is not None:
                connection.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as connection:
            connection.execute("BEGIN IMMEDIATE")  # take the write lock first: a checked token stays valid
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def journal_mode(self) -> str:
        with self._connect() as connection:
            return connection.execute("PRAGMA journal_mode").fetchone()[0]

    # annotators

    def add_annotator(self, name: str) -> str:
        """Registers `name` (or issues a new token to it, revoking the old one) and returns its token."""
        check_annotator_name(name)
        token = secrets.token_urlsafe(24)
        with self._transaction() as connection:
            connection.execute(
                "INSERT INTO annotators (name, token_sha256, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET token_sha256 = excluded.token_sha256",
                (name, _token_hash(token), _now()),
            )
        return token

    def annotators(self) -> list[str]:
        with self._connect() as connection:
            return [row[0] for row in connection.execute("SELECT name FROM annotators ORDER BY name")]

    def _check(self, connection: sqlite3.Connection, who: Credentials) -> str:
        row = connection.execute("SELECT token_sha256 FROM annotators WHERE name = ?", (who.name,)).fetchone()
        # compared even for an unknown name, so the answer's timing does not tell which names exist
        stored = row[0] if row else _token_hash(secrets.token_hex(8))
        if not hmac.compare_digest(stored, _token_hash(who.token or "")) or row is None:
            raise PermissionError(f"annotator {who.name!r}: unknown name or wrong token")
        return who.name

    def authenticate(self, who: Credentials) -> str:
        """The annotator's name when the token is theirs.

        Raises:
            PermissionError: unknown name or wrong token (one message for both).
        """
        with self._connect() as connection:
            return self._check(connection, who)

    # writes: one row each, checked and committed

    def record_label(self, who: Credentials, image: str, relational: bool) -> int:
        """Stores "is `image` relationally interesting?" by `who`; returns the row id."""
        return self._insert(who, "label_judgements", {"image": str(image), "relational": int(bool(relational))})

    def record_group_verdict(
        self,
        who: Credentials,
        group_id: int,
        verdict: str,
        caption: str,
        original_caption: str,
        image_urls: Sequence[str],
    ) -> int:
        """Stores a verdict on seed group `group_id` (accept, edit with the new `caption`, or reject), with the
        group's images, so an export needs nothing but this database."""
        if verdict not in VERDICTS:
            raise ValueError(f"verdict {verdict!r} is not one of {VERDICTS}")
        if verdict == "edit" and not caption.strip():
            raise ValueError(f"group {group_id}: an edited caption cannot be empty")
        row = {"group_id": int(group_id), "verdict": verdict, "caption": caption.strip()}
        row |= {"original_caption": original_caption, "image_urls": json.dumps(list(image_urls))}
        return self._insert(who, "group_judgements", row)

    def record_ab(self, who: Credentials, query: str, left_method: str, right_method: str, choice: str) -> int:
        """Stores an A/B choice: which side (shown without method names) `who` preferred, or "neither"."""
        if choice not in AB_CHOICES:
            raise ValueError(f"choice {choice!r} is not one of {AB_CHOICES}")
        row = {"query": str(query), "left_method": left_method, "right_method": right_method, "choice": choice}
        return self._insert(who, "ab_judgements", row)

    def _insert(self, who: Credentials, table: str, row: dict[str, Any]) -> int:
        """One row of `table` by `who` (checked first) at this moment, in its own transaction; returns its id."""
        columns = ["annotator", "created_at", *row]
        with self._transaction() as connection:
            values = [self._check(connection, who), _now(), *row.values()]
            statement = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            return connection.execute(statement, values).lastrowid

    # reads

    def _rows(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple]:
        with self._connect() as connection:
            return connection.execute(sql, parameters).fetchall()

    def labels(self, annotator: str | None = None) -> list[LabelJudgement]:
        """Every label judgement (of `annotator` alone when given), oldest first."""
        where, parameters = ("WHERE annotator = ?", (annotator,)) if annotator else ("", ())
        rows = self._rows(f"SELECT id, annotator, created_at, image, relational FROM label_judgements {where} "
                          "ORDER BY id", parameters)  # fmt: skip
        return [LabelJudgement(*row[:4], bool(row[4])) for row in rows]

    def group_verdicts(self) -> list[GroupJudgement]:
        rows = self._rows(
            "SELECT id, annotator, created_at, group_id, verdict, caption, original_caption, image_urls "
            "FROM group_judgements ORDER BY id"
        )
        return [GroupJudgement(*row[:7], json.loads(row[7])) for row in rows]

    def ab_judgements(self) -> list[AbJudgement]:
        rows = self._rows(
            "SELECT id, annotator, created_at, query, left_method, right_method, choice FROM ab_judgements ORDER BY id"
        )
        return [AbJudgement(*row) for row in rows]

    def resume_position(self, annotator: str, images: Sequence[str]) -> int | None:
        """Where `annotator` left off: the first of `images` (in order) they have not labelled, None when done."""
        done = {row[0] for row in self._rows("SELECT image FROM label_judgements WHERE annotator = ?", (annotator,))}
        return next((position for position, image in enumerate(images) if str(image) not in done), None)

    def verified_groups(self, annotator: str) -> set[int]:
        return {row[0] for row in self._rows("SELECT group_id FROM group_judgements WHERE annotator = ?", (annotator,))}
