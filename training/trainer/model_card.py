"""The model card of a trained relsim, rendered from the run's real settings and metrics.

The trainer's `final/` folder and `python -m training.trainer export` write the same card for the same checkpoint:
both read what the run saved in its output folder (the model, data and training arguments, the trainer state with
its evaluation entries) and the exported model's config (image size, crop, prompt, projection, text tower).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from hub_cards.render import LICENSE, describe_images, render_model_card
from modeling_relsim import RelSimConfig
from training.trainer.arguments import DataArguments, ModelArguments, RelSimTrainingArguments
from training.trainer.checkpoints import TRAINER_STATE_FILE
from training.trainer.model_factory import load_model_arguments


logger = logging.getLogger(__name__)

RUN_SETTINGS_FILE = "relsim_run_settings.json"
PROJECT_LICENSE = "apache-2.0"
EVALUATION_ROWS = {
    "eval_recall@1": "image -> caption recall@1",
    "eval_recall@5": "image -> caption recall@5",
    "eval_accuracy": "in-batch accuracy (image -> caption)",
    "eval_loss": "contrastive loss",
}


def save_run_settings(
    output_dir: str | Path,
    data: DataArguments,
    training: RelSimTrainingArguments,
    train_examples: int,
    eval_examples: int | None,
) -> Path:
    """Writes what the card needs to know about the run beside its checkpoints (hub tokens are redacted)."""
    settings = {
        "data": asdict(data),
        "training": {**json.loads(training.to_json_string()), "world_size": training.world_size},
        "train_examples": train_examples,
        "eval_examples": eval_examples,
    }
    path = Path(output_dir) / RUN_SETTINGS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    return path


def _is_hub_id(name: str | None) -> bool:
    if not name or Path(name).exists():
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return "/" in name


def _backbone(model: ModelArguments | None) -> tuple[str | None, str]:
    """(hub base_model or None, the backbone in words)."""
    if model is None:
        return None, "a Qwen2.5-VL backbone (the run's model arguments were not found)"
    if model.tiny_backbone:
        return None, f"a tiny Qwen2.5-VL with random weights (`{model.tiny_preset}` preset, no pretrained backbone)"
    source = model.model_name_or_path or model.backbone
    if _is_hub_id(source):
        return source, source
    return None, f"the Qwen2.5-VL of the local folder `{Path(source).name}`"


def _dataset_name(name: str) -> str:
    """A hub id as it is; a local folder by its name only (a card should not publish the trainer's file system)."""
    return name if _is_hub_id(name) else Path(name).name


def _training_data(data: dict[str, Any], examples: int | None) -> tuple[str, str, str]:
    """(what the model was trained on, the limit that puts on it, the licence)."""
    count = f"{examples:,} " if examples is not None else ""
    if data.get("synthetic_num_per_family") and data.get("synthetic_world") == "relations":
        return (
            f"{count}synthetic images of the compositional relational world ({data['synthetic_num_per_family']} per "
            f"training relation, the 305 of 407 that training sees; {data['synthetic_image_size']} px, seed "
            f"{data['synthetic_seed']}) from `training.synthetic.relations`, each with its relation's anonymous "
            "caption composed from layout, change, exception and structure phrases.",
            "Trained only on synthetic images of simple shapes: it has not seen photographs, and the relations it "
            "knows are combinations of the generator's factors (102 of them held out of training to test that).",
            PROJECT_LICENSE,
        )
    if data.get("synthetic_num_per_family"):
        return (
            f"{count}synthetic images ({data['synthetic_num_per_family']} per relation family, "
            f"{data['synthetic_image_size']} px, seed {data['synthetic_seed']}) from `training.synthetic`, each with "
            "its family's anonymous caption.",
            "Trained only on synthetic images of simple shapes: it has not seen photographs, and the relations it "
            "knows are the generator's families.",
            PROJECT_LICENSE,
        )
    if data.get("captions_jsonl"):
        source = f"`{Path(data['captions_jsonl']).name}` (official captions format)"
    elif data.get("dataset_name"):
        config = f", configuration `{data['dataset_config']}`" if data.get("dataset_config") else ""
        source = f"the `{data['train_split']}` split of `{_dataset_name(data['dataset_name'])}`{config}"
    else:
        return f"Not recorded (the run folder has no {RUN_SETTINGS_FILE}).", "The training data is unknown.", LICENSE
    return (
        f"{count}images with anonymous captions from {source}.",
        "The notion of shared logic it learnt is that of the captions it was trained on, with their biases.",
        LICENSE,
    )


def _held_out(data: dict[str, Any], examples: int | None) -> str | None:
    if data.get("synthetic_eval_num_per_family") and data.get("synthetic_world") == "relations":
        split = (
            f"synthetic images in held-out shapes and colours of all 407 relations, the 102 unseen in training "
            f"included, {data['synthetic_eval_num_per_family']} per relation"
        )
    elif data.get("synthetic_eval_num_per_family"):
        split = f"synthetic images with held-out attributes, {data['synthetic_eval_num_per_family']} per family"
    elif data.get("eval_captions_jsonl"):
        split = f"`{Path(data['eval_captions_jsonl']).name}`"
    elif data.get("dataset_name") and data.get("eval_split"):
        split = f"the `{data['eval_split']}` split of `{_dataset_name(data['dataset_name'])}`"
    elif data.get("eval_fraction"):
        split = f"{data['eval_fraction']:.0%} of the training data, held out at random"
    else:
        return None
    return f"{split} ({examples:,} images)" if examples is not None else split


def _recipe(
    model: ModelArguments | None, backbone: str, training: dict[str, Any], step: int, image_text: str
) -> dict[str, str]:
    rows = {"backbone": backbone}
    if model is not None and model.tiny_backbone:
        rows["backbone"] += ": made for tests and demos, so the card declares no base model"
    if model is not None:
        rows["adapters"] = (
            f"LoRA r={model.lora_r}, alpha={model.lora_alpha}, dropout {model.lora_dropout} on "
            f"{', '.join(model.lora_target_modules)}; query vector, projection and temperature trained in full"
            if model.use_lora
            else "none: full training" + ("" if model.train_vision_tower else ", vision tower frozen")
        )
    if training:
        rows["optimiser"] = (
            f"{training['optim']}, lr {training['learning_rate']:g}, weight decay {training['weight_decay']:g}"
        )
        rows["schedule"] = f"{training['lr_scheduler_type']}, warm-up {training['warmup_steps']:g} steps"
        world_size = training.get("world_size", 1)
        per_device = training["per_device_train_batch_size"]
        batch = f"{per_device * world_size} images ({per_device} per process x {world_size})"
        if training.get("contrastive_micro_batch_size"):
            batch += f", GradCache micro-batches of {training['contrastive_micro_batch_size']}"
        rows["contrastive batch"] = batch
        loss = "InfoNCE over unique captions" + (", symmetric" if training.get("symmetric_loss") else "")
        fixed = training.get("fixed_logit_scale")
        temperature = f"temperature fixed at exp(-{fixed:g})" if fixed is not None else "learnable temperature"
        rows["loss"] = f"{loss}, {temperature}"
        rows["precision"] = "bf16" if training.get("bf16") else "fp16" if training.get("fp16") else "float32"
    rows["steps"] = f"{step:,} optimizer steps"
    rows["images"] = image_text
    return rows


def _evaluation_at(step: int, state_files: list[Path]) -> dict[str, float]:
    """The last evaluation logged at exactly `step` in the first trainer state that has one."""
    for path in state_files:
        if not path.is_file():
            continue
        history = json.loads(path.read_text(encoding="utf-8")).get("log_history", [])
        entries = [entry for entry in history if entry.get("step") == step and "eval_loss" in entry]
        if entries:
            return {label: round(entries[-1][key], 4) for key, label in EVALUATION_ROWS.items() if key in entries[-1]}
    return {}


def run_model_card(
    run_dir: str | Path, config: RelSimConfig, step: int, checkpoint: str | Path | None = None
) -> ModelCard:
    """The card of the model a run reached at `step`.

    Args:
        run_dir: the run's output folder (saved arguments, `trainer_state.json`).
        config: the exported model's config (its processor settings, projection and text tower are the card's).
        step: the optimizer step the model was taken at.
        checkpoint: the `checkpoint-N` folder it came from, whose trainer state is read when the run's is missing.
    """
    run_dir = Path(run_dir)
    try:
        model = load_model_arguments(run_dir)
    except FileNotFoundError:
        logger.warning("%s has no model arguments: the card cannot name the backbone", run_dir)
        model = None
    settings_path = run_dir / RUN_SETTINGS_FILE
    settings = json.loads(settings_path.read_text(encoding="utf-8")) if settings_path.is_file() else {}
    data, training = settings.get("data", {}), settings.get("training", {})
    base_model, backbone = _backbone(model)
    training_data, data_limit, license = _training_data(data, settings.get("train_examples"))
    held_out = _held_out(data, settings.get("eval_examples"))
    state_files = [run_dir / TRAINER_STATE_FILE] + ([Path(checkpoint) / TRAINER_STATE_FILE] if checkpoint else [])
    evaluation = _evaluation_at(step, state_files)
    if evaluation:
        note = (
            f"Held-out split: {held_out or 'the held-out split'}, evaluated at step {step:,}. Recall@k: how often an "
            "image's own caption is among the k nearest of the split's unique captions."
        )
    elif held_out:
        note = f"The model at step {step:,} was not evaluated on the held-out split ({held_out})."
    else:
        note = "This run held out no data, so the model was not evaluated."
    return render_model_card(
        repo_id=training.get("hub_model_id") or run_dir.resolve().name,
        base_model=base_model,
        backbone_description=backbone,
        license=license,
        license_note=(
            "the project's licence; the synthetic training images are generated by its code"
            if license == PROJECT_LICENSE
            else "the training data's licence; check it before commercial use"
        ),
        datasets_used=(data["dataset_name"],) if _is_hub_id(data.get("dataset_name")) else (),
        projection_dim=config.projection_dim,
        text_encoder=training.get("text_encoder") or config.text_encoder,
        image_size=config.image_size,
        crop=config.crop,
        instruction=config.instruction,
        use_system_prompt=config.use_system_prompt,
        training_data=training_data,
        data_limit=data_limit,
        recipe=_recipe(model, backbone, training, step, describe_images(config.image_size, config.crop)),
        evaluation=evaluation,
        evaluation_columns=("metric", "value"),
        evaluation_note=note,
    )
