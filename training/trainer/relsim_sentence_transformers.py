"""relsim as a Sentence Transformers model: images through relsim, relation texts through its text encoder.

This file is copied verbatim into every exported relsim folder (see `sentence_transformers_files.py`), where
`modules.json` names its class as `relsim_sentence_transformers.RelSimSentenceEncoder`. Sentence Transformers
finds that class in the folder itself (transformers' dynamic-module loader, so `trust_remote_code=True` is needed)
and calls its `load`, which loads relsim's own remote code (`AutoModel`/`AutoProcessor`) from the same folder and
the text encoder named by the model config's `text_encoder` (a hub id or folder, not bundled).

It imports only torch, transformers and sentence_transformers: it must load where nothing of this project is
installed. It is kept out of `modeling_relsim/`, whose remote code must load without sentence_transformers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modality import infer_batch_modality
from sentence_transformers.base.modules import InputModule
from transformers import AutoConfig, AutoModel, AutoProcessor


MODALITIES = ["image", "text"]


class RelSimSentenceEncoder(InputModule):
    """Routes a batch by modality: images to relsim's query-token read-out, texts to the configured text encoder.

    Both land in the same L2-normalised `projection_dim` space (relsim was trained to match the text encoder's
    caption embeddings), so `model.similarity(text_embeddings, image_embeddings)` ranks images by a relation text.

    Args:
        relsim_model: a loaded `RelSimModel` (through its remote code).
        processor: its `RelSimProcessor`.
        text_model: the `SentenceTransformer` named by `relsim_model.config.text_encoder`.
    """

    config_file_name = "sentence_transformers_relsim.json"
    forward_kwargs = {"modality"}
    save_in_root = True

    def __init__(self, relsim_model: torch.nn.Module, processor: Any, text_model: SentenceTransformer) -> None:
        super().__init__()
        text_dimension = text_model.get_embedding_dimension()
        if text_dimension != relsim_model.config.projection_dim:
            raise ValueError(
                f"the text encoder {relsim_model.config.text_encoder!r} gives {text_dimension}-d embeddings but "
                f"relsim projects to {relsim_model.config.projection_dim}; name the text encoder relsim was trained "
                "against (config_kwargs={'text_encoder': ...})"
            )
        self.relsim_model = relsim_model.eval()
        self.processor = processor
        self.text_model = text_model.eval()

    @property
    def modalities(self) -> list[str]:
        return list(MODALITIES)

    @property
    def tokenizer(self) -> Any:
        return self.text_model.tokenizer

    @property
    def max_seq_length(self) -> int | None:
        return self.text_model.max_seq_length

    def get_embedding_dimension(self) -> int:
        return self.relsim_model.config.projection_dim

    def preprocess(
        self, inputs: Sequence[Any], prompt: str | None = None, modality: str | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Texts -> the text encoder's features; images (PIL, arrays, tensors, file paths) -> a relsim batch.

        `modality` ("image" or "text") overrides the inference from the inputs' types, e.g. for file paths
        without an image extension.
        """
        if modality is None:
            modality = infer_batch_modality(list(inputs), supported_modalities=self.modalities)
        if modality == "text":
            features = dict(self.text_model.preprocess(list(inputs), prompt=prompt))
        elif modality == "image":
            if prompt:
                raise ValueError(f"relsim image inputs take no prompt, got prompt={prompt!r}")
            features = dict(self.processor(images=list(inputs)))
        else:
            raise ValueError(f"relsim embeds one modality per batch, one of {MODALITIES}; this batch is {modality!r}")
        features["modality"] = modality
        return features

    def forward(self, features: dict[str, Any], modality: str | None = None, **kwargs: Any) -> dict[str, Any]:
        modality = modality or features["modality"]
        inputs = {key: value for key, value in features.items() if key != "modality"}
        if modality == "text":
            embeddings = self.text_model(inputs)["sentence_embedding"]
        else:
            embeddings = self.relsim_model(**inputs, return_dict=True).image_embeds
        # float32 whatever the towers' dtypes, so text and image rows stack and compare
        features["sentence_embedding"] = embeddings.float()
        return features

    def get_config_dict(self) -> dict[str, Any]:
        return {"text_encoder": self.relsim_model.config.text_encoder}

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        """Writes relsim's weights, processor and remote code (the text encoder stays a reference)."""
        self.relsim_model.save_pretrained(output_path, safe_serialization=safe_serialization)
        self.processor.save_pretrained(output_path)
        self.save_config(output_path)

    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        token: bool | str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        trust_remote_code: bool = False,
        model_kwargs: dict[str, Any] | None = None,
        processor_kwargs: dict[str, Any] | None = None,
        config_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> RelSimSentenceEncoder:
        """Loads relsim from the folder (or hub repo) and its text encoder from `config.text_encoder`.

        `config_kwargs` override relsim config fields, e.g. `{"text_encoder": "/local/all-MiniLM-L6-v2"}` where the
        hub is unreachable; `model_kwargs` go to `AutoModel.from_pretrained` (`dtype`, `attn_implementation`, ...),
        `processor_kwargs` to `AutoProcessor.from_pretrained`.
        """
        hub_kwargs: dict[str, Any] = {"token": token, "cache_dir": cache_folder, "revision": revision}
        hub_kwargs["local_files_only"] = local_files_only
        if subfolder:
            hub_kwargs["subfolder"] = subfolder
        config = AutoConfig.from_pretrained(
            model_name_or_path, trust_remote_code=trust_remote_code, **hub_kwargs, **(config_kwargs or {})
        )
        relsim_model = AutoModel.from_pretrained(
            model_name_or_path, config=config, trust_remote_code=trust_remote_code, **hub_kwargs, **(model_kwargs or {})
        )
        processor = AutoProcessor.from_pretrained(
            model_name_or_path, trust_remote_code=trust_remote_code, **hub_kwargs, **(processor_kwargs or {})
        )
        try:
            text_model = SentenceTransformer(
                config.text_encoder, cache_folder=cache_folder, token=token, local_files_only=local_files_only
            )
        except OSError as error:
            raise OSError(
                f"could not load relsim's text encoder {config.text_encoder!r} (the model config's text_encoder): "
                f"{error}; pass a local copy with config_kwargs={{'text_encoder': PATH}}"
            ) from error
        return cls(relsim_model, processor, text_model)
