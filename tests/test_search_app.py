"""The search web app as a person uses it, in headless Chromium: upload an image, type a relation, click, page the
gallery, pick an image; what the page shows must be what the Python API returns. And the server's file route serves
the collection and nothing outside it.

Screenshots go to each test's tmp folder. They show the suite's briefly trained tiny relsim over temporary folders;
docs/search-app.png (the README's picture) is taken from the demo's model instead, as docs/search.md describes.
"""

import json
import re
import shutil
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import PIL.Image
from playwright.sync_api import expect
from web_app_helpers import RunningApp, free_port, screenshot

from training.evaluation.methods.attribute_baselines import ColourHistogramMethod
from training.search.__main__ import main as search_cli
from training.search.app import _header, render_neighbours
from training.search.query import query_vector, search
from training.search.search_service import Neighbour
from training.search.why import CaptionBank, why


RELATION = "a {Subject} shown at several stages of growth"
K = 5


def relative(app, path) -> str:
    return Path(path).relative_to(app.collection).as_posix()


def expected_relsim(app, image=None, text=None) -> list[tuple[str, str, str]]:
    """(file name, score, why label) of relsim's neighbours, from the Python API the app is built on."""
    hits = search(app.index, app.model, image=image, text=text, k=K)
    query = query_vector(app.model, image, text)
    bank = CaptionBank.read("synthetic", app.model)
    vectors = app.index.stored_vectors([hit.id for hit in hits])
    return [
        (relative(app, hit.path), f"{hit.score:.4f}", why(bank, query, vector, top=1)[0].caption)
        for hit, vector in zip(hits, vectors, strict=True)
    ]


def colour_histogram_scores(app, query: Path) -> dict[str, float]:
    """Cosine of every other indexed image to `query` by colour histogram, computed here without the app's code."""
    method = ColourHistogramMethod()
    names = [relative(app, entry.path) for entry in app.index.entries]
    images = [PIL.Image.open(entry.path).convert("RGB") for entry in app.index.entries]
    vectors = method.embed(method.preprocess(images), names)
    query_vector_ = method.embed(method.preprocess([PIL.Image.open(query).convert("RGB")]), ["query"])[0]
    scores = (vectors @ query_vector_).tolist()
    return {name: score for name, score in zip(names, scores, strict=True) if name != relative(app, query)}


def shown(page, panel: str) -> list[tuple[str, str, str]]:
    """(file name, score, why label) of each result card in a panel, as the page shows them."""
    cards = page.locator(f"#{panel} .relsim-hit").all()
    return [
        tuple(card.locator(selector).inner_text() for selector in (".hit-name", ".hit-score", ".hit-why"))
        for card in cards
    ]


def wait_for_names(page, panel: str, names: list[str]) -> None:
    expect(page.locator(f"#{panel} .hit-name")).to_have_text(names)


def upload(page, image: Path) -> None:
    page.locator("#query-image input[type=file]").set_input_files(str(image))
    expect(page.locator("#query-image img").first).to_be_visible()  # uploaded: the preview is shown


def test_uploaded_image_shows_relsim_and_baseline_neighbours_with_scores_and_why_labels(
    search_app, browser_page, tmp_path
):
    page = browser_page
    query = search_app.collection / "progression" / "00.png"
    page.goto(search_app.url)
    upload(page, query)
    page.locator("#search-button").click()

    expected = expected_relsim(search_app, image=query)
    assert len({score for _, score, _ in expected}) > 1, (
        "the fixture model scores every image alike: no ranking to check"
    )
    wait_for_names(page, "relsim-results", [name for name, _, _ in expected])
    assert shown(page, "relsim-results") == expected
    assert "progression/00.png" not in [name for name, _, _ in expected]  # the query itself is left out

    baseline_scores = colour_histogram_scores(search_app, query)
    best = sorted(baseline_scores.values(), reverse=True)[:K]
    expect(page.locator("#baseline-results .hit-score")).to_have_text([f"{score:.4f}" for score in best])
    bank = CaptionBank.read("synthetic", search_app.model)
    relsim_query = query_vector(search_app.model, query)
    for name, score, label in shown(page, "baseline-results"):
        assert score == f"{baseline_scores[name]:.4f}"
        result = search_app.index.stored_vectors([search_app.index.find(search_app.collection / name)])[0]
        assert label == why(bank, relsim_query, result, top=1)[0].caption
    expect(page.locator("#search-status")).to_contain_text("5 neighbours by relsim, 5 by colour-histogram")
    # every thumbnail loaded through the file route (naturalWidth is 0 for a refused or broken image)
    widths = page.locator(".relsim-hit img").evaluate_all("images => images.map(image => image.naturalWidth)")
    assert widths == [56] * (2 * K)

    path = screenshot(page, tmp_path, "search-by-image")
    assert path.stat().st_size > 10_000


