"""A user with only transformers and torch: the saved folder must load with trust_remote_code in a process where this
package cannot be imported and the hub is offline, and give the same embeddings."""

import json

import torch
from helpers import embed_in_clean_process


def test_remote_code_gives_identical_embeddings(model, processor, images, tmp_path):
    model_dir = tmp_path / "relsim-tiny"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    assert json.loads((model_dir / "config.json").read_text())["auto_map"] == {
        "AutoConfig": "configuration_relsim.RelSimConfig",
        "AutoModel": "modeling_relsim.RelSimModel",
    }
    assert json.loads((model_dir / "processor_config.json").read_text())["auto_map"] == {
        "AutoProcessor": "processing_relsim.RelSimProcessor"
    }
    image_paths = []
    for index, image in enumerate(images):
        image_paths.append(str(tmp_path / f"image-{index}.png"))
        image.save(image_paths[-1])
    expected = model.embed_images(image_paths, processor, batch_size=2)

    embeddings, (model_module, processor_module) = embed_in_clean_process(model_dir, image_paths, tmp_path)
    assert model_module.startswith("transformers_modules.") and model_module.endswith("modeling_relsim")
    assert processor_module.startswith("transformers_modules.") and processor_module.endswith("processing_relsim")
    assert torch.equal(embeddings, expected)
