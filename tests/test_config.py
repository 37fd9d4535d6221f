import math
import re
import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from rewardlab.config import (
    RECIPES_DIR,
    ClipRecipe,
    Recipe,
    RewardRecipe,
    SimCSERecipe,
    load_recipe,
    recipe_from_dict,
)
from rewardlab.config.loading import bounds
from rewardlab.errors import RecipeError

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
    with pytest.raises(RecipeError,
                       match=r"unknown recipe key 'model.lora.rank'.*alpha, dropout, frozen_dtype, r, target_modules"):
        load_recipe(None, ["model.lora.rank=4"])


def test_bad_values_name_the_key_and_what_is_allowed():
    with pytest.raises(RecipeError, match=r"'truncation': 'cut' is not allowed; choose one of: truncate, drop"):
        load_recipe(None, ["truncation=cut"])
    with pytest.raises(RecipeError, match=r"'batch_size': expected int, got 'eight'"):
        load_recipe(None, ["batch_size=eight"])
    with pytest.raises(RecipeError, match=r"'max_steps' must be > 0 \(or null: epochs decide\), got 0"):
        load_recipe(None, ["max_steps=0"])
    with pytest.raises(RecipeError,
                       match=r"'model.gradient_checkpointing' must be in \[0, 1\] \(true, false, or the fr"):
        load_recipe(None, ["model.gradient_checkpointing=1.5"])
    assert load_recipe(None, ["model.gradient_checkpointing=0.25"]).model.gradient_checkpointing == 0.25


