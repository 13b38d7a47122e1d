"""The judgement store of the studies app: SQLite in WAL mode, append-only rows checked by annotator tokens, resume
positions, Cohen's kappa, Wilson intervals, and exports the dataset builders read back."""

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from training.hub_data.filter_labels import build_filter_labels
from training.hub_data.seed_groups import build_seed_groups
from training.hub_data.validation import RejectionLog
from training.image_ids import url_image_hash
from training.studies.__main__ import main as studies_cli
from training.studies.ab_results import wilson_interval, win_rates
from training.studies.judgement_exports import export_filter_labels, export_seed_groups, image_url
from training.studies.judgement_store import (
    AbJudgement,
    Credentials,
    JudgementStore,
    StoreLockedError,
    check_annotator_name,
)
from training.studies.label_agreement import cohen_kappa, current_labels, pairwise_agreement


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path):
    return JudgementStore(tmp_path / "judgements.sqlite")


def sign_up(store, name):
    return Credentials(name, store.add_annotator(name))


def test_the_database_is_in_wal_mode_with_a_wal_file_beside_it(store):
    alice = sign_up(store, "alice")
    store.record_label(alice, "/photos/a.png", True)
    assert store.journal_mode() == "wal"
    with sqlite3.connect(store.path) as connection:  # persistent: any new connection sees WAL
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.path.with_name(store.path.name + "-wal").exists()


