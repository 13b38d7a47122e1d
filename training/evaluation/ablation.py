"""The ablation of issue 17: training variants (objective options, tuned baselines) under one reduced step count,
each scored on a synthetic benchmark's held-out pool over several seeds.

A plan (YAML, `training/configs/ablation-*.yaml`) names the base recipe, the step count, the world, the pool and the
variants; a variant is data, `{name, about, overrides}`, its overrides any trainer field. The world is the
compositional one by default (`world: relations`: training on the seen relations, scored by the relational
benchmark on seen and unseen relations apart); `world: families` is the eight-family benchmark of issue 17.

Every run writes its result to `<output>/runs/<variant>/seed-<seed>/result.json`; a rerun skips the runs already
there, so a table can be grown or spread over machines and reported once all runs are in.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modeling_relsim import RelSimModel
from training.cpu_threads import set_torch_threads
from training.evaluation.methods.relsim import RelSimMethod
from training.evaluation.methods.tuned_encoder import TunedEncoderMethod
from training.evaluation.relation_benchmark import relation_pool, run_relation_benchmark
from training.evaluation.synthetic_retrieval import held_out_pool, run_benchmark
from training.recipes import read_recipe
from training.store import atomic_write
from training.trainer.caption_encoder import CaptionEncoder
from training.trainer.collator import build_collator
from training.trainer.data import load_training_data
from training.trainer.model_factory import build_processor_and_model
from training.trainer.objectives.arguments import ObjectiveTrainingArguments
from training.trainer.objectives.trainer import ObjectiveTrainer
from training.trainer.train import OBJECTIVE_ARGUMENT_CLASSES, parse_into, recipe_to_arguments


logger = logging.getLogger(__name__)

RESULT_FILE = "result.json"
WORLDS = ("relations", "families")
# the table's columns per world; every metric of the benchmark is kept in each run's result.json
REPORTED_METRICS = {
    "relations": ("seen mAP", "unseen mAP", "unseen text mAP", "unseen attribute trap"),
    "families": ("mAP", "recall@1", "attribute trap"),
}


@dataclass(frozen=True)
class Variant:
    """One row of the table: a name, what it is, and the recipe fields it changes."""

    name: str
    about: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class AblationPlan:
    """What the ablation runs: the base recipe, shared settings and the variants (see the plan YAML files)."""

    recipe: Path
    steps: int
    variants: list[Variant]
    warmup_fraction: float = 0.0
    world: str = "relations"
    pool_num_per_relation: int = 5
    pool_num_per_family: int = 25
    pool_seed: int = 1
    overrides: dict[str, Any] = field(default_factory=dict)
    source: str = "plan"

    @property
    def reported_metrics(self) -> tuple[str, ...]:
        return REPORTED_METRICS[self.world]

    def select(self, names: Sequence[str] | None) -> list[Variant]:
        """The variants called `names` (all when None), in the plan's order."""
        if not names:
            return list(self.variants)
        known = [variant.name for variant in self.variants]
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(f"{self.source}: no variant {', '.join(map(repr, unknown))}; it has {', '.join(known)}")
        return [variant for variant in self.variants if variant.name in names]


