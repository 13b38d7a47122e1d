"""A user with only transformers and torch: the saved folder must load with trust_remote_code in a process where this
package cannot be imported and the hub is offline, and give the same embeddings."""

import json
import os
import subprocess
import sys
import textwrap

import torch
from safetensors.torch import load_file


REMOTE_USER_SCRIPT = textwrap.dedent(
    """
    import importlib.abc
    import sys

    class HideProjectPackages(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("modeling_relsim", "training"):
                raise ModuleNotFoundError(f"hidden from this process: {name}")
            return None

    sys.meta_path.insert(0, HideProjectPackages())
    try:
        import modeling_relsim  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("modeling_relsim is importable; the test would prove nothing")

    from safetensors.torch import save_file
    from transformers import AutoModel, AutoProcessor

    model_dir, output, *image_paths = sys.argv[1:]
    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    embeddings = model.embed_images(image_paths, processor, batch_size=2)
    save_file({"embeddings": embeddings.contiguous()}, output)
    print(type(model).__module__, type(processor).__module__)
    """
)


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

    environment = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "HF_"))}
    environment.update(
        HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"), HF_MODULES_CACHE=str(tmp_path / "modules")
    )
    output = tmp_path / "embeddings.safetensors"
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_USER_SCRIPT, str(model_dir), str(output), *image_paths],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    model_module, processor_module = result.stdout.split()[-2:]
    assert model_module.startswith("transformers_modules.") and model_module.endswith("modeling_relsim")
    assert processor_module.startswith("transformers_modules.") and processor_module.endswith("processing_relsim")
    assert torch.equal(load_file(output)["embeddings"], expected)
