"""Recipe files and ``key=value`` overrides → a validated :class:`~rewardlab.config.recipe.Recipe`.

Validation is pydantic's (:mod:`rewardlab.config.recipe` declares every key); this module reads the YAML, applies
the overrides and turns a validation error into one line that names the key, the value, what is allowed and where
the value came from (the recipe file, or the override typed on the command line), with a "did you mean" for an
unknown key. Nothing here imports torch: a mistake is reported before any model code loads.
"""

from __future__ import annotations

import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import annotated_types
import yaml
from pydantic import BaseModel, Discriminator, Tag, TypeAdapter, ValidationError

from rewardlab.config.recipe import (
    OBJECTIVES,
    RECIPE_KINDS,
    ClipRecipe,
    Comparison,
    Recipe,
    RewardRecipe,
    SimCSERecipe,
    kind_of,
    number_from_text,
)
from rewardlab.errors import RecipeError

RECIPES_DIR = Path(__file__).resolve().parent.parent.parent / "recipes"
DEFAULT_RECIPE = RECIPES_DIR / "quickstart.yaml"

_ANY_RECIPE = TypeAdapter(typing.Annotated[
    typing.Annotated[RewardRecipe, Tag("reward")] | typing.Annotated[SimCSERecipe, Tag("simcse")]
    | typing.Annotated[ClipRecipe, Tag("clip")],
    Discriminator(lambda data: kind_of(data.get("objective", "bradley_terry")) if isinstance(data, dict) else
                  kind_of(getattr(data, "objective", None))),
])


def read_yaml(path: Path) -> Any:
    """A recipe or comparison file's contents ({} when empty); a missing, unreadable or malformed file is a
    :class:`RecipeError`."""
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None


def apply_override(data: dict, assignment: str) -> str:
    """Apply one ``dotted.key=value`` to a nested dict (the value parsed as YAML: ``3``, ``1e-5``, ``[a, b]``);
    returns the dotted key."""
    if "=" not in assignment:
        raise RecipeError(f"override '{assignment}' is not of the form key=value")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise RecipeError(f"override '{assignment}': '{key}' is not a recipe key")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise RecipeError(f"override '{assignment}': '{part}' is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", e)
        raise RecipeError(f"override '{assignment}': the value is not valid YAML ({problem})") from None
    return ".".join(parts)


def load_recipe(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Recipe:
    """Read a recipe file (the quickstart when ``path`` is None) and apply ``key=value`` overrides. A mistake is a
    :class:`RecipeError` naming the key and its source: the file, or the override as it was typed."""
    path = Path(path) if path else DEFAULT_RECIPE
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of keys to values, got {type(data).__name__}")
    typed = {apply_override(data, assignment): assignment for assignment in overrides}
    return recipe_from_dict(data, str(path), typed)


def recipe_from_dict(data: Any, source: str = "", overrides: dict[str, str] | None = None) -> Recipe:
    """Validate a recipe given as plain data (a parsed file, a saved ``recipe.yaml``). ``overrides`` maps the dotted
    keys that came from the command line to what was typed, so that an error names them as its source."""
    try:
        return _ANY_RECIPE.validate_python(data)
    except ValidationError as e:
        key, message = explain(e, data, tagged=True)
        typed = next((v for k, v in (overrides or {}).items() if key == k or key.startswith(k + ".")
                      or k.startswith(key + ".")), None)
        where = f"command-line override '{typed}'" if typed else source
        raise RecipeError(f"{where}: {message}" if where else message) from None


def load_comparison(path: str | Path, overrides: typing.Sequence[str] = ()) -> Comparison:
    """Read a comparison file (``runs:``, ``overrides:``, ``output_dir:``) and check that every run's recipe loads
    (with the file's overrides, then ``overrides``)."""
    path = Path(path)
    data = read_yaml(path)
    try:
        comparison = Comparison.model_validate(data)
    except ValidationError as e:
        raise RecipeError(f"{path}: {explain(e, data)[1]}") from None
    comparison = comparison.model_copy(update={"overrides": [*comparison.overrides, *overrides]})
    for run in comparison.runs:
        load_recipe(run, comparison.overrides)
    return comparison


# Errors: pydantic's, as one line naming the key


PRIORITY = ("recipe", "extra_forbidden", "model_type", "model_attributes_type", "dict_type")
CONSTRAINTS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "too_short", "too_long",
               "finite_number", "empty_string", "literal_error"}


