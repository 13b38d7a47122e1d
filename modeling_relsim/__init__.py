"""relsim: relational visual similarity as a Hugging Face model (config, model, processor).

Importing this package registers the classes with the Auto API and marks them for remote code, so
`save_pretrained` writes the .py files and `auto_map` that `trust_remote_code=True` loading needs.
"""

from transformers import AutoConfig, AutoModel, AutoProcessor

from .configuration_relsim import RelSimConfig
from .image_batches import ImageEmbeddings, ImageFailure
from .image_decoding import DEFAULT_MAX_IMAGE_PIXELS, UnreadableImageError, decode_image
from .modeling_relsim import RelSimModel, RelSimOutput, RelSimPreTrainedModel, move_batch
from .processing_relsim import RelSimProcessor


AutoConfig.register(RelSimConfig.model_type, RelSimConfig, exist_ok=True)
AutoModel.register(RelSimConfig, RelSimModel, exist_ok=True)
AutoProcessor.register(RelSimConfig, RelSimProcessor, exist_ok=True)
RelSimConfig.register_for_auto_class()
RelSimModel.register_for_auto_class("AutoModel")
RelSimProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "ImageEmbeddings",
    "ImageFailure",
    "RelSimConfig",
    "RelSimModel",
    "RelSimOutput",
    "RelSimPreTrainedModel",
    "RelSimProcessor",
    "UnreadableImageError",
    "decode_image",
    "move_batch",
]