def test_the_header_names_a_collection_inside_the_working_directory_by_its_relative_path(tmp_path, monkeypatch):
    def service(folder):
        return SimpleNamespace(
            index=[0] * 400, folder=folder, model=SimpleNamespace(name="run/final"), baseline_name=None
        )

    monkeypatch.chdir(tmp_path)
    header = _header(service(tmp_path / "held-out-pool"))
    assert "400 images in `held-out-pool` · model `run/final` · attribute baseline: `none`" in header
    assert str(tmp_path) not in header
    assert "400 images in `.` ·" in _header(service(tmp_path))
    outside = tmp_path.parent / "elsewhere"
    assert f"400 images in `{outside}` ·" in _header(service(outside))
    assert "400 images in `400 listed files` ·" in _header(service(None))


def test_typed_relation_shows_relsim_neighbours_and_says_the_baseline_needs_an_image(
    search_app, browser_page, tmp_path
):
    page = browser_page
    page.goto(search_app.url)
    page.locator("#relation textarea").fill(RELATION)
    page.locator("#search-button").click()

    expected = expected_relsim(search_app, text=RELATION)
    wait_for_names(page, "relsim-results", [name for name, _, _ in expected])
    assert shown(page, "relsim-results") == expected
    expect(page.locator("#baseline-results")).to_contain_text("compares pictures only")
    assert page.locator("#baseline-results .relsim-hit").count() == 0
    screenshot(page, tmp_path, "search-by-relation")


def test_searching_with_no_query_asks_for_one(search_app, browser_page):
    page = browser_page
    page.goto(search_app.url)
    page.locator("#search-button").click()
    expect(page.locator("#search-status")).to_have_text("Give a query: upload or pick an image, or type a relation.")
    assert page.locator(".relsim-hit").count() == 0


def test_image_and_relation_together_search_with_their_weighted_query(search_app, browser_page):
    page = browser_page
    query = search_app.collection / "counting" / "01.png"
    page.goto(search_app.url)
    upload(page, query)
    page.locator("#relation textarea").fill(RELATION)
    page.locator("#search-button").click()

    expected = expected_relsim(search_app, image=query, text=RELATION)
    assert expected != expected_relsim(search_app, image=query)  # the text moved the query
    wait_for_names(page, "relsim-results", [name for name, _, _ in expected])
    assert shown(page, "relsim-results") == expected


def test_gallery_pages_through_the_collection_and_a_picked_image_becomes_the_query(search_app, browser_page, tmp_path):
    page = browser_page
    names = [relative(search_app, entry.path) for entry in search_app.index.entries]
    assert len(names) == 32
    page.goto(search_app.url)
    page.get_by_role("tab", name="Browse").click()
    gallery_captions = page.locator("#collection .caption-label")
    label = page.locator("#page-label")

    expect(label).to_have_text("page 1 of 3 (32 images)")
    expect(gallery_captions).to_have_text(names[:12])
    page.locator("#next-page").click()
    expect(label).to_have_text("page 2 of 3 (32 images)")
    expect(gallery_captions).to_have_text(names[12:24])
    page.locator("#next-page").click()
    page.locator("#next-page").click()  # past the last page: stays there
    expect(label).to_have_text("page 3 of 3 (32 images)")
    expect(gallery_captions).to_have_text(names[24:])
    screenshot(page, tmp_path, "browse-page-3")
    page.locator("#previous-page").click()
    expect(label).to_have_text("page 2 of 3 (32 images)")

    page.locator("#collection .thumbnail-item").nth(3).click()
    picked = search_app.collection / names[12 + 3]
    expected = expected_relsim(search_app, image=picked)
    wait_for_names(page, "relsim-results", [name for name, _, _ in expected])
    assert shown(page, "relsim-results") == expected
    expect(page.get_by_role("tab", name="Search")).to_have_attribute("aria-selected", "true")
    screenshot(page, tmp_path, "picked-from-gallery")


