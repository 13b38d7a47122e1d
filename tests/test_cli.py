"""Every command line: light `--help`, console scripts, one-line expected errors, opt-in remote code, and errors
that name the missing model or extra."""

import configparser
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from training.cli import EXPECTED_ERROR_STATUS
from training.errors import MissingExtraError, ModelLoadError
from training.evaluation.__main__ import program as evaluation_program
from training.hub_data.__main__ import program as hub_data_program


ROOT = Path(__file__).resolve().parents[1]

# runs a module as `python -m` would (or calls a console script's target) and reports the exit status and which
# heavy libraries were imported
PROBE = """
import importlib, json, runpy, sys
kind, target, arguments, report = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
try:
    if kind == "module":
        sys.argv = [target, *arguments]
        runpy.run_module(target, run_name="__main__", alter_sys=True)
        code = 0
    else:
        script, module_name, attribute = target.split(":")
        sys.argv = ["/venv/bin/" + script, *arguments]
        code = getattr(importlib.import_module(module_name), attribute)()
except SystemExit as exit:
    code = exit.code
heavy = sorted(name for name in ("torch", "transformers", "datasets") if name in sys.modules)
with open(report, "w") as out:
    json.dump({"code": code, "heavy": heavy}, out)
"""

HELP_RUNS = [
    ("training.trainer", ["--help"], "usage: python -m training.trainer "),
    ("training.trainer", ["train", "--help"], "usage: python -m training.trainer train [--config RECIPE.yaml]"),
    ("training.trainer", ["export", "--help"], "usage: python -m training.trainer export "),
    ("training.trainer", ["convert-official", "--help"], "usage: python -m training.trainer convert-official "),
    ("training.hub_data", ["--help"], "usage: python -m training.hub_data "),
    ("training.hub_data", ["build", "seed-groups", "--help"], "usage: python -m training.hub_data build seed-groups"),
    ("training.hub_data", ["download", "--help"], "usage: python -m training.hub_data download "),
    ("training.hub_data", ["push", "--help"], "usage: python -m training.hub_data push "),
    ("training.evaluation", ["--help"], "usage: python -m training.evaluation "),
    ("training.evaluation", ["pool", "--help"], "usage: python -m training.evaluation pool "),
    ("training.evaluation", ["embed", "--help"], "usage: python -m training.evaluation embed "),
    ("training.evaluation", ["retrieve", "--help"], "usage: python -m training.evaluation retrieve "),
    ("training.evaluation", ["judge", "--help"], "usage: python -m training.evaluation judge "),
    ("training.evaluation", ["report", "--help"], "usage: python -m training.evaluation report "),
    ("training.evaluation", ["synthetic", "--help"], "usage: python -m training.evaluation synthetic "),
    ("training.evaluation", ["ablate", "--help"], "usage: python -m training.evaluation ablate "),
    ("training.evaluation", ["analogy", "--help"], "usage: python -m training.evaluation analogy "),
    ("training.studies", ["--help"], "usage: python -m training.studies "),
    ("training.studies", ["app", "--help"], "usage: python -m training.studies app "),
    ("training.studies", ["results", "--help"], "usage: python -m training.studies results "),
    ("training.demo", ["--help"], "usage: python -m training.demo "),
    ("training.search.official_example", ["--help"], "usage: python -m training.search.official_example "),
    ("training.search", ["--help"], "usage: python -m training.search "),
    ("training.search", ["index", "--help"], "usage: python -m training.search index "),
    ("training.search", ["search", "--help"], "usage: python -m training.search search "),
    ("training.search", ["why", "--help"], "usage: python -m training.search why "),
    ("training.search", ["app", "--help"], "usage: python -m training.search app "),
    ("training.pipeline", ["--help"], "usage: python -m training.pipeline "),
    ("training.pipeline", ["run", "--help"], "usage: python -m training.pipeline run "),
    ("training.pipeline", ["filter", "train", "--help"], "usage: python -m training.pipeline filter train "),
    ("training.pipeline", ["filter", "score", "--help"], "usage: python -m training.pipeline filter score "),
    ("training.pipeline", ["filter", "evaluate", "--help"], "usage: python -m training.pipeline filter evaluate "),
    ("training.pipeline", ["group-caption", "--help"], "usage: python -m training.pipeline group-caption "),
    ("training.pipeline", ["caption", "train", "--help"], "usage: python -m training.pipeline caption train "),
    ("training.pipeline", ["caption", "generate", "--help"], "usage: python -m training.pipeline caption generate "),
    ("training.pipeline", ["caption", "evaluate", "--help"], "usage: python -m training.pipeline caption evaluate "),
    ("training.pipeline", ["check", "--help"], "usage: python -m training.pipeline check "),
    ("training.pipeline", ["demo", "--help"], "usage: python -m training.pipeline demo "),
    ("training.vlm", ["--help"], "usage: python -m training.vlm "),
    ("training.vlm", ["pretrain-tiny", "--help"], "usage: python -m training.vlm pretrain-tiny "),
    ("training.studies", ["distance", "--help"], "usage: python -m training.studies distance "),
    ("training.studies", ["distance-eval", "--help"], "usage: python -m training.studies distance-eval "),
    ("training.studies", ["train-literal-describer", "--help"], "usage: python -m training.studies train-literal"),
]


