"""Training: the one Accelerate loop (:mod:`.loop`), its checkpoints, trackers and launcher; ensembles of runs and
comparisons of recipes."""

from __future__ import annotations

from rewardlab.config import Recipe, RewardRecipe


def train_recipe(recipe: Recipe, resume: bool = False, resume_changed: bool = False) -> dict:
    """Train what ``recipe`` describes into its ``output_dir``: one model, or for a reward recipe with several
    ``ensemble`` members an ensemble folder. Returns the final metrics (an ensemble's: every member's)."""
    from rewardlab.training.ensembles import train_ensemble
    from rewardlab.training.loop import train

    if isinstance(recipe, RewardRecipe) and recipe.ensemble.size > 1:
        return train_ensemble(recipe, resume=resume, resume_changed=resume_changed)
    return train(recipe, resume=resume, resume_changed=resume_changed)
