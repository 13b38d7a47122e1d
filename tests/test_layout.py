"""The package layout's one rule: imports point down only (demo -> evaluation / hub_data -> trainer -> modeling_relsim).

Read statically from the sources, so a lazy import inside a function counts the same as one at the top of a file.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]

# Lower numbers sit lower: a module may import its own level or anything below it, never above.
LEVELS = {
    "training": 0,  # the empty package file
    "modeling_relsim": 0,
    "hub_cards": 0,
    "training.image_ids": 0,
    "training.metrics": 0,
    "training.store": 0,
    "training.caption_text": 0,
    "training.cli": 0,
    "training.errors": 0,
    "training.cpu_threads": 0,
    "training.recipes": 0,  # the one YAML recipe reader
    "training.json_lines": 0,  # the one JSON-lines reader and writer
    "training.url_fetch": 0,  # what the downloaders fetch (schemes, redirects, byte cap): hub_data, pipeline, search
    "training.image_folder": 1,
    "training.relsim_folder": 1,  # loading a saved relsim folder or hub id (evaluation, search, pipeline, studies)
    "training.vector_index": 1,  # the one FAISS index builder (evaluation retrieval, search, pipeline)
    "training.tiny_backbone": 1,
    "training.tuned_encoders": 1,  # the tuned CLIP/DINOv2 baselines (issue 17): config, model, tiny builds
    "training.synthetic": 1,
    "training.hub_data": 2,
    "training.trainer": 2,
    "training.vlm": 2,  # the generating Qwen2.5-VL: chat, answer probabilities, SFT
    "training.evaluation": 3,
    "training.pipeline": 4,  # the data half: filter, captioners, leak check, stages and their runners
    "training.search": 4,  # index, search, "why" labels, web app, Sentence Transformers
    "training.studies": 5,  # conceptual distance, human-judgement tabs of the search app (uses search and pipeline)
    "training.demo": 5,
}
# Siblings on one level that must not import each other: each is its own product.
SEPARATE = {
    ("training.hub_data", "training.trainer"),
    ("training.trainer", "training.hub_data"),
    ("training.pipeline", "training.search"),
    ("training.search", "training.pipeline"),
}


def owner(module: str) -> str | None:
    """The LEVELS entry a dotted module name belongs to (longest prefix), or None for third-party modules."""
    matches = [name for name in LEVELS if module == name or (name != "training" and module.startswith(name + "."))]
    return max(matches, key=len) if matches else None


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in a file, relative imports resolved against the file's package."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                found.append((node.lineno, ".".join([*base, *([node.module] if node.module else [])])))
            else:
                found.append((node.lineno, node.module))
    return found


def project_files() -> list[Path]:
    return sorted(
        path for folder in ("modeling_relsim", "hub_cards", "training") for path in (ROOT / folder).rglob("*.py")
    )


def test_every_project_module_has_a_level():
    unplaced = [module_name(path) for path in project_files() if owner(module_name(path)) is None]
    assert unplaced == [], f"add these modules to LEVELS in {__file__}: {unplaced}"


@pytest.mark.parametrize("path", project_files(), ids=lambda path: str(path.relative_to(ROOT)))
def test_imports_point_down_only(path):
    importer = owner(module_name(path))
    upward = []
    for line, module in imported_modules(path):
        target = owner(module)
        if target is None or target == importer:
            continue
        if LEVELS[target] > LEVELS[importer] or (importer, target) in SEPARATE:
            upward.append(f"{path.relative_to(ROOT)}:{line} imports {module} ({target} is not below {importer})")
    assert upward == []


def test_remote_code_imports_only_torch_transformers_and_itself():
    allowed = {"torch", "transformers", "PIL", "numpy", "safetensors", "tqdm", "huggingface_hub"}
    foreign = []
    for path in (ROOT / "modeling_relsim").glob("*.py"):
        if path.name in ("convert_official.py", "lora_adapters.py"):  # maintainers' tools, not remote code
            continue
        for line, module in imported_modules(path):
            top = module.split(".")[0]
            if top == "modeling_relsim" or top in allowed or top in _standard_library():
                continue
            foreign.append(f"{path.name}:{line} imports {module}")
    assert foreign == []


def _standard_library() -> frozenset[str]:
    import sys

    return frozenset(sys.stdlib_module_names) | {"__future__"}


# What the GPU machine has (torch, transformers and their own dependencies, peft, accelerate, torchvision's Pillow):
# the speed benchmarks must run there with nothing else installed.
GPU_MACHINE_PACKAGES = {"torch", "transformers", "peft", "accelerate", "PIL", "numpy", "safetensors", "tqdm", "yaml"}
GPU_MACHINE_PACKAGES |= {"huggingface_hub", "tokenizers", "packaging", "regex", "filelock", "psutil"}


def _file_of(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def gpu_command_scripts() -> list[Path]:
    """The scripts the GPU commands at the end of benchmarks/README.md run (its last bash block)."""
    readme = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    last_block = readme.rsplit("```bash", 1)[1].split("```", 1)[0]
    names = sorted(set(re.findall(r"python benchmarks/(\w+\.py)", last_block)))
    assert names, "benchmarks/README.md ends with no bash block of `python benchmarks/...` commands"
    return [ROOT / "benchmarks" / name for name in names]


def test_speed_benchmarks_need_only_what_the_gpu_machine_has():
    """Follows every project import (lazy ones too) from the GPU commands' scripts and lists the third-party
    packages met."""
    pending = gpu_command_scripts()
    seen: set[Path] = set()
    outside: dict[str, str] = {}
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        for line, module in imported_modules(path):
            top = module.split(".")[0]
            local = _file_of(module) or (ROOT / "benchmarks" / f"{module}.py")
            if owner(module) is not None or local.is_file():
                parts = module.split(".")
                pending += [file for end in range(1, len(parts) + 1) if (file := _file_of(".".join(parts[:end])))]
                if local.is_file():
                    pending.append(local)
            elif top not in GPU_MACHINE_PACKAGES and top not in _standard_library():
                outside.setdefault(top, f"{path.relative_to(ROOT)}:{line}")
    assert outside == {}


# The one module of training.trainer outside objectives/ that may import it: the train CLI picks ObjectiveTrainer
# for a recipe with option fields. (__main__ reaches it only through train, lazily, and is exempt with it.)
TRAINER_COMPOSITION = {"training.trainer.train", "training.trainer.__main__"}


def _trainer_core_modules() -> list[str]:
    return [
        module_name(path)
        for path in sorted((ROOT / "training" / "trainer").glob("*.py"))
        if module_name(path) not in TRAINER_COMPOSITION
    ]


def objective_imports_reached(module: str) -> list[str]:
    """The `training.trainer.objectives` imports `module` reaches through training.trainer modules (lazy ones too),
    each as `file:line imports X`."""
    pending, seen, found = [module], set(), []
    while pending:
        current = pending.pop()
        path = _file_of(current)
        if path is None or current in seen:
            continue
        seen.add(current)
        for line, imported in imported_modules(path):
            if imported == "training.trainer.objectives" or imported.startswith("training.trainer.objectives."):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
            elif imported.startswith("training.trainer"):
                pending.append(imported)
    return found


@pytest.mark.parametrize("module", _trainer_core_modules())
def test_the_papers_trainer_imports_nothing_of_the_objective_options(module):
    assert objective_imports_reached(module) == []


def test_the_objective_rule_finds_an_import_of_the_options():
    # the train CLI does import them: the check must see it
    assert any("training.trainer.objectives" in found for found in objective_imports_reached("training.trainer.train"))


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (at the top of the file or inside functions); `from package import
    name` points at the submodule when `name` is one."""
    modules = {module_name(path): path for path in project_files()}
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for (_, imported), node in zip(imported_modules(path), _import_nodes(tree), strict=True):
            names = [alias.name for alias in node.names] if isinstance(node, ast.ImportFrom) else [None]
            for name in names:
                target = f"{imported}.{name}" if name and f"{imported}.{name}" in modules else imported
                if target in modules and target != module:
                    targets.add(target)
        graph[module] = targets
    return graph


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """The import nodes in `imported_modules`' order, one per entry it lists."""
    nodes = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            nodes += [ast.Import(names=[alias]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            nodes.append(node)
    return nodes


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path that returns to its start) per group of modules that import each other in a circle
    (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph.get(module, ())):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(group)

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return [_cycle_in(group, graph) for group in groups]


def _cycle_in(group: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A path inside `group` from its first module back to it (breadth-first: the shortest)."""
    start = min(group)
    paths = {start: [start]}
    pending = [start]
    while pending:
        module = pending.pop(0)
        for target in sorted(graph[module] & group):
            if target == start:
                return [*paths[module], start]
            if target not in paths:
                paths[target] = [*paths[module], target]
                pending.append(target)
    raise AssertionError(f"no cycle through {start} in {sorted(group)}")


def test_no_modules_import_each_other_in_a_circle():
    cycles = [" -> ".join(cycle) for cycle in import_cycles(import_graph())]
    assert cycles == []


def test_the_cycle_rule_names_a_circle_of_imports():
    graph = {"a.run": {"a.ray"}, "a.ray": {"a.sharded"}, "a.sharded": {"a.run", "a.shards"}, "a.shards": set()}
    assert import_cycles(graph) == [["a.ray", "a.sharded", "a.run", "a.ray"]]
    assert import_cycles({"a.run": {"a.ray"}, "a.ray": set()}) == []
