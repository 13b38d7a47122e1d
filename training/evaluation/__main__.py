"""relsim's evaluation, step by step (each step resumes; outputs go under --eval-dir):

python -m training.evaluation pool --built built --images downloads --output pool.jsonl
python -m training.evaluation embed --pool pool.jsonl --eval-dir eval --method relsim --model ORG/relsim --device cuda
python -m training.evaluation retrieve --pool pool.jsonl --eval-dir eval --methods relsim clip-i dino --queries 1000
python -m training.evaluation judge --pool pool.jsonl --eval-dir eval --judge openai --methods relsim clip-i dino
python -m training.evaluation report --pool pool.jsonl --eval-dir eval --similarity-query HASH
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

import torch

from training.evaluation.embed import embed_pool
from training.evaluation.embedding_cache import EmbeddingCache
from training.evaluation.layout import EvalLayout
from training.evaluation.methods import METHOD_NAMES, MethodOptions, build_method
from training.evaluation.pool import by_hash, manifest_from_downloads, read_pool
from training.evaluation.retrieval import read_retrievals, retrieve, sample_queries, write_retrievals


logger = logging.getLogger("relsim.eval")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def run_pool(args: argparse.Namespace) -> None:
    path = manifest_from_downloads(args.built, args.images, args.output)
    logger.info("wrote the pool manifest %s (%d images)", path, len(read_pool(path)))


def run_embed(args: argparse.Namespace) -> None:
    layout = EvalLayout(args.eval_dir)
    options = MethodOptions(
        model=args.model, device=args.device, dtype=DTYPES[args.dtype], caption_model=args.caption_model,
        caption_cache=layout.captions(), text_encoder=args.text_encoder, lpips_image_size=args.lpips_image_size,
        dreamsim_cache=args.dreamsim_cache,
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


def shared_queries(layout: EvalLayout, items, count: int, seed: int) -> list[str]:
    """One query list for every method: written by the first `retrieve`, reused (and checked) afterwards.

    A request for more queries than the test split holds takes them all, says so, and records the real count
    (beside the requested one); a rerun is accepted when its seed matches and it would draw that same list, whether
    it asks for the same number again or for the real count.
    """
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
    from training.evaluation.judge_free import caption_agreement, seed_group_map

    layout = EvalLayout(args.eval_dir)
    items = read_pool(args.pool)
    queries = shared_queries(layout, items, args.queries, args.seed)
    text_encoder = None
    if any(item.caption for item in items):
        from sentence_transformers import SentenceTransformer

        from training.trainer.caption_encoder import resolve_text_encoder

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
        from training.evaluation.judges.openai_compatible import OpenAICompatibleJudge

        return OpenAICompatibleJudge(base_url=args.base_url, model=args.judge_model)
    from training.evaluation.judges.local_vlm import LocalVLMJudge
    from training.evaluation.qwen_chat import QwenVLChat

    chat = QwenVLChat.from_pretrained(
        args.judge_model or "Qwen/Qwen2.5-VL-7B-Instruct", device=args.device, dtype=DTYPES[args.dtype]
    )
    return LocalVLMJudge(chat, batch_size=args.batch_size)


def run_judge(args: argparse.Namespace) -> None:
    from training.evaluation.judges import judge_retrievals
    from training.evaluation.judges.cache import JudgementCache, write_judgements

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
    from training.evaluation.report import write_report

    layout = EvalLayout(args.eval_dir)
    items = by_hash(read_pool(args.pool))
    written = write_report(layout, items, queries=args.html_queries, top_k=args.top_k)
    if args.similarity_query:
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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluation", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    pool = commands.add_parser("pool", help="write the pool manifest from the dataset pipeline's folders")
    pool.add_argument("--built", required=True)
    pool.add_argument("--images", required=True, help="the img2dataset output folder of `training.hub_data download`")
    pool.add_argument("--output", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--pool", required=True, help="pool manifest (JSON lines)")
        sub.add_argument("--eval-dir", required=True)
        sub.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
        sub.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
        sub.add_argument("--batch-size", type=int, default=32)
        sub.add_argument("--text-encoder", default="sentence-transformers/all-MiniLM-L6-v2")
        sub.add_argument("--seed", type=int, default=0)
        sub.add_argument("--top-k", type=int, default=10)

    embed = commands.add_parser("embed", help="embed the pool with one method (resumes)")
    common(embed)
    embed.add_argument("--method", required=True, choices=METHOD_NAMES)
    embed.add_argument("--model", help="the method's model id or folder (relsim: required; others: the paper's)")
    embed.add_argument("--num-workers", type=int, default=4)
    embed.add_argument("--caption-model", default="Qwen/Qwen2.5-VL-7B-Instruct", help="captioner of clip-t/qwen-t")
    embed.add_argument("--lpips-image-size", type=int, default=64)
    embed.add_argument("--dreamsim-cache", default="./models")

    retrieve_parser = commands.add_parser("retrieve", help="nearest neighbours and judge-free metrics per method")
    common(retrieve_parser)
    retrieve_parser.add_argument("--methods", nargs="+", required=True, choices=METHOD_NAMES)
    retrieve_parser.add_argument("--queries", type=int, default=1000)
    retrieve_parser.add_argument("--backend", choices=("exact", "faiss"), default="exact")
    retrieve_parser.add_argument("--faiss-index", default="Flat", help="FAISS index factory, e.g. IVF4096,PQ64")

    judge = commands.add_parser("judge", help="score each query's first neighbours with a judge (cached)")
    common(judge)
    judge.add_argument("--methods", nargs="+", required=True, choices=METHOD_NAMES)
    judge.add_argument("--judge", choices=("openai", "local"), required=True)
    judge.add_argument(
        "--judge-model",
        help="openai: the endpoint's model (RELSIM_JUDGE_MODEL, gpt-4o); local: a Qwen2.5-VL id or folder",
    )
    judge.add_argument("--judge-name", help="folder name of this judge's results (default from judge and model)")
    judge.add_argument("--base-url", help="OpenAI-compatible endpoint (RELSIM_JUDGE_BASE_URL, else OpenAI)")
    judge.add_argument("--top", type=int, default=1, help="how many neighbours of each query to judge")

    report = commands.add_parser("report", help="table, HTML page and similarity-space plot")
    common(report)
    report.add_argument("--html-queries", type=int, default=20)
    report.add_argument("--similarity-query", help="image hash of the query of the similarity-space plot")
    report.add_argument("--relational-method", default="relsim")
    report.add_argument("--attribute-method", default="clip-i")
    report.add_argument("--points", type=int, default=3000)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["synthetic"]:
        from training.evaluation.synthetic_cli import main as synthetic

        synthetic(argv[1:])
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = parse_args(argv)
    {"pool": run_pool, "embed": run_embed, "retrieve": run_retrieve, "judge": run_judge, "report": run_report}[
        args.command
    ](args)


if __name__ == "__main__":
    main()
