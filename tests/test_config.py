import dataclasses
import math
import re
import types
import typing
from pathlib import Path

import pytest

from rewardlab.config import RECIPES_DIR, Recipe, RecipeError, build, load_recipe

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
    with pytest.raises(RecipeError, match=r"'max_steps' must be > 0 \(or null: epochs decide\), got 0"):
        load_recipe(None, ["max_steps=0"])
    with pytest.raises(RecipeError, match=r"'model.gradient_checkpointing' must be in \[0, 1\] \(true, false, or the fr"):
        load_recipe(None, ["model.gradient_checkpointing=1.5"])
    assert load_recipe(None, ["model.gradient_checkpointing=0.25"]).model.gradient_checkpointing == 0.25


def test_missing_recipe_file_is_an_error(tmp_path: Path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


# Every key, systematically: wrong types, values out of range, numbers that are not finite, empty strings.


def leaves(cls=Recipe, prefix=""):
    """(dotted key, dataclass field, annotation) of every recipe key that holds a value."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from leaves(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, f, hints[f.name]


def nest(key: str, value) -> dict:
    data = value
    for part in reversed(key.split(".")):
        data = {part: data}
    return data


def options(tp) -> set:
    """The types an annotation allows: ``int | None`` → {int, NoneType}."""
    return set(typing.get_args(tp)) if typing.get_origin(tp) in (typing.Union, types.UnionType) else {tp}


def accepts(allowed: set, value) -> bool:
    if value is None:
        return type(None) in allowed
    if isinstance(value, bool):
        return bool in allowed
    if isinstance(value, int):
        return int in allowed or float in allowed
    if isinstance(value, float):
        return float in allowed
    if isinstance(value, str):
        return str in allowed
    return False  # [{"a": 1}] (a list of the wrong items), {"a": 1}: no key takes them


LEAVES = list(leaves())
NUMERIC = [(key, f, tp) for key, f, tp in LEAVES if {int, float} & options(tp)]
# Keys where any finite number is meaningful.
UNBOUNDED = {"clip.init_bias", "contrastive.min_pair_score"}


@pytest.mark.parametrize("key, tp", [(key, tp) for key, _, tp in LEAVES], ids=[key for key, _, _ in LEAVES])
def test_every_key_refuses_values_of_the_wrong_type(key, tp):
    allowed = options(tp)
    wrong = [v for v in ("text", 1.5, 3, True, [{"a": 1}], {"a": 1}, None) if not accepts(allowed, v)]
    assert len(wrong) >= 3
    for value in wrong:
        with pytest.raises(RecipeError, match=rf"recipe key '{re.escape(key)}': expected .*, got "):
            build(Recipe, nest(key, value))
    if str in allowed:
        with pytest.raises(RecipeError, match=rf"recipe key '{re.escape(key)}': expected a non-empty string"):
            build(Recipe, nest(key, "  "))
    if float in allowed:
        for value in (math.nan, math.inf, -math.inf):
            with pytest.raises(RecipeError, match=rf"recipe key '{re.escape(key)}': expected a finite number"):
                build(Recipe, nest(key, value))


def test_every_number_has_bounds_unless_any_finite_number_is_meaningful():
    unbounded = {key for key, f, _ in NUMERIC if not f.metadata.get("bounds")}
    assert unbounded == UNBOUNDED


def outside(bounds: dict, integer: bool) -> list:
    """Values just past each bound (and far past it)."""
    step = 1 if integer else 1e-9
    values = []
    if "at_least" in bounds:
        values += [bounds["at_least"] - step, bounds["at_least"] - 1e6]
    if "above" in bounds:
        values += [bounds["above"], bounds["above"] - 1]
    if "at_most" in bounds:
        values += [bounds["at_most"] + step, bounds["at_most"] + 1e6]
    if "below" in bounds:
        values += [bounds["below"], bounds["below"] + 1]
    return [int(v) if integer else float(v) for v in values]


BOUNDED = [(key, f, tp) for key, f, tp in NUMERIC if f.metadata.get("bounds")]


@pytest.mark.parametrize("key, f, tp", BOUNDED, ids=[key for key, _, _ in BOUNDED])
def test_every_bounded_number_refuses_values_out_of_range_and_says_the_range(key, f, tp):
    for value in outside(f.metadata["bounds"], integer=float not in options(tp)):
        with pytest.raises(RecipeError, match=rf"recipe key '{re.escape(key)}' must be (>|>=|<|<=|in) .*, got "):
            build(Recipe, nest(key, value))
    default = Recipe()
    for part in key.split("."):
        default = getattr(default, part)
    build(Recipe, nest(key, default))  # the default is allowed


@pytest.mark.parametrize("override, message", [
    # issue 10's recipe probe, one by one
    ("epochs=0", r"'epochs' must be > 0, got 0"),
    ("save_total_limit=-1", r"'save_total_limit' must be >= 1 \(checkpoints kept\), got -1"),
    ("warmup_ratio=2", r"'warmup_ratio' must be in \[0, 1\] \(the fraction of the steps spent warming up\), got 2"),
    ("max_grad_norm=-5", r"'max_grad_norm' must be >= 0 \(0 turns clipping off\), got -5"),
    ("model.lora.alpha=0", r"'model.lora.alpha' must be > 0 \(the adapters' scale is alpha / r\), got 0"),
    ("max_length=1", r"'max_length' must be >= 8, got 1"),
    ("weight_decay=-10", r"'weight_decay' must be >= 0, got -10"),
    ("seed=-1", r"'seed' must be in \[0, 4.29497e\+09\] \(numpy's seed range\), got -1"),
    ("model.lora.dropout=2", r"'model.lora.dropout' must be in \[0, 1\), got 2"),
    ("learning_rate=.nan", r"'learning_rate': expected a finite number, got nan"),
    ("learning_rate=-1e-5", r"'learning_rate' must be > 0, got -1e-05"),
    ("contrastive.pair_columns=[a]", r"'contrastive.pair_columns' must list exactly 2 items \(anchor and positive\)"),
    ("model.lora.target_modules=[]", r"'model.lora.target_modules' must list at least 1 item"),
    ("clip.image_tower=resnet", r"'clip.image_tower': 'resnet' is not allowed; choose one of: efficientnet-lite0, tiny"),
    ("output_dir=", r"'output_dir': expected str, got None"),
    ("max_steps=[", r"override 'max_steps=\[': the value is not valid YAML"),
])
def test_issue_10_recipe_values_are_errors_saying_what_is_allowed(override, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(None, [override])


def test_numbers_in_recipe_files_may_be_written_as_yaml_1_1_leaves_them(tmp_path):
    """PyYAML reads ``1e-5`` as a string; where a float is expected it is the number."""
    path = tmp_path / "r.yaml"
    path.write_text("learning_rate: 1e-5\nmax_grad_norm: 5\nmodel: {gradient_checkpointing: 1e-1}\n")
    recipe = load_recipe(path)
    assert (recipe.learning_rate, recipe.max_grad_norm, recipe.model.gradient_checkpointing) == (1e-5, 5.0, 0.1)
    path.write_text("batch_size: 1e1\n")
    with pytest.raises(RecipeError, match=r"'batch_size': expected int, got '1e1'"):
        load_recipe(path)


@pytest.mark.parametrize("body, message", [
    ("- a\n- b\n", "a recipe is a mapping of keys to values, got list"),
    ("model: [1]\n", "recipe key 'model' must be a mapping"),
    ("batch_size: [\n", "not valid YAML"),
])
def test_malformed_recipe_files_are_errors(tmp_path, body, message):
    path = tmp_path / "r.yaml"
    path.write_text(body)
    with pytest.raises(RecipeError, match=re.escape(message)):
        load_recipe(path, ["max_steps=1"])
    path.write_bytes(b"seed: \xff\n")
    with pytest.raises(RecipeError, match="not UTF-8 text"):
        load_recipe(path)


def test_image_tower_choices_are_the_towers_vision_builds():
    from rewardlab.vision import IMAGE_TOWERS

    (f,) = [f for key, f, _ in LEAVES if key == "clip.image_tower"]
    assert f.metadata["choices"] == IMAGE_TOWERS
