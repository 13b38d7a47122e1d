"""Helpers shared by several test files: generated pattern data, and loading a model in a clean process."""

import os
import subprocess
import sys
import textwrap

import datasets
import numpy as np
import PIL.Image
from safetensors.torch import load_file


# Four visual patterns, each with its own caption; colours and scales vary so only the pattern predicts the caption.
PATTERN_CAPTIONS = (
    '"stripes of {Colour} running from left to right"',
    '"stripes of {Colour} running from top to bottom"',
    '"a checkerboard of {Colour} squares"',
    '"a single {Colour} disc in the middle"',
)


def pattern_image(kind: int, rng: np.random.Generator, size: int = 112) -> PIL.Image.Image:
    foreground, background = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    y, x = np.mgrid[0:size, 0:size]
    period = int(rng.integers(10, 24))
    if kind == 0:
        mask = (y // (period // 2)) % 2 == 0
    elif kind == 1:
        mask = (x // (period // 2)) % 2 == 0
    elif kind == 2:
        mask = ((x // period) + (y // period)) % 2 == 0
    else:
        mask = (x - size / 2) ** 2 + (y - size / 2) ** 2 < int(rng.integers(20, 45)) ** 2
    return PIL.Image.fromarray(np.where(mask[..., None], foreground, background).astype(np.uint8))


def pattern_dataset(size: int, seed: int = 0) -> datasets.Dataset:
    """`size` images cycling through the four patterns: a datasets Image column and a (quoted) caption."""
    rng = np.random.default_rng(seed)
    rows = {"image": [], "caption": []}
    for index in range(size):
        rows["image"].append(pattern_image(index % 4, rng))
        rows["caption"].append(PATTERN_CAPTIONS[index % 4])
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")})
    return datasets.Dataset.from_dict(rows, features=features)


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
    # the tests' PIL backend, also where torchvision is installed (the backends agree only to 1e-6)
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True, image_backend="pil")
    embeddings = model.embed_images(image_paths, processor, batch_size=2)
    save_file({"embeddings": embeddings.contiguous()}, output)
    print(type(model).__module__, type(processor).__module__)
    """
)


def embed_in_clean_process(model_dir, image_paths, work_dir):
    """Embeds images with `model_dir` loaded through trust_remote_code, in a process that cannot import this
    project and with the hub offline; returns the embeddings and the (model, processor) module names."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "HF_"))}
    environment.update(
        HF_HUB_OFFLINE="1", HF_HOME=str(work_dir / "hf-home"), HF_MODULES_CACHE=str(work_dir / "modules")
    )
    output = work_dir / "remote-embeddings.safetensors"
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_USER_SCRIPT, str(model_dir), str(output), *map(str, image_paths)],
        cwd=work_dir,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return load_file(output)["embeddings"], result.stdout.split()[-2:]
