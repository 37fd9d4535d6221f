"""rewardlab: preference reward models (Bradley–Terry) and their contrastive siblings on one small core.

The public API, importable from ``rewardlab`` itself (the modules behind it may move; these names stay)::

    from rewardlab import RewardModel, RewardFunction, load_recipe, train

    recipe = load_recipe("recipes/quickstart.yaml", ["max_steps=20", "output_dir=runs/try"])
    train(recipe)
    rm = RewardModel.load("runs/try")
    rm.score(["How do I water a cactus?"], [" Every two to three weeks."])

Names load on first use, so ``import rewardlab`` is quick and imports no torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name → the module that defines it
_API = {
    "RewardModel": "rewardlab.inference.scorer",
    "Scores": "rewardlab.inference.scorer",
    "Scorer": "rewardlab.inference.scorer",
    "load_scorer": "rewardlab.inference.scorer",
    "RewardFunction": "rewardlab.inference.rlhf",
    "RemoteRewardModel": "rewardlab.inference.rlhf",
    "score_file": "rewardlab.inference.files",
    "evaluate_files": "rewardlab.inference.evaluate",
    "run_bench": "rewardlab.inference.bench",
    "average": "rewardlab.inference.averaging",
    "create_app": "rewardlab.inference.server",
    "serve": "rewardlab.inference.server",
    "Recipe": "rewardlab.config",
    "load_recipe": "rewardlab.config",
    "train": "rewardlab.training",
    "UserError": "rewardlab.errors",
    "RecipeError": "rewardlab.errors",
    "DataError": "rewardlab.errors",
    "ScoringError": "rewardlab.errors",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'rewardlab' has no attribute {name!r}")
    attribute = "train_recipe" if name == "train" else name
    value = getattr(importlib.import_module(_API[name]), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
