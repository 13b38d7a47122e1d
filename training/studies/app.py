"""The human-judgement tabs of the search web app: sign in, label images, verify seed groups, A/B study, results.

    python -m training.studies add-annotator --db judgements.sqlite --name alice      # prints alice's token
    python -m training.studies app --index photos.index --db judgements.sqlite --seed-groups seed_group.json

One app: these tabs join Search and Browse through the search app's `extra_tabs` hook, over the same indexed
collection and file route. Every answer is written to the `JudgementStore` (SQLite, WAL, append-only) before the
next item is shown; the annotator is checked by their token on every write and before the results are shown.
The file route serves what the search app serves plus the seed groups' images that are indexed or inside an
operator's `--seed-group-images` folder (`seed_group_tasks`); any other local entry is reported and left out.

A/B trials: the query order is a shuffle per annotator; which method is shown on the left is drawn from a secret
per-server seed (`side_seed`), kept in the server's session state and written with the answer, never sent to the
page.
"""

from __future__ import annotations

import html
import logging
import random
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from training.image_ids import url_image_hash
from training.pipeline.leak_check import check_caption
from training.pipeline.leak_check_files import read_literal_descriptions
from training.search.app import LOOPBACK_HOSTS, build_app, launch_kwargs
from training.search.search_service import SearchService
from training.studies import study_pages
from training.studies.ab_results import win_rate_figure, win_rates, win_rates_markdown
from training.studies.judgement_store import Credentials, JudgementStore, StoreLockedError
from training.studies.label_agreement import agreement_markdown, pairwise_agreement
from training.studies.seed_group_tasks import SeedGroupTask, read_seed_group_tasks


logger = logging.getLogger(__name__)

SIGN_IN_FIRST = "Sign in first (tab **Annotator**)."
RELSIM = "relsim"


@dataclass
class StudyContext:
    """What the study tabs work on.

    Attributes:
        store: the judgements database.
        service: the search app's service (collection, relsim, baseline); its images are the ones labelled and the
            A/B queries.
        groups: the seed groups to verify (empty: the tab says so).
        descriptions: literal descriptions by image hash, to re-check an edited caption's leaks.
        side_seed: the secret from which A/B sides are drawn.
    """

    store: JudgementStore
    service: SearchService
    groups: list[SeedGroupTask] = field(default_factory=list)
    descriptions: dict[str, list[str]] = field(default_factory=dict)
    side_seed: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def images(self) -> list[str]:
        return [entry.path for entry in self.service.index.entries]

    def ab_queries(self, annotator: str) -> list[str]:
        order = list(self.images)
        random.Random(f"queries:{annotator}").shuffle(order)
        return order

    def left_method(self, annotator: str, query: str) -> str:
        """Which method goes left for this annotator and query: a coin drawn from the secret seed."""
        assert self.service.baseline_name is not None
        heads = random.Random(f"{self.side_seed}:{annotator}:{query}").random() < 0.5
        return RELSIM if heads else self.service.baseline_name


def _failure(error: Exception) -> str:
    """A refused write as Markdown; the error's text is escaped (it can quote what a person typed)."""
    if isinstance(error, PermissionError):
        return f"Not saved: {html.escape(str(error))}. Sign in again (tab **Annotator**)."
    if isinstance(error, StoreLockedError):
        return "Not saved: the judgements database is busy; press the button again in a moment."
    return f"Not saved: {html.escape(str(error))}"


def _sign_in_tab(context: StudyContext) -> tuple[gr.State, Any]:
    with gr.Tab("Annotator", id="study-annotator"):
        # made inside a tab: a component placed directly in `gr.Tabs` would shift the tab labels in the page
        who = gr.State(None)
        gr.Markdown("Sign in with the name and token your study admin gave you "
                    "(`python -m training.studies add-annotator`).")  # fmt: skip
        name = gr.Textbox(label="Annotator name", elem_id="annotator-name")
        token = gr.Textbox(label="Token", type="password", elem_id="annotator-token")
        button = gr.Button("Sign in", variant="primary", elem_id="sign-in")
        status = gr.Markdown(SIGN_IN_FIRST, elem_id="annotator-status")

    def sign_in(name_text: str, token_text: str) -> tuple[Credentials | None, str]:
        credentials = Credentials((name_text or "").strip(), (token_text or "").strip())
        try:
            context.store.authenticate(credentials)
        except (PermissionError, StoreLockedError, ValueError, OSError) as error:
            logger.warning("sign-in refused: %s", error)
            return None, f"Sign-in refused: {html.escape(str(error))}"  # it quotes the typed name
        return credentials, f"Signed in as **{credentials.name}**."

    event = button.click(sign_in, [name, token], [who, status])
    return who, event


