"""Objectives: each builds a logits matrix and hands it to the shared core in :mod:`rewardlab.objectives.core`."""

from rewardlab.objectives.bradley_terry import BradleyTerryLoss
from rewardlab.objectives.clip import ClipLoss
from rewardlab.objectives.odin import OdinLoss
from rewardlab.objectives.plackett_luce import PlackettLuceLoss
from rewardlab.objectives.regression import AttributeRegressionLoss
from rewardlab.objectives.siglip import SigLipLoss
from rewardlab.objectives.simcse import SimCSELoss

__all__ = ["BradleyTerryLoss", "PlackettLuceLoss", "AttributeRegressionLoss", "OdinLoss", "SimCSELoss", "ClipLoss",
           "SigLipLoss"]
