"""The study tabs of the web app as annotators use them, in headless Chromium: sign in with a token, label images
with the keyboard and resume, verify / edit / reject seed groups with the leak checker's flags, make A/B choices
with the sides hidden; every answer checked in the database. Screenshots go to each test's tmp folder (with
RELSIM_STUDIES_SCREENSHOTS=DIR, also to DIR)."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.sync_api import expect
from studies_helpers import SIDE_SEED
from web_app_helpers import ACTION_TIMEOUT_MS, free_port, screenshot

from training.hub_data.seed_groups import build_seed_groups
from training.hub_data.validation import RejectionLog
from training.search.query import search
from training.studies.__main__ import main as studies_cli
from training.studies.ab_results import win_rates, win_rates_markdown
from training.studies.judgement_store import JudgementStore
from training.studies.label_agreement import agreement_markdown, pairwise_agreement


ROOT = Path(__file__).resolve().parents[1]
# a loaded 2-core machine: an A/B trial embeds its query and searches both methods before the page updates
expect.set_options(timeout=ACTION_TIMEOUT_MS)


def keep_screenshot(page, tmp_path, name):
    path = screenshot(page, tmp_path, name)
    folder = os.environ.get("RELSIM_STUDIES_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(folder) / path.name)
    return path


def sign_in(page, app, name, token=None):
    page.goto(app.url)
    page.get_by_role("tab", name="Annotator").click()
    page.locator("#annotator-name textarea").fill(name)
    page.locator("#annotator-token input").fill(app.tokens.get(name, "") if token is None else token)
    page.locator("#sign-in").click()


def open_tab(page, name):
    page.get_by_role("tab", name=name).click()


def test_labelling_with_the_keyboard_is_stored_per_annotator_and_resumes(studies_app, browser_page, tmp_path):
    page, store = browser_page, JudgementStore(studies_app.db)
    images = [entry.path for entry in studies_app.index.entries]
    sign_in(page, studies_app, "alice")
    expect(page.locator("#annotator-status")).to_have_text("Signed in as alice.")
    open_tab(page, "Label images")
    progress = page.locator("#label-progress")
    expect(progress).to_have_text(f"alice: image 1 of {len(images)} (0 labelled)")
    expect(page.locator("#label-image figcaption")).to_have_text("counting/00.png")
    page.wait_for_function("() => document.querySelector('#label-image img')?.complete")
    assert page.locator("#label-image img").evaluate("image => image.naturalWidth") == 56  # served
    keep_screenshot(page, tmp_path, "studies-label")
    for count, key in enumerate("yny", start=1):
        page.keyboard.press(key)
        expect(progress).to_have_text(f"alice: image {count + 1} of {len(images)} ({count} labelled)")
    rows = store.labels()
    assert [(row.annotator, row.image, row.relational) for row in rows] == [
        ("alice", images[0], True),
        ("alice", images[1], False),
        ("alice", images[2], True),
    ]
    # typing in a text field labels nothing
    page.get_by_role("tab", name="Annotator").click()
    page.locator("#annotator-name textarea").press("y")
    assert len(store.labels()) == 3

    # a new browser session resumes where alice left off
    page.context.clear_cookies()
    sign_in(page, studies_app, "alice")
    open_tab(page, "Label images")
    expect(progress).to_have_text(f"alice: image 4 of {len(images)} (3 labelled)")

    # bob labels the same images by clicking; the results tab shows their agreement
    sign_in(page, studies_app, "bob")
    open_tab(page, "Label images")
    expect(progress).to_have_text(f"bob: image 1 of {len(images)} (0 labelled)")
    for count, button in enumerate(("#label-yes", "#label-yes", "#label-no"), start=1):
        page.locator(button).click()
        expect(progress).to_have_text(f"bob: image {count + 1} of {len(images)} ({count} labelled)")
    assert [(row.annotator, row.relational) for row in store.labels()[3:]] == [("bob", True), ("bob", True),
                                                                               ("bob", False)]  # fmt: skip
    open_tab(page, "Results")
    page.locator("#results-refresh").click()
    # alice 1 0 1, bob 1 1 0: agreement 1/3; chance (2/3)(2/3) + (1/3)(1/3) = 5/9; kappa = (1/3 - 5/9)/(4/9) = -0.5
    expect(page.locator("#results-kappa")).to_contain_text("alice vs bob")
    expect(page.locator("#results-kappa tbody tr")).to_have_text(["alice vs bob 3 1 -0.500"], use_inner_text=True)
    keep_screenshot(page, tmp_path, "studies-results-kappa")


def test_verifying_seed_groups_shows_leak_flags_and_records_accept_edit_reject(studies_app, browser_page, tmp_path):
    page, store = browser_page, JudgementStore(studies_app.db)
    sign_in(page, studies_app, "bob")
    open_tab(page, "Verify groups")
    progress, caption, flags = page.locator("#group-progress"), page.locator("#group-caption textarea"), None
    flags = page.locator("#group-flags")
    expect(progress).to_have_text("bob: group 0 (1 of 3), 2 images")
    expect(caption).to_have_value("{Object}s in a row, growing larger step by step")  # the outer quotes removed
    expect(flags).to_contain_text("Leak check: ok")
    images = page.locator("#group-images img")
    expect(images).to_have_count(2)
    page.wait_for_function("() => [...document.querySelectorAll('#group-images img')].every(image => image.complete)")
    assert images.evaluate_all("images => images.map(image => image.naturalWidth)") == [56, 56]  # served
    keep_screenshot(page, tmp_path, "studies-verify")
    page.locator("#group-accept").click()

    expect(progress).to_have_text("bob: group 1 (2 of 3), 2 images")
    expect(flags).to_contain_text("flagged")
    expect(flags).to_contain_text("no placeholder")
    expect(flags).to_contain_text("leaks 'stars'")
    page.locator("#group-edit").click()  # unchanged: nothing recorded
    expect(progress).to_have_text("The caption is unchanged: edit it first, or press Accept.")
    caption.fill("{Object}s mirrored on either side of a line")
    expect(flags).to_contain_text("Leak check: ok")  # re-checked as typed
    page.locator("#group-edit").click()

    expect(progress).to_have_text("bob: group 2 (3 of 3), 3 images")
    expect(flags).to_contain_text("leaks 'teal'")
    expect(page.locator("#group-images .missing")).to_have_text("not on this machine: https://example.com/r.jpg")
    page.locator("#group-reject").click()
    expect(progress).to_have_text("bob: all 3 groups verified.")

    rows = [(row.annotator, row.group_id, row.verdict, row.caption) for row in store.group_verdicts()]
    assert rows == [
        ("bob", 0, "accept", "{Object}s in a row, growing larger step by step"),
        ("bob", 1, "edit", "{Object}s mirrored on either side of a line"),
        ("bob", 2, "reject", "{Object}s around a teal ring"),
    ]
    exported = tmp_path / "seed_group.json"
    studies_cli(["export-seed-groups", "--db", str(studies_app.db), "--output", str(exported)])
    built = build_seed_groups(exported, RejectionLog(strict=True))["seed_groups"]["train"]
    source = json.loads(studies_app.seed_groups.read_text())
    assert [(row["anonymous_caption"], row["image_urls"]) for row in built] == [
        ("{Object}s in a row, growing larger step by step", source[0]["image_urls"]),
        ("{Object}s mirrored on either side of a line", source[1]["image_urls"]),
    ]


def shown_paths(page, panel):
    sources = page.locator(f"#{panel} img").evaluate_all("images => images.map(image => image.getAttribute('src'))")
    from urllib.parse import unquote

    return [unquote(source.split("file=", 1)[1]) for source in sources]


def test_ab_choices_are_recorded_with_sides_drawn_at_random_and_hidden_from_the_page(
    studies_app, browser_page, tmp_path
):
    page, store = browser_page, JudgementStore(studies_app.db)
    sign_in(page, studies_app, "alice")
    open_tab(page, "A/B study")
    progress = page.locator("#ab-progress")
    choices = ["1", "2", "0", "2", "1", "1"]
    for count, key in enumerate(choices, start=1):
        expect(progress).to_have_text(f"alice: query {count} of 16")
        query = shown_paths(page, "ab-query")[0]
        left, right = shown_paths(page, "ab-left"), shown_paths(page, "ab-right")
        relsim = [hit.path for hit in search(studies_app.index, studies_app.model, image=query, k=3)]
        heads = random.Random(f"{SIDE_SEED}:alice:{query}").random() < 0.5
        assert (left if heads else right) == relsim  # the relsim side is where the secret coin put it
        panels = page.locator("#ab-left, #ab-right, #ab-query").evaluate_all("nodes => nodes.map(n => n.innerHTML)")
        for html in panels:
            html = html.replace("relsim-hit", "").replace("relsim-results", "")  # the shared card styles
            assert "relsim" not in html.lower() and "colour" not in html.lower() and "score" not in html.lower()
        if count == 1:
            keep_screenshot(page, tmp_path, "studies-ab")
        page.keyboard.press(key)
    expect(progress).to_have_text("alice: query 7 of 16")
    rows = store.ab_judgements()
    assert [row.choice for row in rows] == ["left", "right", "neither", "right", "left", "left"]
    assert len({row.query for row in rows}) == 6 and {row.annotator for row in rows} == {"alice"}
    lefts = {row.left_method for row in rows}
    assert lefts == {"relsim", "colour-histogram"}  # both assignments occur (fixed seed: checked, not by luck)
    for row in rows:
        expected = random.Random(f"{SIDE_SEED}:alice:{row.query}").random() < 0.5
        assert (row.left_method == "relsim") == expected
        assert {row.left_method, row.right_method} == {"relsim", "colour-histogram"}

    open_tab(page, "Results")
    page.locator("#results-refresh").click()
    table_rows = page.locator("#results-ab tbody tr")
    expected_rows = win_rates(rows)
    expect(table_rows).to_have_count(2)
    for shown, row in zip(table_rows.all(), expected_rows, strict=True):
        cells = shown.locator("td").all_inner_texts()
        assert cells == [row.method, row.opponent, "6", str(row.wins), str(row.losses), "1", f"{row.rate:.1%}",
                         f"{row.low:.1%} – {row.high:.1%}"]  # fmt: skip
    expect(page.locator("#results-chart")).to_be_visible()
    keep_screenshot(page, tmp_path, "studies-results")


def test_a_wrong_token_or_a_markup_name_is_refused_and_writes_nothing(studies_app, browser_page):
    page, store = browser_page, JudgementStore(studies_app.db)
    before = (len(store.labels()), len(store.group_verdicts()), len(store.ab_judgements()))
    sign_in(page, studies_app, "alice", token=studies_app.tokens["bob"])
    expect(page.locator("#annotator-status")).to_have_text(
        "Sign-in refused: annotator 'alice': unknown name or wrong token"
    )
    sign_in(page, studies_app, '<img src=x onerror="document.title=1">', token="x")
    expect(page.locator("#annotator-status")).to_contain_text("Sign-in refused: annotator '<img src=x")
    assert page.locator("#annotator-status img").count() == 0 and page.title() != "1"
    open_tab(page, "Label images")
    page.keyboard.press("y")
    expect(page.locator("#label-progress")).to_have_text("Sign in first (tab Annotator).")
    assert (len(store.labels()), len(store.group_verdicts()), len(store.ab_judgements())) == before


def test_the_app_binds_to_loopback_only(studies_app):
    assert studies_app.app.blocks.server_name == "127.0.0.1"
    assert studies_app.app.raw_get("/gradio_api/file=" + str(studies_app.db))[0] in (403, 404)


def test_no_run_history_keeps_typed_tokens_in_the_browser(studies_app):
    assert studies_app.app.raw_get("/gradio_api/runs")[0] == 404
    status, config = studies_app.app.raw_get("/config")
    assert status == 200 and json.loads(config)["run_history"] is False


def wait_for_server(url, process, seconds=240):
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the app exited with {process.returncode}: {process.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/config", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"no app at {url} after {seconds} s")


def test_killing_the_server_mid_session_loses_no_submitted_judgement(studies_app, browser_page, tmp_path):
    db = tmp_path / "judgements.sqlite"
    token = JudgementStore(db).add_annotator("carol")
    port = free_port()
    command = [sys.executable, "-m", "training.studies", "app", "--index", str(studies_app.scratch / "index"),
               "--db", str(db), "--port", str(port), "--baseline", "colour-histogram"]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "GRADIO_TEMP_DIR": str(tmp_path / "uploads")}
    server = subprocess.Popen(command, cwd=tmp_path, env=environment, stderr=subprocess.PIPE, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_server(url, server)
        page = browser_page
        page.goto(url)
        page.get_by_role("tab", name="Annotator").click()
        page.locator("#annotator-name textarea").fill("carol")
        page.locator("#annotator-token input").fill(token)
        page.locator("#sign-in").click()
        expect(page.locator("#annotator-status")).to_have_text("Signed in as carol.")
        open_tab(page, "Label images")
        progress = page.locator("#label-progress")
        expect(progress).to_have_text("carol: image 1 of 16 (0 labelled)")
        for count, key in enumerate("nyn", start=1):
            page.keyboard.press(key)
            expect(progress).to_have_text(f"carol: image {count + 1} of 16 ({count} labelled)")
    finally:
        os.killpg(server.pid, signal.SIGKILL)  # no shutdown of any kind
        server.wait(timeout=30)
    assert server.returncode == -signal.SIGKILL
    rows = JudgementStore(db).labels()
    assert [(row.annotator, row.relational) for row in rows] == [("carol", False), ("carol", True), ("carol", False)]
    import sqlite3

    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_seed_group_entries_outside_the_collection_are_reported_at_start_up_and_never_served(
    studies_app, browser_page, tmp_path, caplog
):
    from studies_helpers import serve_studies_app

    collection, root = studies_app.collection, tmp_path / "groups"
    extra = tmp_path / "extra-images"  # the operator's --seed-group-images folder
    extra.mkdir()
    shutil.copyfile(collection / "radial" / "00.png", extra / "sketch.png")
    (extra / "notes.txt").write_text("not an image")
    root.mkdir()
    (root / "secret.png").write_bytes((collection / "mosaic" / "00.png").read_bytes())  # beside the json: not allowed
    (collection / "notes.txt").write_text("in the collection folder, but not indexed")
    (collection / "link-out.png").symlink_to(root / "secret.png")
    hostile = [
        "/etc/passwd",
        "file:///etc/hostname",
        "../../../../../../../etc/passwd",
        "secret.png",
        str(collection / "notes.txt"),
        str(collection / "link-out.png"),
        str(extra / "notes.txt"),
        f"file://{collection}/..%2F..%2Fgroups%2Fsecret.png",
    ]
    legit = [str(collection / "progression" / "00.png"), str(extra / "sketch.png")]
    groups = [{"anonymous_caption": "{Object}s in a row", "image_urls": [legit[0], *hostile[:4]]},
              {"anonymous_caption": "{Object}s around a ring", "image_urls": [legit[1], *hostile[4:]]}]  # fmt: skip
    seed_groups = root / "seed_group.json"
    seed_groups.write_text(json.dumps(groups))
    db = tmp_path / "judgements.sqlite"
    token = JudgementStore(db).add_annotator("dora")
    settings = {"seed_groups": seed_groups, "seed_group_images": [extra], "baseline": "colour-histogram", "k": 3}
    with caplog.at_level("WARNING", logger="training.studies"):
        running = serve_studies_app(studies_app.scratch / "index", db, studies_app.model, **settings)
        app = running.__enter__()
    try:
        report = [record.getMessage() for record in caplog.records if "not served" in record.getMessage()]
        expected = [(0, 1, hostile[0]), (0, 2, hostile[1]), (0, 3, hostile[2]), (0, 4, hostile[3]),
                    (1, 1, hostile[4]), (1, 2, hostile[5]), (1, 3, hostile[6]), (1, 4, hostile[7])]  # fmt: skip
        assert len(report) == len(expected), report
        for line, (group, entry, url) in zip(report, expected, strict=True):
            assert line.startswith(f"{seed_groups}: group {group}, image_urls[{entry}] {url!r}: "), line
        assert "not an image file" in report[6] and "not an indexed image" in report[4]

        targets = [
            "/etc/passwd",
            "/etc/hostname",
            str(root / "secret.png"),
            str(collection / "notes.txt"),
            str(collection / "link-out.png"),
            str(extra / "notes.txt"),
            f"{collection}/radial/../notes.txt",
        ]
        for path in targets:
            status, body = app.raw_get("/gradio_api/file=" + quote(path))
            assert status in (403, 404), (path, status)
            assert b"root:" not in body and b"not indexed" not in body and b"not an image" not in body, path
        for path in legit:
            assert app.raw_get("/gradio_api/file=" + quote(path)) == (200, Path(path).read_bytes())

        page = browser_page
        page.goto(app.url)
        page.get_by_role("tab", name="Annotator").click()
        page.locator("#annotator-name textarea").fill("dora")
        page.locator("#annotator-token input").fill(token)
        page.locator("#sign-in").click()
        open_tab(page, "Verify groups")
        expect(page.locator("#group-progress")).to_have_text("dora: group 0 (1 of 2), 5 images")
        expect(page.locator("#group-images img")).to_have_count(1)
        expect(page.locator("#group-images .missing")).to_have_count(4)
        expect(page.locator("#group-images .missing").first).to_contain_text("not served (not an indexed image")
        page.wait_for_function("() => document.querySelector('#group-images img')?.complete")
        assert page.locator("#group-images img").evaluate("image => image.naturalWidth") == 56
        keep_screenshot(page, tmp_path, "studies-verify-refused")
    finally:
        running.__exit__(None, None, None)


def test_the_results_endpoint_answers_only_a_signed_in_annotator(studies_app):
    from gradio_client import Client

    client = Client(studies_app.url, verbose=False)
    kappa, table, chart = client.predict(api_name="/results")
    assert (kappa, table, chart) == ("Sign in first (tab **Annotator**).", "", None)
    client.predict("alice", studies_app.tokens["bob"], api_name="/sign_in")  # a wrong token signs no one in
    assert client.predict(api_name="/results")[0] == "Sign in first (tab **Annotator**)."
    status = client.predict("alice", studies_app.tokens["alice"], api_name="/sign_in")
    assert status == "Signed in as **alice**."
    kappa, table, _ = client.predict(api_name="/results")
    store = JudgementStore(studies_app.db)
    assert kappa == agreement_markdown(pairwise_agreement(store.labels()))
    assert table == win_rates_markdown(win_rates(store.ab_judgements()))


def test_the_app_command_refuses_a_seed_group_images_folder_that_does_not_exist(tmp_path):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(NotADirectoryError, match=f"--seed-group-images {missing}: not a folder"):
        studies_cli(["app", "--index", str(tmp_path / "index"), "--db", str(tmp_path / "db.sqlite"),
                     "--seed-group-images", str(missing)])  # fmt: skip