def _label_tab(context: StudyContext, who: gr.State) -> Callable[[Any], Any]:
    images = context.images
    with gr.Tab("Label images", id="study-label"):
        gr.Markdown("Is this image **relationally interesting** — does it show a relation, logic or structure "
                    "beyond its objects? Keys: **y** yes, **n** no.")  # fmt: skip
        progress = gr.Markdown(SIGN_IN_FIRST, elem_id="label-progress")
        panel = gr.HTML(elem_id="label-image")
        with gr.Row():
            yes = gr.Button("Yes, relational (y)", variant="primary", elem_id="label-yes")
            no = gr.Button("No (n)", elem_id="label-no")
        position = gr.State(None)

    def show(credentials: Credentials | None) -> tuple[int | None, str, str]:
        if credentials is None:
            return None, SIGN_IN_FIRST, ""
        done = {judgement.image for judgement in context.store.labels(credentials.name)}
        at = context.store.resume_position(credentials.name, images)
        labelled = sum(image in done for image in images)
        if at is None:
            return None, f"{credentials.name}: all {len(images)} images labelled.", study_pages.label_panel(None, "")
        name = context.service.display_name(images[at])
        return at, f"{credentials.name}: image {at + 1} of {len(images)} ({labelled} labelled)", \
            study_pages.label_panel(images[at], name)  # fmt: skip

    def answer(credentials: Credentials | None, at: int | None, relational: bool) -> tuple[int | None, str, str]:
        if credentials is None:
            return None, SIGN_IN_FIRST, ""
        if at is not None:
            try:
                context.store.record_label(credentials, images[at], relational)
            except (PermissionError, StoreLockedError, ValueError, OSError) as error:
                logger.warning("label not saved: %s", error)
                return (
                    at,
                    _failure(error),
                    study_pages.label_panel(images[at], context.service.display_name(images[at])),
                )
        return show(credentials)

    outputs = [position, progress, panel]
    yes.click(lambda credentials, at: answer(credentials, at, True), [who, position], outputs)
    no.click(lambda credentials, at: answer(credentials, at, False), [who, position], outputs)
    return lambda event: event.then(show, who, outputs)


def _verify_tab(context: StudyContext, who: gr.State) -> Callable[[Any], Any]:
    groups = context.groups
    with gr.Tab("Verify groups", id="study-verify"):
        gr.Markdown("Do these images share the relation the caption names, without naming their objects? Accept, "
                    "edit the caption and save, or reject the group.")  # fmt: skip
        progress = gr.Markdown(SIGN_IN_FIRST if groups else "No seed groups were given (--seed-groups).",
                               elem_id="group-progress")  # fmt: skip
        panel = gr.HTML(elem_id="group-images")
        caption = gr.Textbox(label="Anonymous caption", elem_id="group-caption")
        flags = gr.Markdown(elem_id="group-flags")
        with gr.Row():
            accept = gr.Button("Accept", variant="primary", elem_id="group-accept")
            edit = gr.Button("Save edited caption", elem_id="group-edit")
            reject = gr.Button("Reject", variant="stop", elem_id="group-reject")
        position = gr.State(None)

    def show(credentials: Credentials | None) -> tuple[int | None, str, str, str, str]:
        if credentials is None:
            return None, SIGN_IN_FIRST, "", "", ""
        done = context.store.verified_groups(credentials.name)
        remaining = [at for at, group in enumerate(groups) if group.group_id not in done]
        if not remaining:
            return None, f"{credentials.name}: all {len(groups)} groups verified.", "", "", ""
        at = remaining[0]
        group = groups[at]
        return (
            at,
            f"{credentials.name}: group {group.group_id} ({len(groups) - len(remaining) + 1} of {len(groups)}), "
            f"{len(group.image_urls)} images",
            study_pages.group_panel(group.image_urls, group.files, group.refused),
            group.caption,
            study_pages.leak_flags(group.check),
        )

    def recheck(at: int | None, text: str) -> str:
        if at is None:
            return ""

        group = groups[at]
        literal = [line for url in group.image_urls for line in context.descriptions.get(url_image_hash(url), ())]
        return study_pages.leak_flags(check_caption((text or "").strip(), literal))

    def verdict(credentials: Credentials | None, at: int | None, text: str, kind: str) -> tuple:
        if credentials is None:
            return None, SIGN_IN_FIRST, "", "", ""
        if at is None:
            return show(credentials)
        group = groups[at]
        text = (text or "").strip()
        if kind == "edit" and text == group.caption:
            return at, "The caption is unchanged: edit it first, or press Accept.", gr.skip(), gr.skip(), gr.skip()
        try:
            context.store.record_group_verdict(credentials, group.group_id, kind,
                                               text if kind == "edit" else group.caption, group.caption,
                                               group.image_urls)  # fmt: skip
        except (PermissionError, StoreLockedError, ValueError, OSError) as error:
            logger.warning("verdict not saved: %s", error)
            return at, _failure(error), gr.skip(), gr.skip(), gr.skip()
        return show(credentials)

    outputs = [position, progress, panel, caption, flags]
    inputs = [who, position, caption]
    accept.click(lambda c, at, text: verdict(c, at, text, "accept"), inputs, outputs)
    edit.click(lambda c, at, text: verdict(c, at, text, "edit"), inputs, outputs)
    reject.click(lambda c, at, text: verdict(c, at, text, "reject"), inputs, outputs)
    caption.change(recheck, [position, caption], flags)  # typed or shown: the flags follow the text
    return lambda event: event.then(show, who, outputs)


