"""The run's recipe: the sections of the sharded run and the stages around it, beside the stages' own
(`training.pipeline.recipe`):

    ray:
      address: null                  # null: start Ray here; "auto" / "ray://host:10001": join a running cluster
      num_cpus: null                 # only when Ray is started here (tests: 2)
      object_store_memory: null      # bytes, only when Ray is started here (tests: a few hundred MB)
      shard_size: 10000              # input rows per output shard (the unit of resume)
      input_num_cpus: 0.25           # CPUs of each task reading a pending shard's input file (a light read)
      actors:                        # per stage: Ray resources, actor-pool size and rows per map_batches call
        filter:  {num_gpus: 1, num_cpus: 4, concurrency: 8, batch_size: 64}
        caption: {num_gpus: 1, num_cpus: 4, concurrency: 8, batch_size: 32}
        embed:   {num_gpus: 1, num_cpus: 4, concurrency: 8, batch_size: 64}
    download: {output_format: webdataset, image_size: 448, processes: 16, threads: 64, shard_size: 10000,
               url_file_shards: 100,   # download shards per URL file handed to img2dataset (it reads a file whole)
               allow_url_schemes: [], max_image_bytes: 33554432}  # http(s) only unless opted in; 32 MiB per image
    embed:    {model: runs/relsim/final, dtype: bfloat16, device: auto, batch_size: 64}
    index:    {factory: "IVF65536,PQ64", metric: inner_product, training_sample: 2000000, nprobe: 64,
               recall_queries: 100, recall_k: 10}   # recall@k against exact search, reported in summary.json

`load_run_recipe` splits a YAML file into these sections and the local pipeline's `PipelineRecipe`, so one file
configures either executor; unknown keys are refused with their names, as the local recipe does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.pipeline.recipe import PipelineRecipe, build_settings, recipe_from_dict
from training.recipes import read_recipe
from training.url_fetch import DEFAULT_MAX_IMAGE_BYTES, FetchPolicy, parse_url_schemes


@dataclass
class ActorSettings:
    """One stage's Ray actors: resources each, how many (`concurrency`), rows per call. A crashed actor is restarted
    and its task retried by Ray Data's defaults (its non-deprecated API has no setting for them)."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    concurrency: int = 1
    batch_size: int | None = None


@dataclass
class RaySettings:
    address: str | None = None
    num_cpus: int | None = None
    object_store_memory: int | None = None
    shard_size: int = 10_000
    input_num_cpus: float = 0.25
    actors: dict[str, ActorSettings] = field(default_factory=dict)

    def actor(self, stage: str) -> ActorSettings:
        return self.actors.get(stage, ActorSettings())


@dataclass
class DownloadSettings:
    """img2dataset's settings: `output_format` "webdataset" or "parquet" (images inside the shards), resizing,
    parallelism (`processes` x `threads` on the local distributor; one Ray task per shard on Ray). URLs are fetched
    over http(s) only, plus the schemes in `allow_url_schemes` (an opt-in, e.g. ["file"]), and an image may have at
    most `max_image_bytes` (`training.url_fetch`)."""

    output_format: str = "webdataset"
    image_size: int = 448
    resize_mode: str = "keep_ratio"
    processes: int = 1
    threads: int = 16
    timeout: int = 10
    retries: int = 0
    shard_size: int = 10_000
    url_file_shards: int = 100
    allow_url_schemes: list[str] = field(default_factory=list)
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES

    def fetch_policy(self) -> FetchPolicy:
        return FetchPolicy(parse_url_schemes(self.allow_url_schemes), self.max_image_bytes)


@dataclass
class EmbedSettings:
    """The relsim model (a saved folder or hub id) and how `RelSimModel.embed_images` runs it."""

    model: str | None = None
    device: str = "auto"
    dtype: str = "float32"
    batch_size: int = 32
    trust_remote_code: bool = False


@dataclass
class IndexSettings:
    """The FAISS index over the embeddings (`training.vector_index`): any factory string, trained on a sample;
    `recall_queries` pool vectors measure its recall@`recall_k` against exact search (0: not measured)."""

    factory: str = "Flat"
    metric: str = "inner_product"
    training_sample: int = 100_000
    nprobe: int = 64
    recall_queries: int = 100
    recall_k: int = 10


@dataclass
class RunRecipe:
    pipeline: PipelineRecipe
    ray: RaySettings = field(default_factory=RaySettings)
    download: DownloadSettings = field(default_factory=DownloadSettings)
    embed: EmbedSettings = field(default_factory=EmbedSettings)
    index: IndexSettings = field(default_factory=IndexSettings)


DOWNLOAD_FORMATS = ("webdataset", "parquet")


def run_recipe_from_dict(values: dict[str, Any], where: str = "recipe") -> RunRecipe:
    """A recipe from a parsed mapping; the `ray`, `download`, `embed` and `index` sections are this module's, the
    rest goes to the local pipeline's `recipe_from_dict`."""
    values = dict(values)
    ray_values = dict(values.pop("ray", None) or {})
    actors = ray_values.pop("actors", None) or {}
    if not isinstance(actors, dict):
        raise ValueError(f"{where}: ray.actors maps stage names to settings, got {type(actors).__name__}")
    ray = build_settings(RaySettings, ray_values, f"{where}: ray")
    ray.actors = {
        name: build_settings(ActorSettings, value, f"{where}: ray.actors.{name}") for name, value in actors.items()
    }
    recipe = RunRecipe(
        pipeline=PipelineRecipe(),
        ray=ray,
        download=build_settings(DownloadSettings, values.pop("download", None), f"{where}: download"),
        embed=build_settings(EmbedSettings, values.pop("embed", None), f"{where}: embed"),
        index=build_settings(IndexSettings, values.pop("index", None), f"{where}: index"),
    )
    recipe.pipeline = recipe_from_dict(values, where)
    if ray.shard_size < 1:
        raise ValueError(f"{where}: ray.shard_size must be at least 1, got {ray.shard_size}")
    if recipe.download.shard_size < 1 or recipe.download.url_file_shards < 1:
        raise ValueError(f"{where}: download.shard_size and download.url_file_shards must be at least 1")
    try:
        recipe.download.fetch_policy()
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: download: {error}") from None
    if recipe.download.output_format not in DOWNLOAD_FORMATS:
        raise ValueError(f"{where}: download.output_format must be one of {DOWNLOAD_FORMATS}")
    if recipe.index.recall_queries < 0 or recipe.index.recall_k < 1:
        raise ValueError(f"{where}: index.recall_queries must be at least 0 and index.recall_k at least 1")
    for name, actor in ray.actors.items():
        if actor.concurrency < 1 or (actor.batch_size is not None and actor.batch_size < 1):
            raise ValueError(f"{where}: ray.actors.{name}: concurrency and batch_size must be at least 1")
    return recipe


def load_run_recipe(path: str | Path | None) -> RunRecipe:
    """The recipe in `path` (YAML), or the defaults when `path` is None."""
    if path is None:
        return RunRecipe(pipeline=PipelineRecipe())
    return run_recipe_from_dict(read_recipe(path), str(path))
