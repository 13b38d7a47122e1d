"""Tuned vision-encoder baselines (issue 17): CLIP or DINOv2 with a new projection to the caption space, trained by
`RelSimTrainer` on relsim's captions and loss; saved and loaded as ordinary transformers folders."""

from training.tuned_encoders.configuration import TunedEncoderConfig
from training.tuned_encoders.modeling import TunedEncoderOutput, TunedImageEncoder
from training.tuned_encoders.tiny import TINY_ENCODERS, build_tiny_encoder


__all__ = ["TINY_ENCODERS", "TunedEncoderConfig", "TunedEncoderOutput", "TunedImageEncoder", "build_tiny_encoder"]
