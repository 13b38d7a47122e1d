"""The files that let a saved relsim folder load as `SentenceTransformer(folder, trust_remote_code=True)`.

Sentence Transformers reads `modules.json` (one module, saved in the folder's root, of type
`relsim_sentence_transformers.RelSimSentenceEncoder`), finds that class in the file of the same name in the folder
(copied here from `training/trainer/relsim_sentence_transformers.py`) and lets it load relsim's own remote code and
the text encoder named by the config. `config_sentence_transformers.json` sets cosine similarity.

The trainer's `final/` folder, `python -m training.trainer export` and `convert-official` all write them.
"""

from __future__ import annotations

import json
import logging
import shutil
from importlib import metadata
from pathlib import Path


logger = logging.getLogger(__name__)

MODULE_SOURCE = Path(__file__).with_name("relsim_sentence_transformers.py")
MODULE_CLASS = "relsim_sentence_transformers.RelSimSentenceEncoder"
# the oldest release whose module API (InputModule with modalities, trust_remote_code custom modules) it was tested on
MINIMUM_SENTENCE_TRANSFORMERS = ">=6.2"


def _installed_versions() -> dict[str, str]:
    versions = {}
    for key, distribution in (
        ("sentence_transformers", "sentence-transformers"),
        ("transformers", "transformers"),
        ("pytorch", "torch"),
    ):
        try:
            versions[key] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return versions


def write_sentence_transformers_files(model_dir: str | Path) -> Path:
    """Adds `modules.json`, `config_sentence_transformers.json` and the custom module to a saved relsim folder.

    Args:
        model_dir: a folder holding a saved RelSimModel and RelSimProcessor (`config.json` with `auto_map`).

    Returns:
        `model_dir`.

    Raises:
        FileNotFoundError: `model_dir` holds no `config.json`.
    """
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} holds no config.json; save the relsim model there first")
    modules = [{"idx": 0, "name": "0", "path": "", "type": MODULE_CLASS}]
    (model_dir / "modules.json").write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
    settings = {
        "model_type": "SentenceTransformer",
        "__version__": _installed_versions(),
        "requirements": {
            "sentence-transformers": {
                "specifier": MINIMUM_SENTENCE_TRANSFORMERS,
                "reason": "relsim's custom module uses the multimodal InputModule API",
            }
        },
        "prompts": {},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
    }
    (model_dir / "config_sentence_transformers.json").write_text(
        json.dumps(settings, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    shutil.copyfile(MODULE_SOURCE, model_dir / MODULE_SOURCE.name)
    logger.info("wrote the Sentence Transformers files into %s", model_dir)
    return model_dir
