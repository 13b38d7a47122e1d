"""Train relsim: `python -m training.trainer train --config training/configs/<recipe>.yaml [--key value ...]`.

The YAML recipe sets `ModelArguments`, `DataArguments` and `RelSimTrainingArguments` fields; command-line
`--key value` pairs override it. Multi-GPU: `accelerate launch` or `torchrun` run the same command under DDP.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import transformers
import yaml
from transformers import HfArgumentParser, set_seed

from hub_cards.render import render_model_card
from training.cpu_threads import set_torch_threads
from training.trainer.arguments import DataArguments, ModelArguments, RelSimTrainingArguments
from training.trainer.collator import RelSimCollator
from training.trainer.data import load_training_data
from training.trainer.model_factory import build_processor_and_model, save_model_arguments
from training.trainer.trainer import RelSimTrainer


logger = logging.getLogger("relsim.train")


ARGUMENT_CLASSES = (ModelArguments, DataArguments, RelSimTrainingArguments)


def _defaults() -> dict[str, Any]:
    defaults = {}
    for argument_class in ARGUMENT_CLASSES:
        for spec in dataclasses.fields(argument_class):
            if spec.default is not dataclasses.MISSING:
                defaults[spec.name] = spec.default
            elif spec.default_factory is not dataclasses.MISSING:
                defaults[spec.name] = spec.default_factory()
    return defaults


def recipe_to_arguments(recipe: dict[str, Any], source: str) -> list[str]:
    """A YAML mapping as `--key value` command-line arguments (lists spread, dicts as JSON).

    `null` keeps a field's default, so it is refused where the default is not None (an empty instruction is
    written `instruction: ""`).
    """
    defaults = _defaults()
    arguments: list[str] = []
    for key, value in recipe.items():
        if not isinstance(key, str):
            raise ValueError(f"{source}: keys must be argument names, got {key!r}")
        if value is None:
            if defaults.get(key) is not None:
                raise ValueError(
                    f"{source}: {key}: null would keep the default {defaults[key]!r}; write the value you mean "
                    '(e.g. instruction: "" for no instruction)'
                )
            continue
        if isinstance(value, bool):
            arguments += [f"--{key}", str(value).lower()]
        elif isinstance(value, list):
            arguments += [f"--{key}", *map(str, value)]
        elif isinstance(value, dict):
            arguments += [f"--{key}", json.dumps(value)]
        else:
            arguments += [f"--{key}", str(value)]
    return arguments


def parse_arguments(argv: Sequence[str]) -> tuple[ModelArguments, DataArguments, RelSimTrainingArguments]:
    parser = HfArgumentParser(ARGUMENT_CLASSES)
    argv = list(argv)
    recipe_arguments: list[str] = []
    if "--config" in argv:
        position = argv.index("--config")
        if position + 1 >= len(argv):
            raise ValueError("--config needs a YAML file")
        config_path = Path(argv[position + 1])
        del argv[position : position + 2]
        recipe = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
        if not isinstance(recipe, dict):
            raise ValueError(f"{config_path}: a recipe is a mapping of argument names to values")
        recipe_arguments = recipe_to_arguments(recipe, str(config_path))
    try:
        return parser.parse_args_into_dataclasses(args=recipe_arguments + argv)
    except ValueError as error:
        raise ValueError(f"{error} (check the recipe's keys and the overrides)") from error


def main(argv: Sequence[str] | None = None) -> Path:
    model_arguments, data_arguments, training_arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity(training_arguments.get_process_log_level())
    threads = set_torch_threads(training_arguments.torch_num_threads)
    chosen_by = "torch_num_threads" if training_arguments.torch_num_threads else "torch's default: one per core"
    logger.info("torch runs %d intra-op threads (%s)", threads, chosen_by)
    set_seed(training_arguments.seed)

    processor, model = build_processor_and_model(model_arguments)
    train_dataset, eval_dataset = load_training_data(data_arguments, training_arguments.seed)
    logger.info("%d training examples, %s held out", len(train_dataset), len(eval_dataset) if eval_dataset else "none")
    if training_arguments.process_index == 0:
        save_model_arguments(model_arguments, training_arguments.output_dir)

    trainer = RelSimTrainer(
        model=model,
        args=training_arguments,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=RelSimCollator(processor),
        processing_class=processor,
    )
    result = trainer.train(resume_from_checkpoint=training_arguments.resume_from_checkpoint)
    trainer.save_metrics("train", result.metrics)
    if eval_dataset is not None:
        trainer.save_metrics("eval", trainer.evaluate())
    trainer.save_state()
    exported = trainer.export_model()
    if trainer.is_world_process_zero():
        write_model_card(exported, model_arguments, data_arguments, training_arguments)
    logger.info("standalone model written to %s", exported)
    return exported


def recipe_summary(model: ModelArguments, data: DataArguments, training: RelSimTrainingArguments) -> dict[str, str]:
    """The run's recipe as model-card rows."""
    schedule = getattr(training.lr_scheduler_type, "value", training.lr_scheduler_type)
    adapters = "none (full training)"
    if model.use_lora:
        targets = ", ".join(model.lora_target_modules)
        adapters = f"LoRA r={model.lora_r}, alpha={model.lora_alpha}, dropout {model.lora_dropout} on {targets}"
    batch = f"{training.per_device_train_batch_size} per device"
    if training.contrastive_micro_batch_size:
        batch += f", GradCache micro-batches of {training.contrastive_micro_batch_size}"
    synthetic = f"synthetic relations, {data.synthetic_num_per_family} images per family"
    return {
        "base": "tiny random Qwen2.5-VL, trained from scratch" if model.tiny_backbone else str(model.backbone),
        "adapters": adapters,
        "optimiser": f"AdamW lr {training.learning_rate:g}, weight decay {training.weight_decay:g}",
        "schedule": str(schedule),
        "steps": str(training.max_steps),
        "contrastive batch": batch,
        "images": f"{model.image_size} px, crop {model.crop}",
        "data": data.dataset_name or data.captions_jsonl or synthetic,
    }


def write_model_card(
    folder: Path, model: ModelArguments, data: DataArguments, training: RelSimTrainingArguments
) -> None:
    """README.md for the exported model: this run's recipe and, when the run evaluated, its held-out scores."""
    evaluation_file = Path(training.output_dir) / "eval_results.json"
    evaluation = json.loads(evaluation_file.read_text()) if evaluation_file.is_file() else {}
    scores = {name.removeprefix("eval_"): round(value, 4) for name, value in evaluation.items() if "recall" in name}
    note = "Held-out image -> caption retrieval at the end of this run." if scores else "This run did not evaluate."
    card = render_model_card(
        repo_id=training.hub_model_id or folder.name,
        base_model="Qwen/Qwen2.5-VL-7B-Instruct" if model.tiny_backbone else str(model.backbone),
        recipe=recipe_summary(model, data, training),
        evaluation=scores,
        metric_name="recall",
        evaluation_note=note,
        text_encoder=training.text_encoder or "sentence-transformers/all-MiniLM-L6-v2",
    )
    card.save(folder / "README.md")


if __name__ == "__main__":
    main()