def explain(error: ValidationError, data: Any, tagged: bool = False) -> tuple[str, str]:
    """(the dotted key, a one-line message) for the first problem of a validation error. Where a value fails
    every member of a union, the member whose type it has says why (a number out of range rather than "not a
    boolean")."""
    errors = error.errors(include_url=False)
    cls = _kind(data) if tagged else Comparison
    located = [(e, *_locate(cls, e["loc"][1:] if tagged else e["loc"])) for e in errors]
    unknown = [item for item in located if item[0]["type"] == "extra_forbidden"]  # a typo explains the rest
    first_key = (unknown or located)[0][1]
    same = [item for item in located if item[1] == first_key]
    ranked = sorted(same, key=lambda item: (PRIORITY.index(item[0]["type"]) if item[0]["type"] in PRIORITY else
                                             len(PRIORITY) + (item[0]["type"] not in CONSTRAINTS)))
    e, key, owner, field = ranked[0]
    value = number_from_text(_get(data, key)) if field is not None and float in _members(field.annotation) else \
        _get(data, key)
    if e["type"] == "recipe":
        return key, e["ctx"]["message"]
    if e["type"] == "extra_forbidden":
        return key, _unknown(key, owner, data)
    if e["type"] == "missing":
        return key, f"recipe key '{key}' is required"
    if e["type"] in ("model_type", "model_attributes_type", "dict_type"):
        return key, f"recipe key '{key or '<top>'}' must be a mapping, got {value!r}"
    if field is None:  # the discriminator: no such objective
        return "objective", (f"recipe key 'objective': {_get(data, 'objective')!r} is not allowed; choose one of: "
                             f"{', '.join(OBJECTIVES)}")
    hint = f" ({field.json_schema_extra['hint']})" if field.json_schema_extra else ""
    if isinstance(value, float) and not math.isfinite(value):
        return key, f"recipe key '{key}': expected a finite number, got {value!r}"
    if e["type"] == "literal_error":
        choices = _literal_choices(field.annotation)
        if isinstance(value, str):
            return key, f"recipe key '{key}': {value!r} is not allowed; choose one of: {', '.join(choices)}{hint}"
    elif e["type"] in ("too_short", "too_long") and isinstance(value, list):
        low, high = _lengths(field)
        count = f"exactly {low}" if low == high else f"at least {low}"
        return key, f"recipe key '{key}' must list {count} item{'s' * (low != 1)}{hint}, got {value!r}"
    elif e["type"] in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return key, f"recipe key '{key}' must be {_describe_bounds(field)}{hint}, got {value!r}"
    elif e["type"] == "finite_number":
        return key, f"recipe key '{key}': expected a finite number, got {value!r}"
    elif e["type"] == "empty_string":
        return key, f"recipe key '{key}': expected a non-empty string, got {value!r}"
    return key, f"recipe key '{key}': expected {type_name(field.annotation)}, got {value!r}"


def _kind(data: Any) -> type[BaseModel]:
    objective = data.get("objective", "bradley_terry") if isinstance(data, dict) else None
    return RECIPE_KINDS.get(kind_of(objective), RewardRecipe)


def _locate(cls: type[BaseModel], loc: tuple) -> tuple[str, type[BaseModel] | None, Any]:
    """(dotted key, the section that holds it, its FieldInfo) of an error location; union tags and list indices in
    ``loc`` are skipped. An unknown key's FieldInfo is None."""
    parts, owner, field, section = [], cls, None, cls
    for item in loc:
        if section is not None and isinstance(item, str) and item in section.model_fields:
            parts.append(item)
            owner, field = section, section.model_fields[item]
            annotation = field.annotation
            section = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        elif section is not None and isinstance(item, str):
            parts.append(item)  # an unknown key
            owner, field = section, None
            break
    return ".".join(parts), owner, field


