"""Train relsim: `python -m training.trainer train --config training/configs/<recipe>.yaml [--field value ...]`.

The YAML recipe sets `ModelArguments`, `DataArguments` and `RelSimTrainingArguments` fields; command-line
`--field value` pairs (`--max-steps` or `--max_steps`) override it. A recipe or command line that sets any objective
option field (`ObjectiveTrainingArguments`) trains with `ObjectiveTrainer`, any other with the paper's
`RelSimTrainer`. Multi-GPU: `accelerate launch` or `torchrun` run the same command under DDP.
`--resume-from-checkpoint last` (or `true`) continues from the last complete checkpoint of `output_dir`.

This module composes the two trainers, so it is the one module of `training.trainer` outside `objectives/` that
imports the objective options (tests/test_layout.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import transformers
from transformers import HfArgumentParser, set_seed

from training.cli import HelpFormatter, configure_logging, prog_name
from training.cpu_threads import set_torch_threads
from training.recipes import read_recipe
from training.trainer.arguments import DataArguments, ModelArguments, RelSimTrainingArguments
from training.trainer.checkpoints import resolve_resume_checkpoint
from training.trainer.collator import build_collator
from training.trainer.data import load_training_data
from training.trainer.model_card import run_model_card, save_run_settings
from training.trainer.model_factory import build_processor_and_model, save_model_arguments
from training.trainer.objectives.arguments import OBJECTIVE_FIELDS, ObjectiveTrainingArguments
from training.trainer.objectives.state_file import objective_state_problem
from training.trainer.objectives.trainer import ObjectiveTrainer
from training.trainer.trainer import RelSimTrainer


logger = logging.getLogger("relsim.train")


ARGUMENT_CLASSES = (ModelArguments, DataArguments, RelSimTrainingArguments)
# the same with the objective options' fields: every field a recipe may set
OBJECTIVE_ARGUMENT_CLASSES = (ModelArguments, DataArguments, ObjectiveTrainingArguments)
TRAINERS = {RelSimTrainingArguments: RelSimTrainer, ObjectiveTrainingArguments: ObjectiveTrainer}


def _defaults() -> dict[str, Any]:
    defaults = {}
    for argument_class in OBJECTIVE_ARGUMENT_CLASSES:
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


def build_parser(training_class: type[RelSimTrainingArguments] = RelSimTrainingArguments) -> HfArgumentParser:
    """Every field of the model, data and `training_class` arguments as an option (dashes or underscores), plus
    `--config`; the full `--help-all` listing."""
    parser = HfArgumentParser(
        (ModelArguments, DataArguments, training_class),
        prog=f"{prog_name('training.trainer')} train",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    # SUPPRESS keeps it out of the parsed namespace: parse_arguments expands the recipe itself
    parser.add_argument(
        "--config", default=argparse.SUPPRESS, metavar="RECIPE.yaml", help="YAML recipe of field names and values"
    )
    return parser


def _without_debug_flag(argv: list[str]) -> list[str]:
    """Drops the command line's bare `--debug` (tracebacks); `--debug VALUE` is TrainingArguments.debug and stays."""
    kept = []
    for position, token in enumerate(argv):
        following = argv[position + 1] if position + 1 < len(argv) else None
        if token == "--debug" and (following is None or following.startswith("-")):
            continue
        kept.append(token)
    return kept


def parse_arguments(argv: Sequence[str]) -> tuple[ModelArguments, DataArguments, RelSimTrainingArguments]:
    """The three argument dataclasses from `--config RECIPE.yaml` (if given) overridden by `--field value` pairs; the
    training arguments are `ObjectiveTrainingArguments` when the two set any objective option field.

    Raises:
        ValueError: for an unknown recipe key or option, or a recipe that is not a mapping.
        FileNotFoundError: for a missing recipe file.
    """
    argv = _without_debug_flag(list(argv))
    if "--help-all" in argv:
        build_parser(ObjectiveTrainingArguments).print_help()
        raise SystemExit(0)
    recipe_arguments: list[str] = []
    argv = [part for token in argv for part in (token.split("=", 1) if token.startswith("--config=") else [token])]
    if "--config" in argv:
        position = argv.index("--config")
        if position + 1 >= len(argv):
            raise ValueError("--config needs a YAML file")
        config_path = Path(argv[position + 1])
        del argv[position : position + 2]
        recipe = read_recipe(config_path, hint=" (the recipes are in training/configs/)")
        recipe_arguments = recipe_to_arguments(recipe, str(config_path))
    arguments = recipe_arguments + argv
    return parse_into(arguments, training_arguments_class(arguments))