def _ab_tab(context: StudyContext, who: gr.State) -> Callable[[Any], Any]:
    baseline = context.service.baseline_name
    with gr.Tab("A/B study", id="study-ab"):
        gr.Markdown("Which side's images share the **relation** of the query image (not its looks)? "
                    "Keys: **1** left, **2** right, **0** neither.")  # fmt: skip
        progress = gr.Markdown(SIGN_IN_FIRST if baseline else "The A/B study needs a baseline (--baseline).",
                               elem_id="ab-progress")  # fmt: skip
        query = gr.HTML(elem_id="ab-query")
        with gr.Row():
            left = gr.HTML(elem_id="ab-left")
            right = gr.HTML(elem_id="ab-right")
        with gr.Row():
            choose_left = gr.Button("Left (1)", elem_id="ab-choose-left")
            neither = gr.Button("Neither (0)", elem_id="ab-neither")
            choose_right = gr.Button("Right (2)", elem_id="ab-choose-right")
        trial = gr.State(None)  # server-side: the page never sees which method is on which side

    def show(credentials: Credentials | None) -> tuple[dict | None, str, str, str, str]:
        if credentials is None or baseline is None:
            return None, SIGN_IN_FIRST if baseline else "The A/B study needs a baseline.", "", "", ""
        judged = {row.query for row in context.store.ab_judgements() if row.annotator == credentials.name}
        queries = context.ab_queries(credentials.name)
        remaining = [path for path in queries if path not in judged]
        if not remaining:
            return None, f"{credentials.name}: all {len(queries)} queries judged.", "", "", ""
        path = remaining[0]
        results = context.service.find(image=path)
        sides = {RELSIM: [hit.path for hit in results.relsim], baseline: [hit.path for hit in results.baseline]}
        left_method = context.left_method(credentials.name, path)
        right_method = baseline if left_method == RELSIM else RELSIM
        state = {"query": path, "left": left_method, "right": right_method}
        return (
            state,
            f"{credentials.name}: query {len(queries) - len(remaining) + 1} of {len(queries)}",
            f'<div class="study-query">{study_pages.image_card(path, "query")}</div>',
            "<h3>Left</h3>" + study_pages.neighbour_panel(sides[left_method]),
            "<h3>Right</h3>" + study_pages.neighbour_panel(sides[right_method]),
        )

    def choose(credentials: Credentials | None, state: dict | None, choice: str) -> tuple:
        if credentials is None or state is None:
            return show(credentials)
        try:
            context.store.record_ab(credentials, state["query"], state["left"], state["right"], choice)
        except (PermissionError, StoreLockedError, ValueError, OSError) as error:
            logger.warning("A/B choice not saved: %s", error)
            return state, _failure(error), gr.skip(), gr.skip(), gr.skip()
        return show(credentials)

    outputs = [trial, progress, query, left, right]
    for button, choice in ((choose_left, "left"), (choose_right, "right"), (neither, "neither")):
        button.click(lambda c, state, choice=choice: choose(c, state, choice), [who, trial], outputs)
    return lambda event: event.then(show, who, outputs)