def file_route(path: str) -> str:
    return "/gradio_api/file=" + path


def test_file_route_serves_indexed_images_and_refuses_everything_outside_the_collection(search_app, browser_page):
    collection = search_app.collection
    secret = search_app.scratch / "secret.txt"
    secret.write_text("not for the web")
    (collection / "link-out.png").symlink_to(secret)
    image = collection / "mosaic" / "02.png"

    status, body = search_app.app.raw_get(file_route(quote(str(image))))
    assert (status, body) == (200, image.read_bytes())
    refused = [
        "/etc/passwd",
        str(secret),
        f"{collection}/../secret.txt",  # sent as written: no client normalises the dots away
        f"{collection}/mosaic/../../secret.txt",
        quote(f"{collection}/../secret.txt", safe=""),  # every slash and dot percent-encoded
        f"{collection}/%2e%2e/secret.txt",
        "../../../../../../etc/passwd",
        f"{collection}/link-out.png",  # a link inside the collection that leads out of it
        str(search_app.scratch / "index" / "manifest.jsonl"),
    ]
    for path in refused:
        status, body = search_app.app.raw_get(file_route(path))
        assert status in (403, 404), (path, status)
        assert b"not for the web" not in body and b"root:" not in body, path
    # and through the browser's own request stack
    response = browser_page.request.get(search_app.url + file_route("/etc/passwd"))
    assert response.status == 403


def test_server_binds_to_loopback_only(search_app):
    assert search_app.app.blocks.server_name == "127.0.0.1"
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", search_app.url)


def test_the_app_command_serves_the_index_with_its_recorded_model_on_loopback(search_app, monkeypatch):
    import training.search.app

    launched = []

    def launch_without_blocking(*arguments, **settings):
        launched.append(real_launch(*arguments, **{**settings, "block": False}))
        return launched[-1]

    real_launch = training.search.app.launch_app
    monkeypatch.setattr(training.search.app, "launch_app", launch_without_blocking)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(search_app.scratch / "cli-uploads"))
    port = free_port()
    search_cli(["app", "--index", str(search_app.scratch / "index"), "--port", str(port), "--baseline", "pixel"])
    try:
        served = RunningApp(launched[0].local_url.rstrip("/"), launched[0])
        assert served.url == f"http://127.0.0.1:{port}"
        status, config = served.raw_get("/config")
        assert status == 200 and json.loads(config)["title"] == "relsim search"
        assert served.raw_get(file_route("/etc/passwd"))[0] == 403
    finally:
        launched[0].close()


def neighbour(name: str, why_label: str) -> Neighbour:
    return Neighbour(1, 0, f"/photos/{name}", name, 0.5, why_label, 0.25)


def test_result_cards_escape_file_names_and_labels():
    page_html = render_neighbours("relsim", [neighbour("<img src=x onerror=alert(1)>.png", "a <b>{Subject}</b>")], "")
    assert "<img src=x" not in page_html and "<b>" not in page_html
    assert "&lt;img src=x onerror=alert(1)&gt;.png" in page_html
    assert "a &lt;b&gt;{Subject}&lt;/b&gt;" in page_html
    assert 'src="gradio_api/file=/photos/%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E.png"' in page_html