def test_judgement_rows_cannot_be_updated_or_deleted(store):
    alice = sign_up(store, "alice")
    store.record_label(alice, "/photos/a.png", True)
    store.record_label(alice, "/photos/a.png", False)  # a changed mind is a new row
    with sqlite3.connect(store.path) as connection:
        for statement in ("UPDATE label_judgements SET relational = 1", "DELETE FROM label_judgements"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                connection.execute(statement)
    assert [(row.image, row.relational) for row in store.labels()] == [
        ("/photos/a.png", True),
        ("/photos/a.png", False),
    ]
    assert current_labels(store.labels()) == {"alice": {"/photos/a.png": False}}


def test_each_row_carries_its_annotator_and_a_utc_timestamp(store):
    alice, bob = sign_up(store, "alice"), sign_up(store, "bob")
    before = time.time()
    store.record_label(alice, "/photos/a.png", True)
    store.record_ab(bob, "/photos/q.png", "relsim", "pixel", "right")
    rows = [*store.labels(), *store.ab_judgements()]
    assert [row.annotator for row in rows] == ["alice", "bob"]
    from datetime import datetime

    for row in rows:
        stamp = datetime.fromisoformat(row.created_at)
        assert stamp.utcoffset().total_seconds() == 0 and before - 1 <= stamp.timestamp() <= time.time() + 1
    assert store.ab_judgements()[0].winner == "pixel"


def test_a_write_needs_the_annotators_own_token(store):
    alice, bob = sign_up(store, "alice"), sign_up(store, "bob")
    for impostor in (Credentials("alice", bob.token), Credentials("alice", ""), Credentials("carol", alice.token)):
        with pytest.raises(PermissionError, match="unknown name or wrong token"):
            store.record_label(impostor, "/photos/a.png", True)
    renewed = Credentials("alice", store.add_annotator("alice"))  # a new token revokes the old one
    with pytest.raises(PermissionError):
        store.record_label(alice, "/photos/a.png", True)
    store.record_label(renewed, "/photos/a.png", True)
    assert [(row.annotator, row.image) for row in store.labels()] == [("alice", "/photos/a.png")]
    assert renewed.token not in repr(renewed)


@pytest.mark.parametrize("name", ["../x", "x/../../etc", "<b>x</b>", "a b", "", "-x", "a" * 41, "x\n", "é"])
def test_annotator_names_that_could_be_paths_or_markup_are_refused(store, name):
    with pytest.raises(ValueError, match="is not allowed"):
        check_annotator_name(name)
    with pytest.raises(ValueError, match="is not allowed"):
        store.add_annotator(name)
    assert store.annotators() == []


def test_the_add_annotator_command_refuses_a_path_like_name_in_one_line(tmp_path, capsys):
    database = tmp_path / "judgements.sqlite"
    from training.cli import run_program

    status = run_program(
        studies_cli, ["add-annotator", "--db", str(database), "--name", "../x"], prog="studies", has_commands=True
    )
    assert status == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("studies add-annotator: error: annotator name '../x' is not allowed")
    assert "\n" not in error
    assert sorted(path.name for path in tmp_path.iterdir()) == ["judgements.sqlite"]  # nothing written beside it


def test_the_add_annotator_command_prints_a_token_that_signs_in(tmp_path, capsys):
    database = tmp_path / "judgements.sqlite"
    studies_cli(["add-annotator", "--db", str(database), "--name", "alice"])
    token = capsys.readouterr().out.strip()
    assert len(token) >= 24
    assert JudgementStore(database).authenticate(Credentials("alice", token)) == "alice"


WRITER = """
import sys
sys.path.insert(0, {root!r})
from training.studies.judgement_store import Credentials, JudgementStore
store = JudgementStore({db!r}, lock_timeout_s=30)
who = Credentials(sys.argv[1], sys.argv[2])
for index in range(40):
    store.record_label(who, f"/photos/{{sys.argv[1]}}-{{index:02d}}.png", index % 2 == 0)
"""


def test_two_processes_write_at_once_and_every_row_arrives(store, tmp_path):
    alice, bob = sign_up(store, "alice"), sign_up(store, "bob")
    script = WRITER.format(root=str(ROOT), db=str(store.path))
    # a reader holding a transaction open the whole time: in WAL mode it blocks no writer
    reader = sqlite3.connect(store.path, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT COUNT(*) FROM label_judgements").fetchone()[0] == 0
    writers = [
        subprocess.Popen([sys.executable, "-c", script, who.name, who.token], stderr=subprocess.PIPE)
        for who in (alice, bob)
    ]
    errors = [writer.communicate(timeout=120)[1] for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0], errors
    assert reader.execute("SELECT COUNT(*) FROM label_judgements").fetchone()[0] == 0  # its snapshot
    reader.execute("COMMIT")
    reader.close()
    rows = store.labels()
    assert len(rows) == 80 and len({row.id for row in rows}) == 80
    for name in ("alice", "bob"):
        mine = [row.image for row in rows if row.annotator == name]
        assert mine == [f"/photos/{name}-{index:02d}.png" for index in range(40)]  # each writer's order kept


def test_resume_position_is_the_first_image_not_yet_labelled_even_after_reopening(store):
    images = [f"/photos/{index}.png" for index in range(5)]
    alice, bob = sign_up(store, "alice"), sign_up(store, "bob")
    for index in (0, 1, 3):
        store.record_label(alice, images[index], True)
    store.record_label(bob, images[2], False)
    reopened = JudgementStore(store.path)
    assert reopened.resume_position("alice", images) == 2
    assert reopened.resume_position("bob", images) == 0
    for index in (2, 4):
        reopened.record_label(alice, images[index], False)
    assert reopened.resume_position("alice", images) is None


def test_cohen_kappa_matches_the_hand_computed_value(store):
    # A: 1 1 1 1 0 0 0 0 1 0 ; B: 1 1 1 0 0 0 0 1 1 0 -> agreement 0.8; both say yes to half, chance 0.5;
    # kappa = (0.8 - 0.5) / (1 - 0.5) = 0.6
    first = [1, 1, 1, 1, 0, 0, 0, 0, 1, 0]
    second = [1, 1, 1, 0, 0, 0, 0, 1, 1, 0]
    alice, bob, carol = sign_up(store, "alice"), sign_up(store, "bob"), sign_up(store, "carol")
    store.record_label(alice, "/photos/3.png", False)  # alice changes her mind below: her latest row counts
    for index, (a, b) in enumerate(zip(first, second, strict=True)):
        store.record_label(alice, f"/photos/{index}.png", bool(a))
        store.record_label(bob, f"/photos/{index}.png", bool(b))
    store.record_label(carol, "/photos/0.png", True)
    store.record_label(bob, "/photos/99.png", True)  # labelled by bob alone: not shared
    rows = pairwise_agreement(store.labels())
    assert [(row.first, row.second, row.shared, row.agreed) for row in rows] == [
        ("alice", "bob", 10, 8),
        ("alice", "carol", 1, 1),
        ("bob", "carol", 1, 1),
    ]
    assert rows[0].kappa == pytest.approx(0.6)
    assert rows[1].kappa is None  # one shared image, one class: kappa is undefined, not 0 or 1
    assert cohen_kappa({}, {"x": True}) == (0, 0, None)


def test_wilson_interval_matches_newcombes_published_values():
    # Newcombe (1998), Statistics in Medicine 17:857, Table I, method 3 (Wilson score, no continuity correction)
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    assert wilson_interval(15, 148) == pytest.approx((0.0624, 0.1605), abs=5e-5)
    assert wilson_interval(0, 20) == pytest.approx((0.0, 0.1611), abs=5e-5)
    with pytest.raises(ValueError, match="trials"):
        wilson_interval(3, 0)


def ab(row_id, left, right, choice):
    return AbJudgement(row_id, "alice", "2026-01-01T00:00:00+00:00", f"q{row_id}", left, right, choice)


def test_win_rates_count_each_pair_whatever_the_sides_and_neither_as_no_win():
    rows = [ab(1, "relsim", "pixel", "left"), ab(2, "pixel", "relsim", "right"), ab(3, "pixel", "relsim", "left"),
            ab(4, "relsim", "pixel", "neither"), ab(5, "relsim", "clip-i", "left")]  # fmt: skip
    rates = {(row.method, row.opponent): row for row in win_rates(rows)}
    assert set(rates) == {("clip-i", "relsim"), ("relsim", "clip-i"), ("pixel", "relsim"), ("relsim", "pixel")}
    relsim = rates[("relsim", "pixel")]
    assert (relsim.comparisons, relsim.wins, relsim.losses, relsim.neither, relsim.rate) == (4, 2, 1, 1, 0.5)
    assert (relsim.low, relsim.high) == pytest.approx(wilson_interval(2, 4))
    assert rates[("pixel", "relsim")].rate == 0.25


def test_filter_label_export_round_trips_through_the_builder(store, tmp_path):
    alice, bob, carol = sign_up(store, "alice"), sign_up(store, "bob"), sign_up(store, "carol")
    store.record_label(alice, "/photos/a.png", True)
    store.record_label(bob, "/photos/a.png", True)
    store.record_label(carol, "/photos/a.png", False)
    store.record_label(alice, "/photos/b.png", False)
    store.record_label(alice, "/photos/c.png", True)  # a tie between alice and bob: left out
    store.record_label(bob, "/photos/c.png", False)
    store.record_label(bob, "https://example.com/d.jpg", True)
    report = export_filter_labels(store.labels(), tmp_path / "filter_labels.jsonl")
    assert (report.written, report.left_out) == (3, 1)
    built = build_filter_labels(report.path, RejectionLog(strict=True))["train"]
    names = built.features["label"].names
    assert [(row["url"], names[row["label"]], row["annotator"]) for row in built] == [
        ("file:///photos/a.png", "relational", "alice,bob"),
        ("file:///photos/b.png", "not_relational", "alice"),
        ("https://example.com/d.jpg", "relational", "bob"),
    ]
    assert built[0]["image_hash"] == url_image_hash(image_url("/photos/a.png"))


def test_seed_group_export_round_trips_through_the_builder(store, tmp_path):
    alice, bob = sign_up(store, "alice"), sign_up(store, "bob")
    urls = [[f"https://example.com/{group}-{index}.jpg" for index in range(3)] for group in range(3)]
    store.record_group_verdict(alice, 0, "accept", "{Object}s in a row", "{Object}s in a row", urls[0])
    store.record_group_verdict(alice, 1, "reject", "{Object} <b>odd</b>", "{Object} <b>odd</b>", urls[1])
    store.record_group_verdict(alice, 2, "edit", "a {Object} that grows", "a red ball that grows", urls[2])
    store.record_group_verdict(bob, 0, "edit", 'a row of {Object}s, "quoted"', "{Object}s in a row", urls[0])
    report = export_seed_groups(store.group_verdicts(), tmp_path / "seed_group.json")
    assert (report.written, report.left_out) == (2, 1)
    document = json.loads(report.path.read_text())
    assert document[0]["anonymous_caption"] == '"a row of {Object}s, "quoted""'  # wrapped as the official file
    built = build_seed_groups(report.path, RejectionLog(strict=True))["seed_groups"]["train"]
    assert [(row["anonymous_caption"], row["image_urls"]) for row in built] == [
        ('a row of {Object}s, "quoted"', urls[0]),
        ("a {Object} that grows", urls[2]),
    ]
    with pytest.raises(ValueError, match="cannot be empty"):
        store.record_group_verdict(alice, 2, "edit", "  ", "x", urls[2])


def test_a_garbage_database_file_is_a_clear_error_naming_it(tmp_path, capsys):
    garbage = tmp_path / "judgements.sqlite"
    garbage.write_bytes(b"this is not a database\n" * 200)
    with pytest.raises(ValueError, match=f"{garbage}: not a judgements database"):
        JudgementStore(garbage)
    from training.cli import run_program

    status = run_program(
        studies_cli, ["results", "--db", str(garbage), "--output", str(tmp_path / "out")], "studies", True
    )
    error = capsys.readouterr().err.strip()
    assert status == 2 and error.startswith(f"studies results: error: {garbage}: not a judgements database")
    assert garbage.read_bytes() == b"this is not a database\n" * 200  # left as it was


def test_a_locked_database_is_a_clear_error_and_the_judgement_can_be_sent_again(store):
    alice = sign_up(store, "alice")
    impatient = JudgementStore(store.path, lock_timeout_s=0.2)
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreLockedError, match=f"{store.path}: the database stayed locked by another process"):
            impatient.record_label(alice, "/photos/a.png", True)
        assert len(JudgementStore(store.path, lock_timeout_s=0.2).labels()) == 0  # reading is not blocked (WAL)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    impatient.record_label(alice, "/photos/a.png", True)
    assert len(store.labels()) == 1
