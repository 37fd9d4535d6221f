"""Objectives: each builds a logits matrix and hands it to the shared core in :mod:`rewardlab.objectives.core`."""

from rewardlab.objectives.bradley_terry import BradleyTerryLoss

__all__ = ["BradleyTerryLoss"]
