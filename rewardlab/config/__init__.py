"""Recipes: YAML files and ``key=value`` overrides → validated pydantic models (:mod:`.recipe` declares every key,
:mod:`.loading` reads and explains)."""

from rewardlab.config.loading import DEFAULT_RECIPE, RECIPES_DIR, load_comparison, load_recipe, recipe_from_dict
from rewardlab.config.recipe import (
    ClipRecipe,
    ClipSettings,
    Comparison,
    ContrastiveSettings,
    EnsembleSettings,
    LoraSettings,
    LossSettings,
    ModelSettings,
    Recipe,
    RewardRecipe,
    SimCSERecipe,
)
from rewardlab.errors import RecipeError

__all__ = [
    "DEFAULT_RECIPE", "RECIPES_DIR", "ClipRecipe", "ClipSettings", "Comparison", "ContrastiveSettings",
    "EnsembleSettings", "LoraSettings", "LossSettings", "ModelSettings", "Recipe", "RecipeError", "RewardRecipe",
    "SimCSERecipe", "load_comparison", "load_recipe", "recipe_from_dict",
]