def _get(data: Any, key: str) -> Any:
    for part in key.split(".") if key else []:
        data = data.get(part) if isinstance(data, dict) else None
    return data


def _unknown(key: str, owner: type[BaseModel], data: Any) -> str:
    """An unknown key: a key of another objective's recipe, or a typo (the closest valid key, then all of them)."""
    prefix, _, name = key.rpartition(".")
    valid = sorted(owner.model_fields)
    if not prefix:
        others = [kind for kind, cls in RECIPE_KINDS.items() if name in cls.model_fields]
        if others:
            objectives = [o for o in OBJECTIVES if kind_of(o) in others]
            return (f"recipe key '{name}' does not apply to objective {_get(data, 'objective') or 'bradley_terry'} "
                    f"(it belongs to {', '.join(objectives)})")
    close = difflib.get_close_matches(name, valid, n=1) or sorted(
        (k for k in valid if name.startswith(k) or k.startswith(name)), key=len)[-1:]  # rank → r
    hint = f" (did you mean '{prefix + '.' if prefix else ''}{close[0]}'?)" if close else ""
    return (f"unknown recipe key '{key}'{hint}; valid keys{' under ' + prefix if prefix else ''}: "
            + ", ".join(valid))


def _members(annotation: Any) -> list:
    """The types an annotation allows, ``Annotated`` metadata stripped (``int | None`` → [int, NoneType])."""
    if get_origin(annotation) is typing.Annotated:
        return _members(get_args(annotation)[0])
    if get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for a in get_args(annotation) for m in _members(a)]
    return [annotation]


def _metadata(field) -> list:
    """Every constraint of a field, its union members' included."""
    found = list(field.metadata)

    def walk(annotation):
        if get_origin(annotation) is typing.Annotated:
            args = get_args(annotation)
            for item in args[1:]:
                found.extend(getattr(item, "metadata", [item]))
            walk(args[0])
        elif get_origin(annotation) in (typing.Union, types.UnionType):
            for a in get_args(annotation):
                walk(a)

    walk(field.annotation)
    return found


def bounds(field) -> dict[str, float]:
    """A numeric field's bounds: ``gt``, ``ge``, ``lt``, ``le``."""
    out = {}
    for item in _metadata(field):
        for name in ("gt", "ge", "lt", "le"):
            if isinstance(item, getattr(annotated_types, name.capitalize())):
                out[name] = getattr(item, name)
    return out


def _lengths(field) -> tuple[int, int | None]:
    low, high = 0, None
    for item in _metadata(field):
        if isinstance(item, annotated_types.MinLen):
            low = item.min_length
        if isinstance(item, annotated_types.MaxLen):
            high = item.max_length
    return low, high


def _describe_bounds(field) -> str:
    """``>= 0``, ``> 0``, or an interval such as ``in [0, 1)``."""
    b = bounds(field)
    low = ("[", b["ge"]) if "ge" in b else ("(", b["gt"]) if "gt" in b else None
    high = ("]", b["le"]) if "le" in b else (")", b["lt"]) if "lt" in b else None
    if low and high:
        return f"in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
    if low:
        return f"{'>=' if low[0] == '[' else '>'} {low[1]:g}"
    return f"{'<=' if high[0] == ']' else '<'} {high[1]:g}"


def _literal_choices(annotation: Any) -> list[str]:
    return [str(v) for m in _members(annotation) if get_origin(m) is Literal for v in get_args(m)]


def type_name(annotation: Any) -> str:
    """An annotation in words: ``int``, ``int | None``, ``list[str] | str``, ``one of a, b``."""
    names = []
    for member in _members(annotation):
        if member is type(None):
            names.append("None")
        elif get_origin(member) is Literal:
            names.append("str" if all(isinstance(v, str) for v in get_args(member)) else "one of "
                         + ", ".join(map(str, get_args(member))))
        elif get_origin(member) is list:
            names.append(f"list[{type_name(get_args(member)[0])}]")
        else:
            names.append(getattr(member, "__name__", str(member)))
    return " | ".join(dict.fromkeys(names))