def test_file_route_serves_only_the_indexed_files_not_the_rest_of_the_collection_folder(search_app):
    collection = search_app.collection
    beside = {
        collection / "notes.txt": b"private notes",
        collection / ".env": b"API_KEY=not-for-the-web",
        collection / "progression" / "draft.txt": b"draft caption",
    }
    for path, content in beside.items():
        path.write_bytes(content)
    unindexed = collection / "progression" / "99.png"  # an image, but added after indexing: not in the manifest
    shutil.copyfile(collection / "progression" / "00.png", unindexed)
    indexed = [entry.path for entry in search_app.index.entries]
    assert str(unindexed) not in indexed and not any(str(path) in indexed for path in beside)

    for path in [*beside, unindexed]:
        for spelled in (str(path), quote(str(path)), f"{collection}/mosaic/../{path.relative_to(collection)}"):
            status, body = search_app.app.raw_get(file_route(spelled))
            assert status == 403, (spelled, status)
            assert body == b"File not allowed.", spelled
    status, body = search_app.app.raw_get("/gradio_api/file/" + str(collection / ".env"))  # the deprecated route
    assert (status, body) == (403, b"File not allowed.")
    # Gradio would fetch a public URL and relay it (an open proxy): refused before anything is fetched
    for url in ("https://example.com/cat.png", "http://example.com/x", quote("https://example.com/cat.png")):
        assert search_app.app.raw_get(file_route(url)) == (403, b"File not allowed."), url
    for path in indexed[:3] + indexed[-2:]:
        assert search_app.app.raw_get(file_route(quote(path))) == (200, Path(path).read_bytes())


def proc_status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in KiB."""
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def write_pixel_bomb(path: Path, side: int = 12_000) -> Path:
    """A 1-bit PNG of `side` x `side` pixels: a few hundred KB on disk, 432 MB once decoded to RGB."""
    PIL.Image.new("1", (side, side)).save(path, optimize=True)
    return path


def test_an_uploaded_pixel_bomb_is_refused_from_its_header_quickly_naming_only_the_file(search_app, tmp_path):
    from gradio_client import Client, handle_file

    bomb = write_pixel_bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 200_000
    client = Client(search_app.url, verbose=False)
    Path("/proc/self/clear_refs").write_text("5")  # peak resident memory (VmHWM) starts again from now (Linux)
    resident = proc_status_kib("VmRSS")
    started = time.perf_counter()
    status, relsim_html, _ = client.predict(handle_file(str(bomb)), "", 0.5, api_name="/run_search")
    elapsed = time.perf_counter() - started
    peak_growth_mib = (proc_status_kib("VmHWM") - resident) / 1024
    assert status == (
        "Cannot search: cannot read image bomb.png: 12000x12000 is 144,000,000 pixels, more than the limit "
        "max_image_pixels=67,108,864; downscale the file or raise the limit (None disables it)"
    )
    assert "relsim-hit" not in relsim_html
    # the server runs in this process: decoding the upload to RGB (Gradio's image_mode="RGB") grew it by 714 MiB
    # and took 1.9-3.6 s here; refused from the header: 29 MiB, 0.27 s
    assert peak_growth_mib < 100, peak_growth_mib
    assert elapsed < 2.0, elapsed
    uploads = search_app.scratch / "gradio-uploads"
    assert [path.name for path in uploads.rglob("bomb*")] == ["bomb.png"]  # no decoded copy written beside it


def test_an_unreadable_upload_is_named_by_its_file_name_not_its_path_on_the_server(search_app, browser_page, tmp_path):
    broken = tmp_path / "holiday photo.png"
    good = (search_app.collection / "radial" / "01.png").read_bytes()
    broken.write_bytes(good[: len(good) // 2])  # a valid header, then the data breaks off
    page = browser_page
    page.goto(search_app.url)
    page.locator("#query-image input[type=file]").set_input_files(str(broken))
    page.locator("#search-button").click()
    status = page.locator("#search-status")
    expect(status).to_contain_text("Cannot search: cannot read image holiday photo.png:")
    text = status.inner_text()
    assert "/" not in text and "gradio-uploads" not in text and str(tmp_path) not in text, text
    screenshot(page, tmp_path, "unreadable-upload")