def _results_tab(context: StudyContext, who: gr.State) -> None:
    with gr.Tab("Results", id="study-results"):
        refresh = gr.Button("Refresh from the database", elem_id="results-refresh")
        gr.Markdown("### Label agreement (Cohen's kappa)")
        kappa = gr.Markdown(elem_id="results-kappa")
        gr.Markdown("### A/B study: win rates with 95% Wilson score intervals")
        table = gr.Markdown(elem_id="results-ab")
        chart = gr.Plot(elem_id="results-chart", show_label=False)

    def results(credentials: Credentials | None) -> tuple[str, str, Any]:
        # the session's sign-in, checked again: the endpoint is callable without the page (Gradio's HTTP API)
        if credentials is None:
            return SIGN_IN_FIRST, "", None
        try:
            context.store.authenticate(credentials)
        except (PermissionError, StoreLockedError, ValueError, OSError) as error:
            logger.warning("results refused: %s", error)
            return f"Results refused: {html.escape(str(error))}. Sign in again (tab **Annotator**).", "", None
        rows = win_rates(context.store.ab_judgements())
        return agreement_markdown(pairwise_agreement(context.store.labels())), win_rates_markdown(rows), \
            win_rate_figure(rows)  # fmt: skip

    refresh.click(results, who, [kappa, table, chart])


def study_tabs(context: StudyContext) -> Callable[[], None]:
    """The `extra_tabs` entry that adds the study tabs (they share one signed-in annotator per browser session)."""

    def add() -> None:
        who, signed_in = _sign_in_tab(context)
        reloads = [_label_tab(context, who), _verify_tab(context, who), _ab_tab(context, who)]
        _results_tab(context, who)
        for reload in reloads:
            reload(signed_in)

    return add


def launch_studies_app(
    index_dir: str | Path,
    db: str | Path,
    seed_groups: str | Path | None = None,
    descriptions: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 7860,
    baseline: str | None = "auto",
    share: bool = False,
    *,
    model: Any = None,
    side_seed: str | None = None,
    seed_group_images: Sequence[str | Path] = (),
    block: bool = True,
    **service_settings: Any,
) -> gr.Blocks:
    """The search app with the study tabs, serving until interrupted (or running, with `block=False`; stop it with
    `.close()`).

    Args:
        index_dir: the search index of the images to label and query.
        db: the judgements database (created when missing).
        seed_groups: a `seed_group.json` to verify; its local images are served when they are indexed images of the
            collection or lie inside `seed_group_images` (any other local entry is logged and left out).
        descriptions: literal descriptions (jsonl by image hash) the leak check compares captions with.
        side_seed: the A/B side seed (default: a fresh secret per server start).
        seed_group_images: folders the seed groups' images may come from, beside the indexed collection.
        service_settings: `SearchService.open` settings (baseline_model, caption_bank, device, k, page_size).

    Raises:
        ValueError, OSError: a bad index, database, seed-group or descriptions file (named).
    """

    store = JudgementStore(db)
    described = {}
    if descriptions is not None:
        described = read_literal_descriptions(descriptions)
    for folder in seed_group_images:
        if not Path(folder).is_dir():
            raise NotADirectoryError(f"--seed-group-images {folder}: not a folder")
    service = SearchService.open(index_dir, model, baseline, **service_settings)
    groups = []
    if seed_groups is not None:
        groups = read_seed_group_tasks(seed_groups, described, service.served_files, seed_group_images)
    context = StudyContext(store, service, groups, described)
    if side_seed is not None:
        context.side_seed = side_seed
    if host not in LOOPBACK_HOSTS:
        logger.warning("serving on %s: anyone who can reach this machine can open the study", host)
    settings = launch_kwargs(service, host, port, share, extra_files=group_files(groups))
    settings["css"] = settings["css"] + study_pages.STUDY_STYLE
    app = build_app(service, [study_tabs(context)])
    app.launch(prevent_thread_lock=not block, head=study_pages.KEYBOARD_SCRIPT, **settings)
    return app


def group_files(groups: Sequence[SeedGroupTask]) -> list[str]:
    """The seed groups' local image files (the file route serves exactly these beside the collection)."""
    return sorted({path for group in groups for path in group.files if path is not None})