def probe(tmp_path, kind: str, target: str, arguments: list[str]) -> tuple[dict, subprocess.CompletedProcess]:
    report = tmp_path / "report.json"
    finished = subprocess.run(
        [sys.executable, "-c", PROBE, kind, target, json.dumps(arguments), str(report)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.is_file(), finished.stderr
    return json.loads(report.read_text()), finished


@pytest.mark.parametrize(
    ("module", "arguments", "usage"), HELP_RUNS, ids=[f"{m} {' '.join(a)}" for m, a, _ in HELP_RUNS]
)
def test_help_shows_the_real_command_and_imports_no_heavy_library(tmp_path, module, arguments, usage):
    report, finished = probe(tmp_path, "module", module, arguments)
    assert report == {"code": 0, "heavy": []}
    assert finished.stdout.startswith(usage), finished.stdout[:300]


def test_the_trainer_help_shows_the_recipe_option():
    from training.trainer.__main__ import train_help

    text = train_help("python -m training.trainer train")
    assert "--config RECIPE.yaml" in text and "--help-all" in text and "--max-steps" in text


def test_the_full_trainer_help_lists_config_and_the_fields(capsys):
    from training.trainer.train import parse_arguments

    with pytest.raises(SystemExit) as exit:
        parse_arguments(["--help-all"])
    listing = capsys.readouterr().out
    assert exit.value.code == 0 and listing.startswith("usage: python -m training.trainer train ")
    assert "--config RECIPE.yaml" in listing and "--max_steps MAX_STEPS, --max-steps MAX_STEPS" in listing


def test_an_argument_error_answers_without_heavy_libraries(tmp_path):
    report, finished = probe(tmp_path, "module", "training.evaluation", ["embed", "--pool", "p.jsonl"])
    assert report == {"code": 2, "heavy": []}
    assert "the following arguments are required: --eval-dir, --method" in finished.stderr


def console_scripts() -> dict[str, str]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(part.strip() for part in line.split("=")) for line in lines)


def test_the_distribution_name_is_not_the_official_releases():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    assert config["metadata"]["name"] == "relsim-hf"
    assert set(console_scripts()) == {
        "relsim-train",
        "relsim-convert-official",
        "relsim-data",
        "relsim-eval",
        "relsim-demo",
        "relsim-search",
        "relsim-pipeline",
        "relsim-studies",
    }


@pytest.mark.parametrize("script", sorted(console_scripts()))
def test_each_console_script_target_imports_and_answers_help(tmp_path, script):
    target = console_scripts()[script]
    report, finished = probe(tmp_path, "script", f"{script}:{target}", ["--help"])
    assert report == {"code": 0, "heavy": []}
    assert finished.stdout.startswith(f"usage: {script} "), finished.stdout[:300]


def test_the_evaluation_method_names_match_the_methods_package():
    from training.evaluation.__main__ import METHOD_NAMES
    from training.evaluation.methods.build import METHOD_NAMES as BUILT

    assert METHOD_NAMES == BUILT


# expected errors: one line, exit status 2; a traceback with --debug


def run_as_program(program, arguments, monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["python", *arguments])
    status = program()
    return status, capsys.readouterr().err


def assert_one_line(stderr: str, prefix: str, *named: str) -> None:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(prefix), lines[0]
    for text in named:
        assert text in lines[0], lines[0]


def test_a_malformed_seed_group_file_is_one_line(tmp_path, monkeypatch, capsys):
    source = tmp_path / "seed_group.json"
    source.write_text('[{"anonymous_caption": "a {X}", "image_urls": ["http://a", "http://b"]}\n {"x": 1}]\n')
    arguments = ["build", "seed-groups", "--input", str(source), "--output", str(tmp_path / "built")]
    status, stderr = run_as_program(hub_data_program, arguments, monkeypatch, capsys)
    assert status == EXPECTED_ERROR_STATUS
    assert_one_line(stderr, "python -m training.hub_data build: error: ", f"{source}:2", "malformed JSON")
    monkeypatch.setattr(sys, "argv", ["python", *arguments, "--debug"])
    with pytest.raises(ValueError, match="malformed JSON"):
        hub_data_program()


def test_a_strict_rejection_is_one_line(tmp_path, monkeypatch, capsys):
    source = tmp_path / "seed_group.json"
    source.write_text(json.dumps([{"anonymous_caption": "a {X}", "image_urls": ["http://a"]}]))
    arguments = ["build", "seed-groups", "--input", str(source), "--output", str(tmp_path / "built"), "--strict"]
    status, stderr = run_as_program(hub_data_program, arguments, monkeypatch, capsys)
    assert status == EXPECTED_ERROR_STATUS
    assert_one_line(stderr, "python -m training.hub_data build: error: ", f"{source}:1", "image_urls", "at least 2")


def write_manifest(path: Path) -> Path:
    path.write_text(json.dumps({"image_hash": "0" * 32, "image": "a.png", "split": "test"}) + "\n")
    return path


def test_a_report_without_results_is_one_line(tmp_path, monkeypatch, capsys):
    manifest = write_manifest(tmp_path / "pool.jsonl")
    arguments = ["report", "--pool", str(manifest), "--eval-dir", str(tmp_path / "eval")]
    status, stderr = run_as_program(evaluation_program, arguments, monkeypatch, capsys)
    assert status == EXPECTED_ERROR_STATUS
    assert_one_line(stderr, "python -m training.evaluation report: error: ", str(tmp_path / "eval"))


def test_a_judge_without_an_api_key_is_one_line(tmp_path, monkeypatch, capsys):
    for name in ("OPENAI_API_KEY", "RELSIM_JUDGE_API_KEY", "RELSIM_JUDGE_BASE_URL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    manifest = write_manifest(tmp_path / "pool.jsonl")
    arguments = ["judge", "--pool", str(manifest), "--eval-dir", str(tmp_path / "eval"), "--judge", "openai",
                 "--methods", "relsim"]  # fmt: skip
    status, stderr = run_as_program(evaluation_program, arguments, monkeypatch, capsys)
    assert status == EXPECTED_ERROR_STATUS
    assert_one_line(stderr, "python -m training.evaluation judge: error: ", "RELSIM_JUDGE_API_KEY", "OPENAI_API_KEY")


def test_a_real_process_exits_2_with_one_line_and_shows_the_traceback_with_debug(tmp_path):
    missing = tmp_path / "never-exported"
    command = [sys.executable, "-m", "training.hub_data", "push", "--folder", str(missing), "--repo-id", "org/data"]
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    quiet = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 2
    assert quiet.stderr.splitlines() == [f"python -m training.hub_data push: error: {missing} holds no files to upload"]
    loud = subprocess.run([*command, "--debug"], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300)
    assert loud.returncode == 1
    assert "Traceback (most recent call last)" in loud.stderr and "FileNotFoundError" in loud.stderr


def test_a_bug_keeps_its_traceback(monkeypatch, capsys):
    from training.cli import run_program

    def broken(argv):
        raise KeyError("a bug, not bad input")

    with pytest.raises(KeyError):
        run_program(broken, [])


# remote code is opt-in (bug 6)

EVIL_CODE = """
from pathlib import Path
Path({marker!r}).write_text("the folder's own code ran")
from transformers import PretrainedConfig, PreTrainedModel


class EvilConfig(PretrainedConfig):
    model_type = "evil-net"


class EvilModel(PreTrainedModel):
    config_class = EvilConfig
"""


def write_foreign_folder(folder: Path, marker: Path, code_file: str = "evil.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / code_file).write_text(EVIL_CODE.format(marker=str(marker)))
    config = {
        "model_type": "evil-net",
        "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"},
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_foreign_model_folder_is_refused_without_trust_remote_code(tmp_path, monkeypatch, capsys):
    from training.relsim_folder import load_relsim

    marker = tmp_path / "marker.txt"
    folder = write_foreign_folder(tmp_path / "foreign", marker)
    with pytest.raises(ValueError, match=r"'evil-net' model.*--trust-remote-code"):
        load_relsim(str(folder))
    arguments = ["synthetic", "--model", str(folder), "--num-per-family", "1", "--output", str(tmp_path / "r")]
    status, stderr = run_as_program(evaluation_program, arguments, monkeypatch, capsys)
    assert status == EXPECTED_ERROR_STATUS
    assert_one_line(stderr, "python -m training.evaluation synthetic: error: ", str(folder), "--trust-remote-code")
    assert not marker.exists()


def test_with_trust_remote_code_the_folders_own_code_runs(tmp_path):
    """The other side of the refusal above: the flag really hands loading to the folder's code."""
    marker = tmp_path / "marker.txt"
    folder = write_foreign_folder(tmp_path / "foreign", marker)
    script = (
        "from training.relsim_folder import load_relsim\n"
        f"try:\n    load_relsim({str(folder)!r}, trust_remote_code=True)\nexcept Exception:\n    pass\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "HF_MODULES_CACHE": str(tmp_path / "mods")}
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=environment, check=True, timeout=300)
    assert marker.read_text() == "the folder's own code ran"


def test_a_relsim_folder_loads_without_the_flag_and_never_runs_its_saved_code(tmp_path, model, processor):
    from modeling_relsim import RelSimModel
    from training.relsim_folder import load_relsim

    folder = tmp_path / "relsim"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    marker = tmp_path / "marker.txt"
    saved_code = folder / "modeling_relsim.py"
    assert saved_code.is_file()
    saved_code.write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n")
    loaded, loaded_processor = load_relsim(str(folder))
    assert type(loaded) is RelSimModel and loaded_processor.settings() == processor.settings()
    assert not marker.exists()


# what is missing, and how to get it (issue 13, item 10)


def test_an_uncached_hub_model_offline_names_the_id_and_the_fix(monkeypatch):
    from training.evaluation.methods.build import MethodOptions, build_method

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for method in ("clip-i", "relsim"):
        with pytest.raises(ModelLoadError) as error:
            build_method(method, MethodOptions(model="relsim-tests/never-downloaded"))
        message = str(error.value)
        assert "'relsim-tests/never-downloaded'" in message and "HF_HUB_OFFLINE=1" in message
        assert "--model" in message and "\n" not in message


def test_a_missing_folder_is_named(tmp_path):
    from training.evaluation.methods.build import MethodOptions, build_method

    missing = tmp_path / "runs" / "final"
    with pytest.raises(ModelLoadError, match=f"'{missing}' .*no such folder"):
        build_method("dino", MethodOptions(model=str(missing)))


def test_a_missing_extra_is_named(monkeypatch):
    from training.evaluation.methods.build import MethodOptions, build_method
    from training.trainer.caption_encoder import CaptionEncoder

    monkeypatch.setitem(sys.modules, "lpips", None)
    with pytest.raises(MissingExtraError, match=r"the lpips method needs the 'lpips' package.*relsim-hf\[perceptual\]"):
        build_method("lpips", MethodOptions())
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(MissingExtraError, match=r"'sentence_transformers' package.*relsim-hf\[train\]"):
        CaptionEncoder("sentence-transformers/all-MiniLM-L6-v2")


def test_a_missing_extra_on_the_command_line_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "lpips", None)
    manifest = write_manifest(tmp_path / "pool.jsonl")
    arguments = ["embed", "--pool", str(manifest), "--eval-dir", str(tmp_path / "eval"), "--method", "lpips",
                 "--device", "cpu"]  # fmt: skip
    status, stderr = run_as_program(evaluation_program, arguments, monkeypatch, capsys)
    assert status == EXPECTED_ERROR_STATUS
    assert_one_line(stderr, "python -m training.evaluation embed: error: ", 'pip install "relsim-hf[perceptual]"')
