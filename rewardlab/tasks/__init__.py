"""Learners: each module assembles data, model, objective, evaluation and saving for one kind of model, behind the
small :class:`~rewardlab.tasks.base.Task` interface that the one training loop drives."""

from __future__ import annotations

from collections.abc import Callable

from rewardlab.config import ClipRecipe, Recipe, RewardRecipe, SimCSERecipe
from rewardlab.tasks.base import Task
from rewardlab.tasks.clip import ClipTask
from rewardlab.tasks.reward import RewardTask
from rewardlab.tasks.simcse import SimCSETask

TASKS: dict[type[Recipe], type] = {RewardRecipe: RewardTask, SimCSERecipe: SimCSETask, ClipRecipe: ClipTask}


def build_task(recipe: Recipe, log: Callable[[str], None]) -> Task:
    """The learner of the recipe's kind (its objective)."""
    return TASKS[type(recipe)](recipe, log)