def test_missing_recipe_file_is_an_error(tmp_path: Path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


# Every key, systematically: wrong types, values out of range, numbers that are not finite, empty strings.


def leaves(cls, prefix=""):
    """(dotted key, FieldInfo, annotation) of every recipe key of a recipe kind that holds a value."""
    for name, field in cls.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from leaves(annotation, f"{prefix}{name}.")
        elif name != "objective":
            yield prefix + name, field, annotation


def nest(key: str, value, objective: str) -> dict:
    data = value
    for part in reversed(key.split(".")):
        data = {part: data}
    return {"objective": objective, **data}


def options(tp) -> set:
    """The types an annotation allows: ``int | None`` → {int, NoneType}, ``Literal["a"]`` → {str}."""
    if typing.get_origin(tp) is typing.Annotated:
        return options(typing.get_args(tp)[0])
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return set().union(*(options(a) for a in typing.get_args(tp)))
    if typing.get_origin(tp) is typing.Literal:
        return {str}
    return {typing.get_origin(tp) or tp}


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


# Every key of every kind of recipe, with an objective of that kind.
KINDS = {RewardRecipe: "bradley_terry", SimCSERecipe: "simcse", ClipRecipe: "clip"}
LEAVES = {(key, objective): (f, tp) for cls, objective in KINDS.items() for key, f, tp in leaves(cls)}
LEAVES = [(key, objective, f, tp) for (key, objective), (f, tp) in LEAVES.items()]
IDS = [f"{key}[{objective}]" for key, objective, _, _ in LEAVES]
NUMERIC = [(key, objective, f, tp) for key, objective, f, tp in LEAVES if {int, float} & options(tp)]
# Keys where any finite number is meaningful.
UNBOUNDED = {"clip.init_bias", "contrastive.min_pair_score"}


@pytest.mark.parametrize("key, objective, tp", [(k, o, tp) for k, o, _, tp in LEAVES], ids=IDS)
def test_every_key_refuses_values_of_the_wrong_type(key, objective, tp):
    allowed = options(tp)
    wrong = [v for v in ("text", 1.5, 3, True, [{"a": 1}], {"a": 1}, None) if not accepts(allowed, v)]
    assert len(wrong) >= 3
    for value in wrong:
        with pytest.raises(RecipeError, match=rf"recipe key '{re.escape(key)}': expected .*, got "):
            recipe_from_dict(nest(key, value, objective))
    if str in allowed and typing.get_origin(tp) is not typing.Literal:
        with pytest.raises(RecipeError, match=rf"recipe key '{re.escape(key)}': expected a non-empty string"):
            recipe_from_dict(nest(key, "  ", objective))
    if float in allowed:
        for value in (math.nan, math.inf, -math.inf):
            with pytest.raises(RecipeError, match=rf"recipe key '{re.escape(key)}': expected a finite number"):
                recipe_from_dict(nest(key, value, objective))


def test_every_number_has_bounds_unless_any_finite_number_is_meaningful():
    unbounded = {key for key, _, f, _ in NUMERIC if not bounds(f)}
    assert unbounded == UNBOUNDED


def outside(limits: dict, integer: bool) -> list:
    """Values just past each bound (and far past it)."""
    step = 1 if integer else 1e-9
    values = []
    if "ge" in limits:
        values += [limits["ge"] - step, limits["ge"] - 1e6]
    if "gt" in limits:
        values += [limits["gt"], limits["gt"] - 1]
    if "le" in limits:
        values += [limits["le"] + step, limits["le"] + 1e6]
    if "lt" in limits:
        values += [limits["lt"], limits["lt"] + 1]
    return [int(v) if integer else float(v) for v in values]


BOUNDED = [(key, objective, f, tp) for key, objective, f, tp in NUMERIC if bounds(f)]


@pytest.mark.parametrize("key, objective, f, tp", BOUNDED, ids=[f"{k}[{o}]" for k, o, _, _ in BOUNDED])
def test_every_bounded_number_refuses_values_out_of_range_and_says_the_range(key, objective, f, tp):
    for value in outside(bounds(f), integer=float not in options(tp)):
        with pytest.raises(RecipeError, match=rf"recipe key '{re.escape(key)}' must be (>|>=|<|<=|in) .*, got "):
            recipe_from_dict(nest(key, value, objective))
    default = recipe_from_dict({"objective": objective})
    for part in key.split("."):
        default = getattr(default, part)
    recipe_from_dict(nest(key, default, objective))  # the default is allowed


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
    ("objective=simcse contrastive.pair_columns=[a]",
     r"'contrastive.pair_columns' must list exactly 2 items \(anchor and positive\)"),
    ("model.lora.target_modules=[]", r"'model.lora.target_modules' must list at least 1 item"),
    ("objective=clip clip.image_tower=resnet",
     r"'clip.image_tower': 'resnet' is not allowed; choose one of: efficientnet-lite0, tiny"),
    ("output_dir=", r"'output_dir': expected str, got None"),
    ("max_steps=[", r"override 'max_steps=\[': the value is not valid YAML"),
])
def test_issue_10_recipe_values_are_errors_saying_what_is_allowed(override, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(None, override.split(" "))


@pytest.mark.parametrize("objective, key, owners", [
    ("bradley_terry", "contrastive.temperature=0.1", "simcse, clip, siglip"),
    ("simcse", "clip.embed_dim=8", "clip, siglip"),
    ("clip", "loss.label_smoothing=0.1", "bradley_terry, plackett_luce, regression, odin"),
    ("simcse", "layout=packed", "bradley_terry, plackett_luce, regression, odin"),
])
def test_a_key_of_another_objective_is_refused_naming_the_objectives_it_belongs_to(objective, key, owners):
    """Objective-specific sections are a discriminated union on ``objective``: nothing is silently ignored."""
    with pytest.raises(RecipeError, match=rf"recipe key '{key.split('.')[0].split('=')[0]}' does not apply to "
                                          rf"objective {objective} \(it belongs to {owners}\)"):
        load_recipe(None, [f"objective={objective}", key])


def test_a_mistake_names_where_it_was_made_and_suggests_the_key(tmp_path):
    with pytest.raises(RecipeError, match=r"^command-line override 'learning_rat=1e-4': unknown recipe key "
                                          r"'learning_rat' \(did you mean 'learning_rate'\?\)"):
        load_recipe(None, ["learning_rat=1e-4"])
    path = tmp_path / "r.yaml"
    path.write_text("model:\n  lora: {rank: 4}\n")
    with pytest.raises(RecipeError, match=rf"^{re.escape(str(path))}: unknown recipe key 'model.lora.rank' "
                                          r"\(did you mean 'model.lora.r'\?\)"):
        load_recipe(path)


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
    from rewardlab.models.vision import IMAGE_TOWERS, build_image_tower

    (tp,) = [tp for key, _, _, tp in LEAVES if key == "clip.image_tower"]
    assert typing.get_args(tp) == IMAGE_TOWERS
    for name in IMAGE_TOWERS:
        assert build_image_tower(name, pretrained=False).width > 0
