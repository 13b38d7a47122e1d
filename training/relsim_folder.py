"""Loading a saved relsim folder or hub id: the one way a user-given relsim id is loaded (evaluation, search, the
pipeline's embed stage, studies).

By default with the installed `modeling_relsim` classes (a folder's own .py files never run, and a folder of another
model type is refused); with `trust_remote_code=True` (the `--trust-remote-code` option) through `AutoModel` and the
code saved beside the weights, as transformers does.
"""

from __future__ import annotations

import torch
from transformers import AutoModel, AutoProcessor, PretrainedConfig

from modeling_relsim import RelSimConfig, RelSimModel, RelSimProcessor
from training.errors import loading_model


def load_relsim(
    model_name_or_path: str, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False
) -> tuple[RelSimModel, RelSimProcessor]:
    """The model and processor saved in `model_name_or_path` (hub id or folder).

    Raises:
        ValueError: without `trust_remote_code`, for a folder whose `model_type` is not relsim.
        ModelLoadError: naming the id when it cannot be found or downloaded.
    """
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