def read_plan(path: str | Path) -> AblationPlan:
    """Reads a plan YAML; a relative `recipe` is taken from the plan's folder.

    Raises:
        FileNotFoundError: the plan or its recipe is missing.
        ValueError: naming the plan and the malformed entry.
    """
    path = Path(path)
    data = read_recipe(path, "ablation plan", " (the plans are training/configs/ablation-*.yaml)")
    allowed = {spec.name for spec in dataclasses.fields(AblationPlan)} - {"source"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; a plan has {sorted(allowed)}")
    for key in ("recipe", "steps", "variants"):
        if key not in data:
            raise ValueError(f"{path}: the plan needs {key!r}")
    if data.get("world", "relations") not in WORLDS:
        raise ValueError(f"{path}: world must be one of {WORLDS}, got {data['world']!r}")
    variants = []
    for position, entry in enumerate(data["variants"], start=1):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ValueError(f"{path}: variant {position} needs a name (a mapping with name, about, overrides)")
        extra = sorted(set(entry) - {"name", "about", "overrides"})
        if extra or not isinstance(entry.get("overrides", {}), dict):
            raise ValueError(f"{path}: variant {entry['name']!r} has name, about and overrides (a mapping) only")
        variants.append(Variant(entry["name"], entry.get("about", ""), dict(entry.get("overrides") or {})))
    names = [variant.name for variant in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: variant names repeat: {names}")
    recipe = path.parent / data["recipe"]  # unchanged when absolute
    if not recipe.is_file():
        raise FileNotFoundError(f"{path}: recipe {data['recipe']} does not exist")
    return AblationPlan(**{**data, "recipe": recipe, "variants": variants, "source": str(path)})


def trainer_fields() -> set[str]:
    """Every field a recipe may set (ModelArguments, DataArguments, ObjectiveTrainingArguments)."""
    return {spec.name for argument_class in OBJECTIVE_ARGUMENT_CLASSES for spec in dataclasses.fields(argument_class)}


def check_variants(plan: AblationPlan, variants: Sequence[Variant]) -> None:
    """Stops before any training when a variant (or the plan) sets a field the trainer does not have.

    Raises:
        ValueError: `variant 'x': unknown field 'y'`, naming every such field.
    """
    known = trainer_fields()
    problems = [f"plan overrides: unknown field {name!r}" for name in plan.overrides if name not in known]
    problems += [
        f"variant {variant.name!r}: unknown field {name!r}"
        for variant in variants
        for name in variant.overrides
        if name not in known
    ]
    if problems:
        raise ValueError(
            f"{plan.source}: {'; '.join(problems)} (not a ModelArguments, DataArguments or ObjectiveTrainingArguments "
            "field of this trainer; run the other variants with --variants)"
        )


def run_settings(plan: AblationPlan, variant: Variant, seed: int, steps: int, run_dir: Path) -> dict[str, Any]:
    """The recipe of one run: base recipe, the plan's world, then the plan's overrides, the variant's, and the run's
    own."""
    recipe = read_recipe(plan.recipe)
    return {
        **recipe,
        "synthetic_world": plan.world,
        **plan.overrides,
        **variant.overrides,
        "max_steps": steps,
        "warmup_steps": round(plan.warmup_fraction * steps),
        "seed": seed,
        "initializer_seed": seed,
        "output_dir": str(run_dir),
        "save_strategy": "no",
        "report_to": "none",
    }


class AblationRunner:
    """Trains and scores runs in this process, sharing what does not change: the caption encoder, the training data
    of equal data settings, and the held-out pool."""

    def __init__(self, plan: AblationPlan, output_dir: str | Path, batch_size: int = 64) -> None:
        self.plan = plan
        self.output_dir = Path(output_dir)
        self.batch_size = batch_size
        self._caption_encoders: dict[str, Any] = {}
        self._datasets: dict[str, Any] = {}
        self._pool = None

    def run_dir(self, variant: Variant, seed: int) -> Path:
        return self.output_dir / "runs" / variant.name / f"seed-{seed}"

    def pool(self):
        if self._pool is None:
            image_size = self.plan.overrides.get("synthetic_image_size", 112)
            if self.plan.world == "relations":
                self._pool = relation_pool(self.plan.pool_num_per_relation, self.plan.pool_seed, image_size)
            else:
                self._pool = held_out_pool(self.plan.pool_num_per_family, self.plan.pool_seed, image_size=image_size)
        return self._pool

    def score(self, name: str, method: Any, caption_encoder: Any) -> dict[str, float]:
        """Every metric of the plan's benchmark for one trained model (the relation texts embedded by the caption
        encoder it trained against)."""
        if self.plan.world == "relations":
            methods = {name: method}
            run = run_relation_benchmark(methods, self.pool(), self.batch_size, caption_encoder=caption_encoder)
            return run.table[name]
        return run_benchmark({name: method}, self.pool(), batch_size=self.batch_size).table[name]

    def result(self, variant: Variant, seed: int, steps: int) -> dict[str, Any]:
        """The run's result, read back when a finished run with the same settings is on disk, else trained now."""
        run_dir = self.run_dir(variant, seed)
        settings = run_settings(self.plan, variant, seed, steps, run_dir)
        path = run_dir / RESULT_FILE
        if path.is_file():
            stored = json.loads(path.read_text(encoding="utf-8"))
            if stored.get("settings") == json.loads(json.dumps(settings)):
                logger.info("%s seed %d: already done (%s)", variant.name, seed, path)
                return stored
            logger.warning("%s seed %d: %s was made with other settings; running again", variant.name, seed, path)
        result = self.train_and_score(variant, seed, settings)
        run_dir.mkdir(parents=True, exist_ok=True)

        atomic_write(path, (json.dumps(result, indent=2) + "\n").encode("utf-8"))
        return result

    def train_and_score(self, variant: Variant, seed: int, settings: dict[str, Any]) -> dict[str, Any]:
        from transformers import set_seed

        where = f"{self.plan.source}: variant {variant.name!r}"
        arguments = recipe_to_arguments(settings, where)
        # every variant, the plain loss included, trains with the options' trainer (options off: the paper's method)
        model_arguments, data_arguments, training_arguments = parse_into(arguments, ObjectiveTrainingArguments)
        set_torch_threads(training_arguments.torch_num_threads)
        set_seed(training_arguments.seed)
        processor, model = build_processor_and_model(model_arguments)
        data_key = json.dumps(dataclasses.asdict(data_arguments), sort_keys=True)
        if data_key not in self._datasets:
            self._datasets[data_key] = load_training_data(data_arguments, training_arguments.seed)[0]
        text_encoder = training_arguments.text_encoder or model.config.text_encoder
        if text_encoder not in self._caption_encoders:
            self._caption_encoders[text_encoder] = CaptionEncoder(text_encoder, training_arguments.device)
        trainer = ObjectiveTrainer(
            model=model,
            args=training_arguments,
            train_dataset=self._datasets[data_key],
            data_collator=build_collator(processor),
            processing_class=processor,
            caption_encoder=self._caption_encoders[text_encoder],
        )
        logger.info("%s seed %d: training %d steps", variant.name, seed, training_arguments.max_steps)
        started = time.perf_counter()
        outcome = trainer.train()
        seconds = time.perf_counter() - started
        trained = trainer.model.merge_and_unload() if hasattr(trainer.model, "merge_and_unload") else trainer.model
        method = embedding_method(trained, processor, f"{variant.name}/seed-{seed}", training_arguments.device)
        metrics = self.score(variant.name, method, self._caption_encoders[text_encoder])
        return {
            "variant": variant.name,
            "seed": seed,
            "steps": training_arguments.max_steps,
            "seconds_per_step": seconds / max(training_arguments.max_steps, 1),
            "train_loss": outcome.metrics.get("train_loss"),
            "metrics": metrics,
            "settings": json.loads(json.dumps(settings)),
        }


def embedding_method(model: Any, processor: Any, name: str, device: Any):
    """The evaluation method for a model just trained: relsim's, or a tuned encoder's."""
    if isinstance(model, RelSimModel):
        return RelSimMethod(name, device=device, model=model, processor=processor)

    return TunedEncoderMethod(name, device=device, model=model, image_processor=processor)


def run_ablation(
    plan: AblationPlan,
    output_dir: str | Path,
    seeds: int,
    steps: int | None = None,
    variant_names: Sequence[str] | None = None,
    batch_size: int = 64,
) -> dict[str, list[dict[str, Any]]]:
    """Every selected variant at seeds 0..seeds-1 (checked first, so an unknown field stops it before any training);
    returns each variant's run results."""
    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}")
    steps = steps or plan.steps
    if steps < 1:
        raise ValueError(f"--steps must be at least 1, got {steps}")
    variants = plan.select(variant_names)
    check_variants(plan, variants)
    runner = AblationRunner(plan, output_dir, batch_size=batch_size)
    results: dict[str, list[dict[str, Any]]] = {}
    for seed in range(seeds):  # seed-major: after the first pass every variant has one result
        for variant in variants:
            results.setdefault(variant.name, []).append(runner.result(variant, seed, steps))
    return results
