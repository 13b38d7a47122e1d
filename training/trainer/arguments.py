"""Configuration of a relsim training run: model, data and trainer arguments (parsed by `HfArgumentParser`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from modeling_relsim.configuration_relsim import DEFAULT_INSTRUCTION


@dataclass
class ModelArguments:
    """Which relsim to train and how: from a Qwen2.5-VL backbone, a relsim folder, or a tiny random backbone."""

    backbone: str | None = field(
        default="Qwen/Qwen2.5-VL-7B-Instruct", metadata={"help": "Qwen2.5-VL hub id or folder to build relsim from"}
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "start from a saved RelSimModel folder instead of a backbone"}
    )
    tiny_backbone: bool = field(
        default=False, metadata={"help": "a tiny random Qwen2.5-VL and offline tokenizer (CPU recipes and tests)"}
    )
    tiny_preset: str = field(default="tiny", metadata={"help": "size of the tiny backbone: tiny, medium or small"})
    dtype: str = field(default="float32", metadata={"help": "weights dtype: float32, bfloat16 or float16"})
    attn_implementation: str = field(default="sdpa", metadata={"help": "sdpa, eager or flash_attention_2"})
    use_lora: bool = field(default=True, metadata={"help": "LoRA on the language model; else train it in full"})
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    train_vision_tower: bool = field(
        default=False, metadata={"help": "without LoRA, also train the vision tower (e.g. a tiny model from scratch)"}
    )
    projection_dim: int = 384
    instruction: str | None = field(
        default=DEFAULT_INSTRUCTION, metadata={"help": 'text before the image; "" for none (the official release)'}
    )
    use_system_prompt: bool = True
    image_size: int = 448
    crop: str = field(default="center", metadata={"help": "center (square crop) or none (keep the aspect ratio)"})
    initializer_seed: int = 0
    image_encoder: str | None = field(
        default=None,
        metadata={
            "help": "train the tuned vision-encoder baseline instead of relsim: a CLIP or DINOv2 hub id or folder "
            "(e.g. openai/clip-vit-large-patch14, facebook/dinov2-large), with a new projection to projection_dim"
        },
    )
    tiny_image_encoder: str | None = field(
        default=None, metadata={"help": "a tiny random tuned baseline: clip or dinov2 (CPU recipes, the ablation)"}
    )
    image_encoder_trainable_layers: int | None = field(
        default=None,
        metadata={"help": "tuned baselines: train the encoder's last N blocks (default all; 0: the projection only)"},
    )

    def __post_init__(self) -> None:
        if not (self.backbone or self.model_name_or_path or self.tiny_backbone or self.uses_image_encoder):
            raise ValueError(
                "set one of backbone, model_name_or_path, tiny_backbone, image_encoder or tiny_image_encoder"
            )
        if self.uses_image_encoder:
            self._check_image_encoder()
        if self.tiny_preset not in ("tiny", "medium", "small"):
            raise ValueError(f"tiny_preset must be tiny, medium or small, got {self.tiny_preset!r}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")

    @property
    def uses_image_encoder(self) -> bool:
        """Whether the run trains a tuned CLIP/DINOv2 baseline rather than relsim."""
        return bool(self.image_encoder or self.tiny_image_encoder)

    def _check_image_encoder(self) -> None:
        if self.image_encoder and self.tiny_image_encoder:
            raise ValueError("set image_encoder or tiny_image_encoder, not both")
        if self.tiny_image_encoder and self.tiny_image_encoder not in ("clip", "dinov2"):
            raise ValueError(f"tiny_image_encoder must be clip or dinov2, got {self.tiny_image_encoder!r}")
        if self.tiny_backbone or self.model_name_or_path:
            raise ValueError(
                "image_encoder / tiny_image_encoder train a tuned CLIP/DINOv2 baseline: leave tiny_backbone and "
                "model_name_or_path (relsim's) unset"
            )
        if self.use_lora:
            raise ValueError("use_lora adapts relsim's language model; set use_lora: false for an image encoder")
        layers = self.image_encoder_trainable_layers
        if layers is not None and layers < 0:
            raise ValueError(f"image_encoder_trainable_layers must be >= 0 (or unset for all), got {layers}")

    def relsim_settings(self) -> dict[str, object]:
        """The RelSimConfig/RelSimProcessor settings these arguments fix."""
        return {
            "instruction": self.instruction or None,
            "use_system_prompt": self.use_system_prompt,
            "image_size": self.image_size,
            "crop": self.crop,
        }


@dataclass
class DataArguments:
    """Where the (image, caption) examples come from: a `datasets` dataset or the official jsonl + image folder."""

    dataset_name: str | None = field(default=None, metadata={"help": "datasets hub id or local folder"})
    dataset_config: str | None = None
    train_split: str = "train"
    eval_split: str | None = field(default=None, metadata={"help": "held-out split of dataset_name"})
    image_column: str = "image"
    caption_column: str = "caption"
    captions_jsonl: str | None = field(default=None, metadata={"help": "official captions jsonl (training)"})
    eval_captions_jsonl: str | None = field(default=None, metadata={"help": "official captions jsonl (held out)"})
    image_dir: str | None = field(default=None, metadata={"help": "folder of <image_hash>.<ext> for the jsonl rows"})
    eval_fraction: float = field(
        default=0.0, metadata={"help": "carve this fraction of the training data out as the held-out split"}
    )
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    synthetic_num_per_family: int | None = field(
        default=None, metadata={"help": "generate this many training images per synthetic relation family"}
    )
    synthetic_eval_num_per_family: int | None = field(
        default=None, metadata={"help": "held-out-attribute synthetic images per family for evaluation"}
    )
    synthetic_image_size: int = 112
    synthetic_seed: int = 0
    synthetic_world: str = field(
        default="families",
        metadata={
            "help": "which generated world: 'families' (the eight relation families, counts per family) or "
            "'relations' (the compositional world: counts per relation, training relations only; the held-out "
            "split draws held-out looks of every relation, seen and unseen)"
        },
    )

    def __post_init__(self) -> None:
        sources = [bool(self.dataset_name), bool(self.captions_jsonl), bool(self.synthetic_num_per_family)]
        if sum(sources) > 1:
            raise ValueError("set one data source: dataset_name, captions_jsonl or synthetic_num_per_family")
        if self.captions_jsonl and not self.image_dir:
            raise ValueError("captions_jsonl needs image_dir (a folder of <image_hash>.<ext>)")
        if self.synthetic_world not in ("families", "relations"):
            raise ValueError(f"synthetic_world must be 'families' or 'relations', got {self.synthetic_world!r}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")


@dataclass
class RelSimTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus the paper's contrastive loss (temperature, GradCache), the text tower and the
    unreadable-image policy. The objective options extend it (`training.trainer.objectives.arguments`)."""

    text_encoder: str | None = field(
        default=None, metadata={"help": "sentence-transformers model; default: the model config's text_encoder"}
    )
    symmetric_loss: bool = field(default=False, metadata={"help": "add text->image over unique captions"})
    fixed_logit_scale: float | None = field(
        default=None, metadata={"help": "freeze the temperature at this log inverse temperature"}
    )
    contrastive_micro_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "GradCache micro-batch: the whole per-device batch stays one contrastive batch, computed in "
            "micro-batches of this size (gradient accumulation would not add negatives)"
        },
    )
    max_unreadable_fraction: float = field(
        default=0.01, metadata={"help": "stop when more than this fraction of the training images is unreadable"}
    )
    export_dir: str | None = field(
        default=None, metadata={"help": "where the merged standalone model goes (default: <output_dir>/final)"}
    )
    torch_num_threads: int | None = field(
        default=None,
        metadata={
            "help": "torch intra-op CPU threads, set before any work; results repeat to the last digit only with "
            "the same count, so recipes that promise numbers fix it (default: one per core)"
        },
    )
    remove_unused_columns: bool = field(default=False, metadata={"help": "the collator needs image and caption"})
    ddp_find_unused_parameters: bool | None = field(default=False, metadata={"help": "every trainable part is used"})
    ddp_broadcast_buffers: bool | None = field(
        default=False, metadata={"help": "buffers are constant; broadcasting them would make GradCache replays sync"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.contrastive_micro_batch_size is not None and self.contrastive_micro_batch_size < 1:
            raise ValueError(f"contrastive_micro_batch_size must be positive, got {self.contrastive_micro_batch_size}")
        if self.torch_num_threads is not None and self.torch_num_threads < 1:
            raise ValueError(f"torch_num_threads must be a positive number of threads, got {self.torch_num_threads}")
        if not 0.0 <= self.max_unreadable_fraction <= 1.0:
            raise ValueError(f"max_unreadable_fraction must be in [0, 1], got {self.max_unreadable_fraction}")

    def extra_objectives(self) -> list[str]:
        """The fields of loss terms beyond the paper's that this run turns on: none here (a subclass that adds terms
        names its own), so the paper's trainer can refuse arguments whose terms it would silently leave out."""
        return []
