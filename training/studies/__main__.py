"""Studies with relsim: the human-judgement web app, its annotators, results and exports; the conceptual distance.

    python -m training.studies add-annotator --db judgements.sqlite --name alice      # prints alice's token
    python -m training.studies app --index photos.index --db judgements.sqlite --seed-groups seed_group.json
    python -m training.studies results --db judgements.sqlite --output study-results
    python -m training.studies export-labels --db judgements.sqlite --output filter_labels.jsonl
    python -m training.studies export-seed-groups --db judgements.sqlite --output seed_group.json
    python -m training.studies distance --model DESCRIBER --images a.png b.png --cache-dir cd-cache
    python -m training.studies distance-eval --literal-model training/vlm/pretrained_tiny \
        --anonymous-model A --relsim R --output-dir cd-report
    python -m training.studies train-literal-describer --output-dir runs/literal-describer

The app is the search app (`python -m training.search app`) with tabs to sign in, label images as relationally
interesting (keys y / n), verify seed groups, and run an A/B study of relsim against the baseline (keys 1 / 2 / 0).
Console script: `relsim-studies`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from training.cli import add_cli_command, add_command, add_commands, command_line, command_parser
from training.studies import conceptual_distance_cli as distance


MODULE = "training.studies"
logger = logging.getLogger("relsim.studies")


def run_add_annotator(args: argparse.Namespace) -> None:
    from training.studies.judgement_store import JudgementStore

    token = JudgementStore(args.db).add_annotator(args.name)
    logger.info("annotator %s registered in %s; give them this token (shown once):", args.name, args.db)
    sys.stdout.write(token + "\n")


def run_app(args: argparse.Namespace) -> None:
    from training.errors import import_extra

    import_extra("gradio", "app", "the studies web app")
    from training.studies.app import launch_studies_app

    launch_studies_app(
        args.index, args.db, args.seed_groups, args.descriptions, args.host, args.port,
        None if args.baseline == "none" else args.baseline, args.share,
        caption_bank=args.captions, k=args.top_k, seed_group_images=args.seed_group_images or (),
    )  # fmt: skip


def run_results(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from training.store import atomic_write
    from training.studies.ab_results import win_rates, win_rates_json, win_rates_markdown, write_win_rate_chart
    from training.studies.judgement_store import JudgementStore
    from training.studies.label_agreement import agreement_markdown, pairwise_agreement

    store = JudgementStore(args.db)
    rows = win_rates(store.ab_judgements())
    agreement = pairwise_agreement(store.labels())
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    report = (
        f"# Study results ({args.db})\n\n## Label agreement (Cohen's kappa)\n\n{agreement_markdown(agreement)}\n\n"
        f"## A/B study: win rates with 95% Wilson score intervals\n\n{win_rates_markdown(rows)}\n\n"
        "![win rates](ab_win_rates.png)\n"
    )
    atomic_write(output / "results.md", report.encode("utf-8"))
    document = {"ab": win_rates_json(rows), "agreement": [vars(row) for row in agreement]}
    atomic_write(output / "results.json", json.dumps(document, indent=2).encode("utf-8"))
    write_win_rate_chart(rows, output / "ab_win_rates.png")
    logger.info("wrote %s (results.md, results.json, ab_win_rates.png)", output)


def run_export_labels(args: argparse.Namespace) -> None:
    from training.studies.judgement_exports import export_filter_labels
    from training.studies.judgement_store import JudgementStore

    report = export_filter_labels(JudgementStore(args.db).labels(), args.output)
    logger.info("wrote %d filter labels to %s (%d ties left out)", report.written, report.path, report.left_out)


def run_export_seed_groups(args: argparse.Namespace) -> None:
    from training.studies.judgement_exports import export_seed_groups
    from training.studies.judgement_store import JudgementStore

    report = export_seed_groups(JudgementStore(args.db).group_verdicts(), args.output)
    logger.info("wrote %d verified seed groups to %s (%d rejected)", report.written, report.path, report.left_out)


def parser() -> argparse.ArgumentParser:
    top = command_parser(MODULE, __doc__)
    commands = add_commands(top)

    annotator = add_command(commands, "add-annotator", "register an annotator (or renew their token); prints it")
    annotator.add_argument("--db", required=True, help="the judgements database (created when missing)")
    annotator.add_argument("--name", required=True, help="1-40 letters, digits, _ or -")
    annotator.set_defaults(run=run_add_annotator)

    app = add_command(
        commands,
        "app",
        "the search web app with the study tabs: label, verify seed groups, A/B study, results",
        "The search app over an index, with the study tabs. It binds to 127.0.0.1; annotators sign in with the token\n"
        "of add-annotator, and every answer is committed to --db before the next item is shown.",
    )
    app.add_argument("--index", required=True, help="a search index (python -m training.search index)")
    app.add_argument("--db", required=True, help="the judgements database (SQLite; created when missing)")
    app.add_argument("--seed-groups", help="a seed_group.json to verify (image_urls: files, relative or file://)")
    app.add_argument(
        "--seed-group-images",
        action="append",
        metavar="DIR",
        help="a folder the seed groups' images may come from besides the indexed collection (repeatable); any other "
        "local image_urls entry is reported at start-up and not served",
    )
    app.add_argument("--descriptions", help="literal descriptions jsonl (image_hash = md5(url)) for the leak check")
    app.add_argument("--baseline", default="auto", help="the A/B study's other method (see the search app)")
    app.add_argument("--captions", default="synthetic", help="caption bank of the search tab's why labels")
    app.add_argument("--top-k", type=int, default=8, help="neighbours shown per method")
    app.add_argument("--host", default="127.0.0.1", help="interface to bind")
    app.add_argument("--port", type=int, default=7860, help="TCP port")
    app.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    app.set_defaults(run=run_app)

    results = add_command(commands, "results", "Cohen's kappa and A/B win rates (md, json, chart) from the database")
    results.add_argument("--db", required=True, help="the judgements database")
    results.add_argument("--output", required=True, help="folder for results.md, results.json, ab_win_rates.png")
    results.set_defaults(run=run_results)

    labels = add_command(commands, "export-labels", "filter labels (jsonl) for python -m training.hub_data build")
    labels.add_argument("--db", required=True, help="the judgements database")
    labels.add_argument("--output", required=True, help="the jsonl to write")
    labels.set_defaults(run=run_export_labels)

    groups = add_command(commands, "export-seed-groups", "verified seed groups as seed_group.json")
    groups.add_argument("--db", required=True, help="the judgements database")
    groups.add_argument("--output", required=True, help="the seed_group.json to write")
    groups.set_defaults(run=run_export_seed_groups)

    for name, help, add_arguments, run in (
        ("distance", distance.DISTANCE_HELP, distance.add_distance_arguments, distance.run_distance),
        ("distance-eval", distance.EVALUATE_HELP, distance.add_evaluate_arguments, distance.run_evaluate),
        ("train-literal-describer", distance.TRAIN_HELP, distance.add_train_arguments, distance.run_train),
    ):
        add_cli_command(commands, name, distance, help, add_arguments, run)
    return top


main, program = command_line(MODULE, parser)

if __name__ == "__main__":
    raise SystemExit(program())
