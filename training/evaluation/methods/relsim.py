"""relsim itself: a saved RelSimModel folder or hub id with the processor saved next to it, or a model in memory.

`load_relsim` is the one way a user-given relsim id is loaded: with the installed `modeling_relsim` classes by
default (a folder's own .py files never run, and a folder of another model type is refused), or, with
`trust_remote_code=True` (the `--trust-remote-code` option), through `AutoModel` and the code saved beside the
weights, as transformers does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import PIL.Image
import torch

from modeling_relsim import RelSimConfig, RelSimModel, RelSimProcessor, move_batch
from training.errors import loading_model
from training.evaluation.methods.base import EmbeddingMethod
from training.evaluation.model_fingerprint import model_fingerprint
from training.store import tensors_fingerprint


def load_relsim(
    model_name_or_path: str, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False
) -> tuple[RelSimModel, RelSimProcessor]:
    """The model and processor saved in `model_name_or_path` (hub id or folder).

    Raises:
        ValueError: without `trust_remote_code`, for a folder whose `model_type` is not relsim.
        ModelLoadError: naming the id when it cannot be found or downloaded.
    """
    from transformers import AutoModel, AutoProcessor, PretrainedConfig

    with loading_model(model_name_or_path, "the relsim model", "--model"):
        if trust_remote_code:
            model = AutoModel.from_pretrained(model_name_or_path, trust_remote_code=True, dtype=dtype)
            return model, AutoProcessor.from_pretrained(model_name_or_path, trust_remote_code=True)
        config, _ = PretrainedConfig.get_config_dict(model_name_or_path)
        model_type = config.get("model_type")
        if model_type != RelSimConfig.model_type:
            raise ValueError(
                f"{model_name_or_path} holds a {model_type!r} model, not a {RelSimConfig.model_type!r} one; its own "
                "code would have to run to load it: pass --trust-remote-code if you trust that code"
            )
        model = RelSimModel.from_pretrained(model_name_or_path, dtype=dtype)
        return model, RelSimProcessor.from_pretrained(model_name_or_path)


class RelSimMethod(EmbeddingMethod):
    """relsim's embedding: image -> Qwen2.5-VL -> hidden state at the query token -> projection, L2-normalised.

    Args:
        model_name_or_path: the folder or hub id to load; with `model` and `processor` given (a model just trained,
            the demo's untrained twin) it only names them in the cache identity.
    """

    name = "relsim"

    def __init__(
        self,
        model_name_or_path: str | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        model: RelSimModel | None = None,
        processor: RelSimProcessor | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__(device)
        if model_name_or_path is None and (model is None or processor is None):
            raise ValueError("RelSimMethod needs model_name_or_path, or both an in-memory model and its processor")
        self.model_name_or_path = model_name_or_path or "in-memory"
        if model is None or processor is None:
            model, processor = load_relsim(model_name_or_path, dtype, trust_remote_code)
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.model.check_processor(self.processor)
        # a model handed in may differ from the files at the path: fingerprint what actually embeds
        self.weights = (
            tensors_fingerprint(model.state_dict().items())
            if model is not None
            else model_fingerprint(model_name_or_path)
        )

    def identity(self) -> dict[str, Any]:
        return {"model": self.model_name_or_path, "weights": self.weights, "processor": self.processor.settings()}

    def preprocess(self, images: Sequence[PIL.Image.Image]) -> Any:
        prepared = [self.processor.prepare_image(image, index) for index, image in enumerate(images)]
        return self.processor.batch_prepared_images(prepared)

    def embed(self, batch: Any, image_hashes: Sequence[str]) -> torch.Tensor:
        return self.model.get_image_features(**move_batch(batch, self.device)).float().cpu()
