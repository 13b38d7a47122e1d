"""The relational-search web app (Gradio): query an indexed collection by image (uploaded, or picked from the
collection) or by relation text, and see relsim's neighbours beside an attribute baseline's, each with its score and
"why" label; browse the collection a page at a time.

    python -m training.search app --index photos.index            # http://127.0.0.1:7860

This module imports gradio (the `app` extra); the command line checks for it first, with the install hint.

Safety: the server binds to 127.0.0.1 unless told otherwise, and Gradio's file route serves only the indexed files
(the index's manifest: not a `notes.txt` or `.env` beside the photos; `served_files.ServedFiles`), the app's own
uploads and Gradio's cache: any other path, `../` included, is refused. An upload reaches relsim as a file, not as
decoded pixels, so an oversized image is refused from its header (relsim's `max_image_pixels`) before it is decoded;
messages name an upload by its file name, never by its path on the server.

The app is one `gr.Blocks` with tabs; other tools (the annotation and study screens) add theirs through
`extra_tabs`: callables run inside the app's `gr.Tabs()` context, each creating its own `gr.Tab`.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gradio as gr
from gradio_client.utils import encode_file_path
from starlette.middleware import Middleware

from modeling_relsim.image_decoding import UnreadableImageError
from training.search.search_service import GalleryPage, Neighbour, SearchService
from training.search.served_files import ServedFiles


logger = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULT_PORT = 7860
MAX_UPLOAD_SIZE = "50mb"
FILE_ROUTE = "gradio_api/file="
RELATION_EXAMPLE = "a {Subject} shown at several stages of growth"
SEARCH_TAB, BROWSE_TAB = "search", "browse"
STYLE = """
.relsim-results { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px; }
.relsim-hit { margin: 0; border: 1px solid var(--border-color-primary); border-radius: 6px; padding: 6px; }
.relsim-hit img { width: 100%; aspect-ratio: 1; object-fit: contain; background: var(--background-fill-secondary); }
.relsim-hit figcaption { font-size: 0.85em; line-height: 1.3; word-break: break-word; }
.relsim-hit .hit-score { font-weight: 600; font-variant-numeric: tabular-nums; }
.relsim-hit .hit-why { display: block; font-style: italic; }
.relsim-hit .hit-why-score { color: var(--body-text-color-subdued); }
"""


def file_url(path: str) -> str:
    """The URL (relative to the app's root) at which Gradio's file route serves an indexed file."""
    return FILE_ROUTE + encode_file_path(path)


def render_neighbours(method: str, neighbours: Sequence[Neighbour], empty: str) -> str:
    """HTML cards, one per neighbour: thumbnail, file name, score, "why" label and its score (all escaped)."""
    title = f"<h3>{html.escape(method)}</h3>"
    if not neighbours:
        return f'{title}<p class="relsim-empty">{html.escape(empty)}</p>'
    cards = []
    for hit in neighbours:
        name, why = html.escape(hit.name), html.escape(hit.why)
        cards.append(
            f'<figure class="relsim-hit" data-rank="{hit.rank}" data-name="{name}">'
            f'<img src="{html.escape(file_url(hit.path))}" alt="{name}" loading="lazy">'
            f'<figcaption><span class="hit-rank">{hit.rank}.</span> <span class="hit-name">{name}</span> '
            f'<span class="hit-score">{hit.score:.4f}</span>'
            f'<span class="hit-why" title="why they match">{why}</span>'
            f'<span class="hit-why-score">label fit {hit.why_score:.4f}</span></figcaption></figure>'
        )
    return f'{title}<div class="relsim-results" data-method="{html.escape(method)}">{"".join(cards)}</div>'


def without_server_path(message: str, image: str | None) -> str:
    """`message` with the query image's path on the server (an upload's lies in Gradio's temporary folder) replaced
    by its file name, the name the person uploaded it under."""
    if image:
        for spelled in sorted({image, str(Path(image).resolve())}, key=len, reverse=True):
            message = message.replace(spelled, Path(image).name)
    return message


def page_caption(page: GalleryPage) -> str:
    return f"page {page.number} of {page.pages} ({page.total} images)"


def shown_folder(folder: Path) -> str:
    """The collection folder as the page names it: relative to the working directory when it lies inside it, so a
    page started next to its collection (and a screenshot of it) shows no machine paths; else as indexed."""
    folder = Path(folder)
    return folder.relative_to(Path.cwd()).as_posix() if folder.is_relative_to(Path.cwd()) else str(folder)


def _header(service: SearchService) -> str:
    where = shown_folder(service.folder) if service.folder is not None else f"{len(service.index)} listed files"
    baseline = service.baseline_name or "none"
    return (
        f"## relsim: relational search\n{len(service.index)} images in `{where}` · model `{service.model.name}` · "
        f"attribute baseline: `{baseline}`. Upload or pick an image, or type a relation such as "
        f"*{RELATION_EXAMPLE}*, then **Search**."
    )


def build_app(service: SearchService, extra_tabs: Sequence[Callable[[], Any]] = ()) -> gr.Blocks:
    """The app's `gr.Blocks` (not launched).

    Args:
        service: the collection, model, caption bank and baseline the app shows.
        extra_tabs: callables run inside the app's `gr.Tabs()`, each adding its own `gr.Tab` (after Search and
            Browse).
    """
    baseline_title = f"{service.baseline_name} (attribute baseline)" if service.baseline else "attribute baseline"

    def nothing_found(message: str) -> tuple[str, str, str]:
        return message, render_neighbours("relsim", [], ""), render_neighbours(baseline_title, [], "")

    def run_search(image: str | None, text: str | None, text_weight: float) -> tuple[str, str, str]:

        if image is None and not (text and text.strip()):
            return nothing_found("Give a query: upload or pick an image, or type a relation.")
        try:
            results = service.find(image, text, text_weight)
        except (ValueError, UnreadableImageError) as error:
            logger.warning("search refused: %s", error)
            return nothing_found(f"Cannot search: {without_server_path(str(error), image)}")
        no_image = "The attribute baseline compares pictures only: give an image to see its neighbours."
        status = f"{len(results.relsim)} neighbours by relsim" + (
            f", {len(results.baseline)} by {service.baseline_name}." if results.baseline else "."
        )
        return (
            status,
            render_neighbours("relsim", results.relsim, "No neighbours found."),
            render_neighbours(baseline_title, results.baseline, no_image if service.baseline else "No baseline."),
        )

    def show_page(number: int) -> tuple[list[tuple[str, str]], str, int]:
        page = service.page(number)
        return page.images, page_caption(page), page.number

    def pick(number: int, selection: gr.SelectData) -> tuple[str, gr.Tabs]:
        path, _ = service.page(number).images[selection.index]
        return path, gr.Tabs(selected=SEARCH_TAB)

    with gr.Blocks(title="relsim search", analytics_enabled=False) as app:
        gr.Markdown(_header(service))
        with gr.Tabs() as tabs:
            with gr.Tab("Search", id=SEARCH_TAB), gr.Row():
                with gr.Column(scale=1, min_width=260):
                    # the file as uploaded (image_mode=None: Gradio neither decodes nor converts it), so relsim's
                    # pixel limit refuses an oversized image from its header
                    query_image = gr.Image(
                        label="Query image",
                        type="filepath",
                        image_mode=None,
                        sources=["upload"],
                        height=240,
                        elem_id="query-image",
                    )
                    relation = gr.Textbox(label="Relation text", placeholder=RELATION_EXAMPLE, elem_id="relation")
                    text_weight = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Text weight (when both are given)")
                    search_button = gr.Button("Search", variant="primary", elem_id="search-button")
                    status = gr.Markdown(elem_id="search-status")
                with gr.Column(scale=2):
                    relsim_results = gr.HTML(render_neighbours("relsim", [], ""), elem_id="relsim-results")
                with gr.Column(scale=2):
                    baseline_results = gr.HTML(elem_id="baseline-results")
            with gr.Tab("Browse", id=BROWSE_TAB):
                gr.Markdown("Click an image to search with it.")
                gallery = gr.Gallery(
                    label="Collection", columns=6, allow_preview=False, object_fit="contain", elem_id="collection"
                )
                with gr.Row():
                    previous_button = gr.Button("◀ Previous", elem_id="previous-page")
                    page_label = gr.Markdown(elem_id="page-label")
                    next_button = gr.Button("Next ▶", elem_id="next-page")
                page_number = gr.State(1)
            for add_tab in extra_tabs:
                add_tab()

        search_inputs = [query_image, relation, text_weight]
        search_outputs = [status, relsim_results, baseline_results]
        search_button.click(run_search, search_inputs, search_outputs)
        relation.submit(run_search, search_inputs, search_outputs)
        page_outputs = [gallery, page_label, page_number]
        app.load(show_page, gr.State(1), page_outputs)
        previous_button.click(lambda number: show_page(number - 1), page_number, page_outputs)
        next_button.click(lambda number: show_page(number + 1), page_number, page_outputs)
        gallery.select(pick, page_number, [query_image, tabs]).then(run_search, search_inputs, search_outputs)
    return app


def launch_kwargs(
    service: SearchService, host: str, port: int, share: bool, extra_files: Sequence[str] = ()
) -> dict[str, Any]:
    """The settings every launch of the app uses: where it binds, and what its file route may serve: the indexed
    files and `extra_files`, nothing else (not even other files of the collection folder)."""
    folders = sorted({*service.allowed_paths, *(str(Path(path).resolve().parent) for path in extra_files)})
    served = Middleware(ServedFiles, files=[*service.served_files, *extra_files], folders=folders)
    return {
        "server_name": host,
        "server_port": port,
        "share": share,
        "allowed_paths": folders,
        "blocked_paths": service.blocked_paths,
        "app_kwargs": {"middleware": [served]},
        # Gradio's run history keeps every call's inputs in the browser (an annotator's token included): off
        "run_history": False,
        "max_file_size": MAX_UPLOAD_SIZE,
        "ssr_mode": False,
        "css": STYLE,
    }


def launch_app(
    index_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    baseline: str | None = "auto",
    share: bool = False,
    *,
    model: Any = None,
    baseline_model: str | None = None,
    caption_bank: str | Path = "synthetic",
    device: str = "cpu",
    k: int = 8,
    page_size: int = 24,
    extra_tabs: Sequence[Callable[[], Any]] = (),
    block: bool = True,
) -> gr.Blocks:
    """Opens the index and serves the app until interrupted (or, with `block=False`, returns the running app; stop
    it with `.close()`).

    Args:
        index_dir: a search index folder (`python -m training.search index`), built from a folder or a list of files.
        host: the interface to bind; anything but loopback exposes the collection to the network (logged).
        port: the TCP port.
        baseline: "auto" (CLIP-I or DINO when their weights are on this machine, else the colour histogram), a
            method name (`training.search.baseline.BASELINE_NAMES`), or None for relsim alone.
        share: a public Gradio share link (off by default; it exposes the collection to the internet).
        model: the `SearchModel` (or its folder / hub id) that made the index; default the one the index records.
        baseline_model: the baseline's weights (folder or hub id) for CLIP-I / DINO.
        caption_bank: where "why" labels come from (see `training.search.why.read_caption_bank`).
        k: neighbours per method; page_size: images per gallery page.
        extra_tabs: more screens (see `build_app`).

    Raises:
        FileNotFoundError: `index_dir` holds no search index.
        ValueError: the model did not make the index, or an unknown baseline.
    """
    service = SearchService.open(
        index_dir, model, baseline, baseline_model, caption_bank, device, k=k, page_size=page_size
    )
    if host not in LOOPBACK_HOSTS:
        logger.warning("serving on %s: anyone who can reach this machine can browse %s", host, service.allowed_paths)
    app = build_app(service, extra_tabs)
    app.launch(prevent_thread_lock=not block, **launch_kwargs(service, host, port, share))
    return app
