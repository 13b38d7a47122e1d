"""`make test` and CI install the exact versions of the lock file, so a new upstream release cannot turn a test run
red by itself (transformers 5.25 once did, by dropping a private method). `make test-latest` deselects this test:
it runs on purpose against the newest releases."""

import os
import re
from importlib import metadata
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)$")


def lock_pins(path: Path) -> dict[str, str]:
    pins = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"{path.name}:{number}: not an exact pin: {line!r}"
        pins[match[1]] = match[2]
    return pins


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.lock
def test_the_environment_holds_the_lock_files_exact_versions():
    lock = ROOT / os.environ.get("RELSIM_LOCK", "constraints/test.txt")
    pins = {normalised(name): version for name, version in lock_pins(lock).items()}
    assert {"transformers", "torch", "peft", "trl", "datasets", "ray", "gradio"} <= set(pins)
    installed = {normalised(dist.metadata["Name"]): dist.version for dist in metadata.distributions()}
    # a local build label (torch's "+cpu") is not part of the pinned release
    differing = {
        name: (pinned, installed.get(name))
        for name, pinned in pins.items()
        if installed.get(name, "").split("+")[0] != pinned.split("+")[0]
    }
    assert differing == {}, f"installed versions differ from {lock.name} (pinned, installed): {differing}"
    unpinned = sorted(set(installed) - set(pins) - {"relsim-hf", "pip", "setuptools", "wheel"})
    assert unpinned == [], f"installed but not in {lock.name}: {unpinned}"
