"""Relational search over your own images: index a collection, query it by image or by relation text, and see why
two images match.

    python -m training.search index --model relsim-demo/run/final --images photos/ --output photos.index
    python -m training.search search --index photos.index --image photos/banana.jpg --top-k 5
    python -m training.search search --index photos.index --text "a {Subject} shown at several stages of growth"
    python -m training.search why --index photos.index --image photos/banana.jpg --result photos/match.jpg \\
        --captions seed_group.json
    python -m training.search app --index photos.index            # the web app on http://127.0.0.1:7860
    python -m training.search serve --index photos.index          # the HTTP API (Ray Serve) on http://127.0.0.1:8000

`index` is incremental (rerun it on a grown folder: only new or changed files are embedded, deleted ones drop out;
`--verify` hashes every file again) and resumes after an interruption; rerunning it also repairs an index whose files
`search` or `why` report missing or damaged. `search` and `why` use the model recorded in the index unless `--model`
names another folder of the same weights; a different model is refused. `search` and `why` print only their answer
(and warnings or errors): `--verbose` shows the model-loading progress bars and INFO lines too. Console script:
`relsim-search`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from training.cli import (
    PROJECT_LOGGERS,
    add_command,
    add_commands,
    add_device_options,
    command_line,
    command_parser,
    resolve_device,
    resolve_dtype,
)
from training.url_fetch import add_fetch_options, policy_from_options


MODULE = "training.search"
# the web app's baselines, kept here as plain strings (training.search.baseline imports torch); a test checks they agree
APP_BASELINES = ("auto", "clip-i", "dino", "pixel", "colour-histogram", "none")
logger = logging.getLogger("relsim.search")


def _load_model(args: argparse.Namespace, recorded: str | None = None) -> Any:
    from training.search.model import SearchModel

    name = args.model or recorded
    if not name:
        raise ValueError("--model is required (the relsim folder or hub id that embeds the images)")
    return SearchModel.load(
        name,
        device=resolve_device(args.device),
        dtype=resolve_dtype(args.dtype),
        trust_remote_code=args.trust_remote_code,
        batch_size=getattr(args, "batch_size", 32),
        num_workers=getattr(args, "num_workers", 0),
    )


def run_index(args: argparse.Namespace) -> None:
    from training.search.index import index_collection

    dataset = None
    if args.dataset:
        from training.errors import import_extra

        datasets = import_extra("datasets", "search", "indexing a datasets dataset")
        from pathlib import Path

        if Path(args.dataset).is_dir():
            dataset = datasets.load_from_disk(args.dataset)
            dataset = dataset[args.split] if isinstance(dataset, datasets.DatasetDict) else dataset
        else:
            dataset = datasets.load_dataset(args.dataset, split=args.split)
    report = index_collection(
        args.output,
        _load_model(args),
        folder=args.images,
        paths=args.list,
        dataset=dataset,
        image_column=args.image_column,
        factory=args.factory,
        shard_size=args.shard_size,
        verify=args.verify,
        allow_outside_list_folder=args.allow_outside_list_folder,
        fetch_policy=policy_from_options(args),
    )
    for path, reason in report.unreadable:
        logger.warning("unreadable: %s: %s", path, reason)


def _open(args: argparse.Namespace) -> tuple[Any, Any]:
    from training.search.index import SearchIndex

    index = SearchIndex(args.index)
    return index, _load_model(args, index.identity["model"])


def run_search(args: argparse.Namespace) -> None:
    from training.search.query import hits_as_json, hits_as_table, search

    index, model = _open(args)
    hits = search(index, model, image=args.image, text=args.text, text_weight=args.text_weight, k=args.top_k)
    labels = {}
    if args.why:
        from training.search.query import query_vector
        from training.search.why import CaptionBank, why

        bank = CaptionBank.read(args.why, model)
        query = query_vector(model, args.image, args.text, args.text_weight)
        results = index.stored_vectors([hit.id for hit in hits]) if hits else []
        labels = {
            hit.rank: why(bank, query, vector, top=1)[0].caption for hit, vector in zip(hits, results, strict=True)
        }
    if args.format == "json":
        document = hits_as_json(hits, query={"image": args.image, "text": args.text, "text_weight": args.text_weight})
        if labels:
            import json

            parsed = json.loads(document)
            for row in parsed["results"]:
                row["why"] = labels[row["rank"]]
            document = json.dumps(parsed, indent=2, ensure_ascii=False)
        sys.stdout.write(document + "\n")
    else:
        table = hits_as_table(hits).splitlines()
        if labels:
            table = [table[0] + "  why"] + [
                f"{line}  [{labels[hit.rank]}]" for line, hit in zip(table[1:], hits, strict=True)
            ]
        sys.stdout.write("\n".join(table) + "\n")


def run_why(args: argparse.Namespace) -> None:
    import json

    from training.search.query import query_vector
    from training.search.why import CaptionBank, why

    index, model = _open(args)
    index.check_model(model)
    query = query_vector(model, args.image, args.text, args.text_weight)
    result = index.stored_vectors([index.find(args.result)])[0]
    labels = why(CaptionBank.read(args.captions, model), query, result, top=args.top)
    if args.format == "json":
        rows = [label.__dict__ for label in labels]
        sys.stdout.write(json.dumps({"result": args.result, "labels": rows}, indent=2, ensure_ascii=False) + "\n")
    else:
        lines = [f"{'fit':>7}  {'query':>7}  {'result':>7}  caption"]
        lines += [f"{x.score:>7.4f}  {x.query_cosine:>7.4f}  {x.result_cosine:>7.4f}  {x.caption}" for x in labels]
        sys.stdout.write("\n".join(lines) + "\n")


def run_app(args: argparse.Namespace) -> None:
    from training.errors import import_extra

    import_extra("gradio", "app", "the web app")
    from training.search.app import launch_app

    _, model = _open(args)
    launch_app(
        args.index,
        host=args.host,
        port=args.port,
        baseline=None if args.baseline == "none" else args.baseline,
        share=args.share,
        model=model,
        baseline_model=args.baseline_model,
        caption_bank=args.captions,
        device=resolve_device(args.device),
        k=args.top_k,
        page_size=args.page_size,
    )


@contextmanager
def quiet_answer(quiet: bool) -> Iterator[None]:
    """Hides INFO logging and transformers' (and the Hub's) progress bars while a one-shot answer is computed.

    A three-line answer drowned in weight-loading bars reads as noise; warnings and errors still show. The previous
    levels and bar setting come back afterwards, so an in-process caller (a test, a notebook) keeps its own.
    """
    if not quiet:
        yield
        return
    from transformers.utils import logging as transformers_logging

    loggers = [logging.getLogger(name) for name in PROJECT_LOGGERS]
    levels = [project_logger.level for project_logger in loggers]
    bars = transformers_logging.is_progress_bar_enabled()
    for project_logger in loggers:
        project_logger.setLevel(logging.WARNING)
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        for project_logger, level in zip(loggers, levels, strict=True):
            project_logger.setLevel(level)
        if bars:
            transformers_logging.enable_progress_bar()


def run_serve(args: argparse.Namespace) -> None:
    import time

    import ray
    from ray import serve

    from training.search.serve_app import deployment, start
    from training.search.serve_settings import ServeSettings, api_key_sha256, replica_shortfall

    settings = ServeSettings(
        max_batch_size=args.max_batch_size,
        batch_wait_timeout_s=args.batch_wait_ms / 1000,
        max_body_bytes=args.max_body_mb * 1024 * 1024,
        max_images_per_request=args.max_images_per_request,
        max_image_pixels=args.max_image_pixels,
        request_timeout_s=args.request_timeout_s,
        max_pending_requests=args.max_pending_requests,
        api_key_sha256=api_key_sha256(args.api_key_file),
        allow_url_images=args.allow_url_images,
        caption_bank=args.captions,
    )
    if settings.api_key_sha256 is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("serving on %s without an API key: set RELSIM_API_KEY or --api-key-file", args.host)
    ray.init(address=args.ray_address, include_dashboard=False) if args.ray_address else ray.init(
        include_dashboard=False
    )
    try:
        shortfall = replica_shortfall(args.replicas, args.num_gpus, ray.cluster_resources())
        if shortfall:
            raise ValueError(shortfall)
        application = deployment(
            args.index, args.model, resolve_device(args.device), settings, args.replicas, args.num_gpus
        )
        start(application, args.host, args.port)
        sys.stdout.write(f"relsim service on http://{args.host}:{args.port} (Ctrl-C stops it)\n")
        sys.stdout.flush()
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()


def quietly(run: Callable[[argparse.Namespace], None]) -> Callable[[argparse.Namespace], None]:
    """`run` under `quiet_answer` unless `--verbose` or `--debug` is given (index and app keep their progress and
    INFO lines: they are long runs, not one-shot answers)."""

    def quiet_run(args: argparse.Namespace) -> None:
        with quiet_answer(not (args.verbose or getattr(args, "debug", False))):
            return run(args)

    return quiet_run


def _verbose_option(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--verbose",
        action="store_true",
        help="also show the model-loading progress bars and INFO logging (by default only the answer, warnings and "
        "errors are printed)",
    )


def _model_options(sub: argparse.ArgumentParser, required: bool) -> None:
    sub.add_argument(
        "--model",
        required=required,
        help="relsim folder or hub id" + ("" if required else " (default: the one recorded in the index)"),
    )
    sub.add_argument("--trust-remote-code", action="store_true", help="load --model with the code saved beside it")
    add_device_options(sub)


def _query_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--index", required=True, help="the index folder written by `index`")
    sub.add_argument("--image", help="query image file")
    sub.add_argument("--text", help='relation text, e.g. "a {Subject} shown at several stages of growth"')
    sub.add_argument("--text-weight", type=float, default=0.5, help="weight of the text when both are given")
    sub.add_argument("--format", choices=("table", "json"), default="table", help="how results are printed")


def parser() -> argparse.ArgumentParser:
    top = command_parser(MODULE, __doc__)
    commands = add_commands(top)

    index = add_command(commands, "index", "embed a collection into a search index (incremental, resumable)")
    source = index.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="a folder of images (searched recursively)")
    source.add_argument(
        "--list",
        help="a text file of image paths (relative to its folder) or URLs (fetched by img2dataset), one per line; "
        "a path leading outside the list's folder is left out unless --allow-outside-list-folder",
    )
    source.add_argument("--dataset", help="a datasets dataset: a saved folder (load_from_disk) or a Hub id")
    index.add_argument("--split", default="train", help="--dataset: the split")
    index.add_argument("--image-column", default="image", help="--dataset: the column holding the images")
    index.add_argument("--output", required=True, help="the index folder (created, or updated when it exists)")
    index.add_argument("--factory", default="Flat", help="FAISS index factory: Flat (exact) or e.g. IVF1024,PQ32")
    index.add_argument("--shard-size", type=int, default=256, help="images per saved shard of embeddings")
    index.add_argument(
        "--verify",
        action="store_true",
        help="read and hash every file again (a rerun otherwise trusts a file whose size and modification time are "
        "unchanged); files replaced under the same size and time are embedded again",
    )
    index.add_argument(
        "--allow-outside-list-folder",
        action="store_true",
        help="--list: also read paths outside the list's folder (absolute or ../ ones); off by default",
    )
    add_fetch_options(index)
    index.add_argument("--batch-size", type=int, default=32, help="images per forward")
    index.add_argument("--num-workers", type=int, default=0, help="DataLoader workers decoding images")
    _model_options(index, required=True)
    index.set_defaults(run=run_index)

    search = add_command(commands, "search", "the indexed images closest to an image, a relation text, or both")
    _query_options(search)
    search.add_argument("--top-k", type=int, default=10, help="results shown")
    search.add_argument("--why", metavar="CAPTIONS", help="label each result from a caption bank (see `why`)")
    _verbose_option(search)
    _model_options(search, required=False)
    search.set_defaults(run=quietly(run_search))

    why = add_command(commands, "why", "captions of a caption bank that fit both a query and a result")
    _query_options(why)
    why.add_argument("--result", required=True, help="an indexed image (its path as the index lists it)")
    why.add_argument(
        "--captions",
        default="synthetic",
        help="caption bank: synthetic (the 8 family captions), relations (the compositional world's 407), a "
        "seed_group.json, a captions jsonl, or a text file of one caption per line",
    )
    why.add_argument("--top", type=int, default=5, help="labels shown")
    _verbose_option(why)
    _model_options(why, required=False)
    why.set_defaults(run=quietly(run_why))

    app = add_command(
        commands,
        "app",
        "the web app: search by image or relation text beside an attribute baseline, browse the collection",
        "The web app (Gradio) over an index built from a folder or a list of files. It binds to 127.0.0.1 and serves\n"
        "only the indexed collection; --host 0.0.0.0 or --share expose the collection to others.",
    )
    app.add_argument("--index", required=True, help="the index folder written by `index`")
    app.add_argument("--host", default="127.0.0.1", help="interface to bind")
    app.add_argument("--port", type=int, default=7860, help="TCP port")
    app.add_argument(
        "--baseline",
        choices=APP_BASELINES,
        default="auto",
        help="attribute baseline shown beside relsim; auto: CLIP-I or DINO when their weights are on this machine, "
        "else the colour histogram",
    )
    app.add_argument("--baseline-model", help="the baseline's weights (folder or hub id) for clip-i / dino")
    app.add_argument("--captions", default="synthetic", help="caption bank of the why labels (see `why`)")
    app.add_argument("--top-k", type=int, default=8, help="neighbours shown per method")
    app.add_argument("--page-size", type=int, default=24, help="images per gallery page")
    app.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    _model_options(app, required=False)
    app.set_defaults(run=run_app)

    serve = add_command(
        commands,
        "serve",
        "the HTTP API on Ray Serve: OpenAI-style embeddings, search, indexed images, pairwise scores",
        "The HTTP API (Ray Serve, see docs/serve.md). It binds to 127.0.0.1; an API key (bearer token) is read\n"
        "from $RELSIM_API_KEY or --api-key-file, never from the command line, and guards every endpoint but\n"
        "/healthz and /readyz. A rebuilt index (`index` into the same folder) is picked up between requests.",
    )
    serve.add_argument("--index", required=True, help="the index folder written by `index`")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0 exposes the service)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port")
    serve.add_argument("--replicas", type=int, default=1, help="model replicas")
    serve.add_argument("--num-gpus", type=float, default=0, help="GPUs per replica (use with --device cuda)")
    serve.add_argument("--ray-address", help="an existing Ray cluster (e.g. auto); default: a local Ray")
    serve.add_argument("--api-key-file", help="a file whose first line is the API key (default: $RELSIM_API_KEY)")
    serve.add_argument("--captions", default="synthetic", help="caption bank of the why labels (see `why`)")
    serve.add_argument(
        "--allow-url-images",
        action="store_true",
        help="fetch http(s) URLs given as images (off: a client could make the service request any address it "
        "reaches, intranet included)",
    )
    serve.add_argument("--max-batch-size", type=int, default=16, help="images or texts embedded together")
    serve.add_argument("--batch-wait-ms", type=float, default=10, help="how long a batch waits to fill")
    serve.add_argument("--max-body-mb", type=int, default=32, help="largest request body")
    serve.add_argument("--max-images-per-request", type=int, default=32, help="most images in one request")
    serve.add_argument(
        "--max-image-pixels", type=int, default=8192 * 8192, help="larger images are refused from their header"
    )
    serve.add_argument("--request-timeout-s", type=float, default=30, help="a slower request answers 504")
    serve.add_argument(
        "--max-pending-requests", type=int, default=64, help="requests a replica holds; more answer 503 + Retry-After"
    )
    _model_options(serve, required=False)
    serve.set_defaults(run=run_serve)
    return top


main, program = command_line(MODULE, parser)

if __name__ == "__main__":
    raise SystemExit(program())
