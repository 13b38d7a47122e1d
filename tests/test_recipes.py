"""The one YAML recipe reader: a mapping back, or one error naming the file (and the line and column of bad YAML)."""

import pytest

from training.recipes import read_recipe


def test_a_recipe_is_its_mapping_and_an_empty_file_an_empty_one(tmp_path):
    (tmp_path / "r.yaml").write_text("max_steps: 60\nlearning_rate: 3.0e-4\n")
    (tmp_path / "empty.yaml").write_text("")
    assert read_recipe(tmp_path / "r.yaml") == {"max_steps": 60, "learning_rate": 3.0e-4}
    assert read_recipe(tmp_path / "empty.yaml") == {}


def test_a_missing_file_is_named_with_the_hint(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ablation plan .*nope\.yaml does not exist \(see configs\)"):
        read_recipe(tmp_path / "nope.yaml", "ablation plan", " (see configs)")


def test_broken_yaml_is_named_by_line_and_column(tmp_path):
    (tmp_path / "broken.yaml").write_text("a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(ValueError, match=r"broken\.yaml:3:2: not valid YAML"):
        read_recipe(tmp_path / "broken.yaml")


def test_a_top_level_that_is_not_a_mapping_is_refused(tmp_path):
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match=r"list\.yaml: a recipe is a mapping of field names to values, got list"):
        read_recipe(tmp_path / "list.yaml")