def objective_fields_in(arguments: Sequence[str]) -> list[str]:
    """The objective option fields named by `--field` (or `--field=value`, dashes or underscores) tokens."""
    named = {token[2:].split("=", 1)[0].replace("-", "_") for token in arguments if token.startswith("--")}
    return [name for name in OBJECTIVE_FIELDS if name in named]


def training_arguments_class(arguments: Sequence[str]) -> type[RelSimTrainingArguments]:
    """`ObjectiveTrainingArguments` when the arguments set any objective option field, else the paper's."""
    return ObjectiveTrainingArguments if objective_fields_in(arguments) else RelSimTrainingArguments


def parse_into(
    arguments: Sequence[str], training_class: type[RelSimTrainingArguments]
) -> tuple[ModelArguments, DataArguments, RelSimTrainingArguments]:
    """The three argument dataclasses from `--field value` tokens, the training arguments of `training_class`.

    Raises:
        ValueError: an unknown field, or an objective option field given to the paper's `RelSimTrainingArguments`.
    """
    options = objective_fields_in(arguments)
    if options and not issubclass(training_class, ObjectiveTrainingArguments):
        raise ValueError(
            f"{', '.join(options)}: objective option fields, which {training_class.__name__} does not have; parse "
            "them with ObjectiveTrainingArguments and train with ObjectiveTrainer (training.trainer.objectives)"
        )
    try:
        return build_parser(training_class).parse_args_into_dataclasses(args=list(arguments))
    except ValueError as error:
        raise ValueError(f"{error} (check the recipe's keys and the overrides)") from error


def main(argv: Sequence[str] | None = None) -> Path:
    argv = list(sys.argv[1:] if argv is None else argv)
    model_arguments, data_arguments, training_arguments = parse_arguments(argv)
    configure_logging("--debug" in argv)
    transformers.utils.logging.set_verbosity(training_arguments.get_process_log_level())
    # before any model is built: a bad checkpoint fails in a second, naming the file
    # a plain run refuses an options run's checkpoint too (its state would be dropped), so both check the state file
    resume_from = resolve_resume_checkpoint(
        training_arguments.resume_from_checkpoint,
        training_arguments.output_dir,
        state_problem=partial(objective_state_problem, arguments=training_arguments),
    )
    threads = set_torch_threads(training_arguments.torch_num_threads)
    chosen_by = "torch_num_threads" if training_arguments.torch_num_threads else "torch's default: one per core"
    logger.info("torch runs %d intra-op threads (%s)", threads, chosen_by)
    set_seed(training_arguments.seed)

    processor, model = build_processor_and_model(model_arguments)
    train_dataset, eval_dataset = load_training_data(data_arguments, training_arguments.seed)
    logger.info("%d training examples, %s held out", len(train_dataset), len(eval_dataset) if eval_dataset else "none")
    if training_arguments.process_index == 0:
        save_model_arguments(model_arguments, training_arguments.output_dir)
        save_run_settings(
            training_arguments.output_dir,
            data_arguments,
            training_arguments,
            train_examples=len(train_dataset),
            eval_examples=len(eval_dataset) if eval_dataset is not None else None,
        )

    trainer = TRAINERS[type(training_arguments)](
        model=model,
        args=training_arguments,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=build_collator(processor),
        processing_class=processor,
    )
    result = trainer.train(resume_from_checkpoint=resume_from)
    trainer.save_metrics("train", result.metrics)
    if eval_dataset is not None:
        trainer.save_metrics("eval", trainer.evaluate())
    trainer.save_state()
    exported = trainer.export_model()
    if trainer.is_world_process_zero() and not model_arguments.uses_image_encoder:  # the card describes relsim
        card = run_model_card(training_arguments.output_dir, trainer.model.config, trainer.state.global_step)
        card.save(exported / "README.md")
    logger.info("standalone model written to %s", exported)
    return exported
