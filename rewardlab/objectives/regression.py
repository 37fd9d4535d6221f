"""Multi-attribute regression: one model output per rated attribute, mean squared error against the ratings.

References: Z. Wang et al., "HelpSteer2: Open-source dataset for training top-performing reward models", 2024
(five attributes rated 0–4 per response, a regression head per attribute); NeMo-Aligner's regression reward
model. Optionally Bradley–Terry on the weighted reward of the responses a prompt has (``pairwise_coefficient``).

Shape notation: n = responses, a = attributes, e = comparisons.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rewardlab.objectives.bradley_terry import BradleyTerryLoss


class AttributeRegressionLoss(nn.Module):
    """``mean((r − y)²)`` over responses and attributes, plus ``c · BT(w·r_better, w·r_worse)`` over the given
    comparisons when ``pairwise_coefficient`` c > 0 (w: the reward weights).

    Inputs: ``outputs`` (n, a), ``targets`` (n, a), ``edges`` (e, 2) indices into the n responses.

    Example (2 responses, 2 attributes, no pairwise term): outputs ((1, 2), (0, 0)), targets ((1, 0), (2, 0)):
    squared errors 0, 4, 4, 0 → 2.0::

        >>> loss = AttributeRegressionLoss(torch.tensor([0.5, 0.5]))
        >>> outputs, targets = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[1.0, 0.0], [2.0, 0.0]])
        >>> loss(outputs, targets, torch.zeros(0, 2, dtype=torch.long)).item()
        2.0
    """

    def __init__(self, reward_weights: torch.Tensor, pairwise_coefficient: float = 0.0):
        super().__init__()
        self.register_buffer("reward_weights", reward_weights.float(), persistent=False)
        self.pairwise_coefficient = pairwise_coefficient
        self.pairwise = BradleyTerryLoss()

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        loss = F.mse_loss(outputs.float(), targets.float())
        if self.pairwise_coefficient and len(edges):
            reward = outputs.float() @ self.reward_weights.to(outputs.device)
            loss = loss + self.pairwise_coefficient * self.pairwise(reward[edges[:, 0]], reward[edges[:, 1]])
        return loss
