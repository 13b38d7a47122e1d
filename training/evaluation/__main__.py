"""relsim's evaluation, step by step (each step resumes; outputs go under --eval-dir):

  python -m training.evaluation pool --images MY_IMAGES --output pool.jsonl            # any folder of images
  python -m training.evaluation pool --built built --images downloads --output pool.jsonl   # the paper's pool
  python -m training.evaluation embed --pool pool.jsonl --eval-dir eval --method relsim --model ORG/relsim
  python -m training.evaluation retrieve --pool pool.jsonl --eval-dir eval --methods relsim clip-i --queries 1000
  python -m training.evaluation judge --pool pool.jsonl --eval-dir eval --judge openai --methods relsim clip-i
  python -m training.evaluation report --pool pool.jsonl --eval-dir eval --similarity-query HASH
  python -m training.evaluation synthetic --model relsim-final --output benchmark-report
  python -m training.evaluation ablate --output ablation-report [--seeds 3] [--steps 1000]
  python -m training.evaluation analogy --triplets triplets.csv --model relsim-final --output analogy-report

Console script: `relsim-eval`.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from training.cli import (
    add_cli_command,
    add_command,
    add_commands,
    add_device_options,
    command_line,
    command_parser,
    resolve_device,
    resolve_dtype,
)
from training.errors import import_extra, loading_model
from training.evaluation import ablation_cli, analogy_cli, synthetic_cli
from training.evaluation.method_names import METHOD_NAMES


if TYPE_CHECKING:
    from training.evaluation.layout import EvalLayout
    from training.evaluation.pool import PoolItem


MODULE = "training.evaluation"
logger = logging.getLogger("relsim.eval")
DEFAULT_TEXT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"


def run_pool(args: argparse.Namespace) -> None:
    from training.evaluation.pool import manifest_from_downloads, manifest_from_folder, read_pool

    if args.built is None:
        path = manifest_from_folder(args.images, args.output)
    else:
        path = manifest_from_downloads(args.built, args.images, args.output)
    logger.info("wrote the pool manifest %s (%d images)", path, len(read_pool(path)))


def run_embed(args: argparse.Namespace) -> None:
    from training.evaluation.embed import embed_pool
    from training.evaluation.embedding_cache import EmbeddingCache
    from training.evaluation.layout import EvalLayout
    from training.evaluation.methods.build import MethodOptions, build_method
    from training.evaluation.pool import read_pool

    layout = EvalLayout(args.eval_dir)
    options = MethodOptions(
        model=args.model, device=resolve_device(args.device), dtype=resolve_dtype(args.dtype),
        caption_model=args.caption_model, caption_cache=layout.captions(), text_encoder=args.text_encoder,
        lpips_image_size=args.lpips_image_size, dreamsim_cache=args.dreamsim_cache,
        trust_remote_code=args.trust_remote_code,
    )  # fmt: skip
    method = build_method(args.method, options)
    cache = EmbeddingCache(layout.cache(args.method), method.cache_identity())
    report = embed_pool(method, read_pool(args.pool), cache, args.batch_size, args.num_workers)
    logger.info(
        "%s: %d embedded, %d already cached, %d unreadable",
        args.method,
        report.embedded,
        report.already_cached,
        len(report.failures),
    )


def shared_queries(layout: EvalLayout, items: Sequence[PoolItem], count: int, seed: int) -> list[str]:
    """One query list for every method: written by the first `retrieve`, reused (and checked) afterwards.

    A request for more queries than the test split holds takes them all, says so, and records the real count
    (beside the requested one); a rerun is accepted when its seed matches and it would draw that same list, whether
    it asks for the same number again or for the real count.
    """
    from training.evaluation.retrieval import sample_queries

    path = layout.queries()
    available = sum(item.split == "test" for item in items)
    drawn = min(count, available)
    if count > available:
        logger.warning(
            "--queries %d: the pool's test split holds only %d images; using all %d", count, available, drawn
        )
    if path.is_file():
        stored = json.loads(path.read_text())
        stored_count = len(stored["queries"])  # the real count, also in files that recorded the requested one
        if stored["seed"] != seed or stored_count != drawn:
            raise ValueError(
                f"{path} holds {stored_count} queries of seed {stored['seed']}; this run would draw {drawn} of "
                f"seed {seed}: use another --eval-dir, or --queries {stored_count} --seed {stored['seed']}"
            )
        return stored["queries"]
    queries = sample_queries(items, count, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"count": len(queries), "requested": count, "seed": seed, "queries": queries}))
    return queries


def run_retrieve(args: argparse.Namespace) -> None:
    from training.evaluation.embedding_cache import EmbeddingCache
    from training.evaluation.judge_free import caption_agreement, seed_group_map
    from training.evaluation.layout import EvalLayout
    from training.evaluation.pool import by_hash, read_pool
    from training.evaluation.retrieval import retrieve, write_retrievals

    if args.backend == "faiss":
        import_extra("faiss", "eval", "--backend faiss")
    layout = EvalLayout(args.eval_dir)
    items = read_pool(args.pool)
    queries = shared_queries(layout, items, args.queries, args.seed)
    text_encoder = None
    if any(item.caption for item in items):
        SentenceTransformer = import_extra(
            "sentence_transformers", "eval", "caption agreement (the pool has captions)"
        ).SentenceTransformer

        from training.trainer.caption_encoder import resolve_text_encoder

        with loading_model(args.text_encoder, "the caption-agreement text model", "--text-encoder"):
            text_encoder = SentenceTransformer(resolve_text_encoder(args.text_encoder), device="cpu")
    for method in args.methods:
        cache = EmbeddingCache.open(layout.cache(method))
        embedded_queries = [query for query in queries if query in cache]
        if len(embedded_queries) < len(queries):
            logger.warning(
                "%s: %d queries were not embedded (unreadable images) and are left out",
                method,
                len(queries) - len(embedded_queries),
            )
        retrievals = retrieve(cache, items, embedded_queries, top_k=args.top_k, backend=args.backend,
                              index_factory=args.faiss_index)  # fmt: skip
        write_retrievals(retrievals, layout.retrievals(method))
        metrics = {}
        if any(item.group_id is not None for item in items):
            metrics.update(seed_group_map(cache, items))
        if text_encoder is not None:
            metrics.update(caption_agreement(retrievals, by_hash(items), text_encoder))
        layout.metrics(method).parent.mkdir(parents=True, exist_ok=True)
        layout.metrics(method).write_text(json.dumps(metrics, indent=2))
        logger.info("%s: %s", method, metrics)


def build_judge(args: argparse.Namespace):
    if args.judge == "openai":
        import_extra("openai", "eval", "the openai judge")
        from training.evaluation.judges.openai_compatible import OpenAICompatibleJudge

        return OpenAICompatibleJudge(base_url=args.base_url, model=args.judge_model)
    from training.evaluation.judges.local_vlm import LocalVLMJudge
    from training.vlm.chat import QwenVLChat

    chat = QwenVLChat.from_pretrained(
        args.judge_model or "Qwen/Qwen2.5-VL-7B-Instruct", device=resolve_device(args.device),
        dtype=resolve_dtype(args.dtype),
    )  # fmt: skip
    return LocalVLMJudge(chat, batch_size=args.batch_size)


def run_judge(args: argparse.Namespace) -> None:
    from training.evaluation.judges import judge_retrievals
    from training.evaluation.judges.cache import JudgementCache, write_judgements
    from training.evaluation.layout import EvalLayout
    from training.evaluation.pool import by_hash, read_pool
    from training.evaluation.retrieval import read_retrievals

    layout = EvalLayout(args.eval_dir)
    items = by_hash(read_pool(args.pool))
    judge = build_judge(args)
    judge_name = args.judge_name or f"{args.judge}-{judge.identity()['model'].rsplit('/', 1)[-1]}"
    cache = JudgementCache(layout.judge_answers(judge_name))
    for method in args.methods:
        judgements = judge_retrievals(
            judge, read_retrievals(layout.retrievals(method)), items, cache, top=args.top, batch_size=args.batch_size
        )
        write_judgements(judgements, layout.judgements(judge_name, method))
        scores = [judgement.score for judgement in judgements if judgement.score is not None]
        logger.info(
            "%s judged by %s: mean %.3f over %d", method, judge_name, sum(scores) / max(len(scores), 1), len(scores)
        )


def run_report(args: argparse.Namespace) -> None:
    from training.evaluation.embedding_cache import EmbeddingCache
    from training.evaluation.layout import EvalLayout
    from training.evaluation.pool import by_hash, read_pool
    from training.evaluation.report import write_report

    layout = EvalLayout(args.eval_dir)
    items = by_hash(read_pool(args.pool))
    written = write_report(layout, items, queries=args.html_queries, top_k=args.top_k)
    if args.similarity_query:
        import_extra("matplotlib", "eval", "the similarity-space plot")
        from training.evaluation.report import similarity_space
        from training.evaluation.reporting.similarity_space import plot_similarity_space

        if args.relational_method == args.attribute_method:
            logger.warning(
                "--relational-method and --attribute-method are both %s: the similarity-space plot compares a method "
                "with itself (every point on the diagonal); pick an image encoder such as clip-i or dino for "
                "--attribute-method",
                args.relational_method,
            )
        space = similarity_space(
            EmbeddingCache.open(layout.cache(args.relational_method)),
            EmbeddingCache.open(layout.cache(args.attribute_method)),
            items, args.similarity_query, points=args.points, seed=args.seed,
        )  # fmt: skip
        written["similarity_space.png"] = plot_similarity_space(space, layout.report() / "similarity_space.png")
    for name, path in written.items():
        logger.info("wrote %s: %s", name, path)


def parser() -> argparse.ArgumentParser:
    top = command_parser(MODULE, __doc__)
    commands = add_commands(top)

    def inputs(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--pool", required=True, help="pool manifest (JSON lines; see the pool command)")
        sub.add_argument("--eval-dir", required=True, help="folder of this evaluation's caches and results")

    pool = add_command(
        commands, "pool", "write a pool manifest: of a folder of images, or of the dataset pipeline's folders"
    )
    pool.add_argument(
        "--images",
        required=True,
        help="a folder of image files (searched recursively), or with --built the folder given to "
        "`training.hub_data download --output`",
    )
    pool.add_argument("--built", help="the built datasets (`training.hub_data build`): the paper's pool")
    pool.add_argument("--output", required=True, help="the manifest to write (JSON lines)")
    pool.set_defaults(run=run_pool)

    embed = add_command(commands, "embed", "embed the pool with one method (resumes)")
    inputs(embed)
    embed.add_argument("--method", required=True, choices=METHOD_NAMES)
    embed.add_argument(
        "--model",
        help="the method's model id or folder (relsim, tuned-clip, tuned-dino: required; others: the paper's)",
    )
    embed.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="relsim: load --model with the code saved beside it (AutoModel); without it the installed "
        "modeling_relsim classes load it and a folder of another model type is refused",
    )
    add_device_options(embed)
    embed.add_argument("--batch-size", type=int, default=32, help="images per forward")
    embed.add_argument("--num-workers", type=int, default=4, help="DataLoader workers decoding images")
    embed.add_argument("--caption-model", default="Qwen/Qwen2.5-VL-7B-Instruct", help="captioner of clip-t/qwen-t")
    embed.add_argument("--text-encoder", default=DEFAULT_TEXT_ENCODER, help="qwen-t: the caption text model")
    embed.add_argument("--lpips-image-size", type=int, default=64, help="lpips: side of the compared images")
    embed.add_argument("--dreamsim-cache", default="./models", help="dreamsim: where its weights are kept")
    embed.set_defaults(run=run_embed)

    retrieve_parser = add_command(commands, "retrieve", "nearest neighbours and judge-free metrics per method")
    inputs(retrieve_parser)
    retrieve_parser.add_argument("--methods", nargs="+", required=True, choices=METHOD_NAMES)
    retrieve_parser.add_argument("--queries", type=int, default=1000, help="queries drawn from the test split")
    retrieve_parser.add_argument("--seed", type=int, default=0, help="seed of the query draw")
    retrieve_parser.add_argument("--top-k", type=int, default=10, help="neighbours kept per query")
    retrieve_parser.add_argument("--backend", choices=("exact", "faiss"), default="exact")
    retrieve_parser.add_argument("--faiss-index", default="Flat", help="FAISS index factory, e.g. IVF4096,PQ64")
    retrieve_parser.add_argument(
        "--text-encoder", default=DEFAULT_TEXT_ENCODER, help="caption agreement: the caption text model"
    )
    retrieve_parser.set_defaults(run=run_retrieve)

    judge = add_command(commands, "judge", "score each query's first neighbours with a judge (cached)")
    inputs(judge)
    judge.add_argument("--methods", nargs="+", required=True, choices=METHOD_NAMES)
    judge.add_argument("--judge", choices=("openai", "local"), required=True)
    judge.add_argument(
        "--judge-model",
        help="openai: the endpoint's model (RELSIM_JUDGE_MODEL, gpt-4o); local: a Qwen2.5-VL id or folder",
    )
    judge.add_argument("--judge-name", help="folder name of this judge's results (default from judge and model)")
    judge.add_argument("--base-url", help="OpenAI-compatible endpoint (RELSIM_JUDGE_BASE_URL, else OpenAI)")
    judge.add_argument("--top", type=int, default=1, help="how many neighbours of each query to judge")
    judge.add_argument("--batch-size", type=int, default=32, help="pairs per request batch (local: per forward)")
    add_device_options(judge)  # the local judge's model
    judge.set_defaults(run=run_judge)

    report = add_command(commands, "report", "table, HTML page and similarity-space plot")
    inputs(report)
    report.add_argument("--html-queries", type=int, default=20, help="queries shown in index.html")
    report.add_argument("--top-k", type=int, default=10, help="neighbours shown per query")
    report.add_argument("--similarity-query", help="image hash of the query of the similarity-space plot")
    report.add_argument("--relational-method", default="relsim")
    report.add_argument("--attribute-method", default="clip-i")
    report.add_argument("--points", type=int, default=3000, help="images in the similarity-space plot")
    report.add_argument("--seed", type=int, default=0, help="seed of the plotted images' draw")
    report.set_defaults(run=run_report)

    for name, cli in (("synthetic", synthetic_cli), ("ablate", ablation_cli), ("analogy", analogy_cli)):
        add_cli_command(commands, name, cli)
    return top


main, program = command_line(MODULE, parser)

if __name__ == "__main__":
    raise SystemExit(program())
