from pathlib import Path

import pytest

from rewardlab.config import RECIPES_DIR, Recipe, RecipeError, load_recipe

RECIPES = sorted(RECIPES_DIR.glob("*.yaml"))


def test_there_are_recipes():
    names = {p.name for p in RECIPES}
    assert {"quickstart.yaml", "hh-minilm.yaml", "hh-smollm2-lora.yaml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_loads_and_validates(path):
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    assert recipe.train_data


def test_overrides_reach_nested_keys_and_parse_values():
    recipe = load_recipe(None, ["max_steps=3", "model.lora.r=8", "learning_rate=1e-4", "output_dir=/tmp/x",
                               "model.lora.target_modules=[q_proj, v_proj]", "eval_data=null"])
    assert recipe.max_steps == 3 and recipe.model.lora.r == 8 and recipe.learning_rate == 1e-4
    assert recipe.output_dir == "/tmp/x" and recipe.model.lora.target_modules == ["q_proj", "v_proj"]
    assert recipe.eval_data is None


def test_unknown_key_lists_the_valid_ones():
    with pytest.raises(RecipeError, match=r"unknown recipe key 'batchsize'.*batch_size.*learning_rate"):
        load_recipe(None, ["batchsize=4"])
    with pytest.raises(RecipeError, match=r"unknown recipe key 'model.lora.rank'.*alpha, dropout, frozen_dtype, r, target_modules"):
        load_recipe(None, ["model.lora.rank=4"])


def test_bad_values_name_the_key_and_what_is_allowed():
    with pytest.raises(RecipeError, match=r"'truncation': 'cut' is not allowed; choose one of: truncate, drop"):
        load_recipe(None, ["truncation=cut"])
    with pytest.raises(RecipeError, match=r"'batch_size': expected int, got 'eight'"):
        load_recipe(None, ["batch_size=eight"])
    with pytest.raises(RecipeError, match=r"'max_steps' must be a positive integer"):
        load_recipe(None, ["max_steps=0"])
    with pytest.raises(RecipeError, match=r"'model.gradient_checkpointing' must be true, false or a fraction"):
        load_recipe(None, ["model.gradient_checkpointing=1.5"])
    assert load_recipe(None, ["model.gradient_checkpointing=0.25"]).model.gradient_checkpointing == 0.25


def test_missing_recipe_file_is_an_error(tmp_path: Path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
