"""Bradley–Terry pairwise reward loss.

References: R. A. Bradley and M. E. Terry, "Rank Analysis of Incomplete Block Designs", Biometrika 1952;
N. Stiennon et al., "Learning to summarize from human feedback", NeurIPS 2020 (the reward-model loss);
Llama 2 (Touvron et al., 2023) for the margin; Eisenstein et al., "Helping or Herding?", 2023 for reward centering.
"""

from __future__ import annotations

import torch
from torch import nn

from rewardlab.objectives.core import contrastive_cross_entropy


class BradleyTerryLoss(nn.Module):
    """``−log σ(r_c − r_r − m)`` as a 2-way softmax cross-entropy over ``[r_c − m, r_r]`` with target 0.

    Args:
        label_smoothing: ε, the probability that a label is flipped: the loss becomes
            ``(1 − ε)·(−log σ(d)) + ε·(−log σ(−d))`` with ``d = r_c − r_r − m`` (conservative BT, as cDPO).
        center_coefficient: adds ``c · mean((r_c + r_r)²)`` over the b pairs (Eisenstein et al.; TRL's
            ``center_rewards_coefficient``): it pulls each pair's mean reward to zero without shrinking its margin,
            as an L2 penalty on every reward would.

    Inputs (b = comparisons): ``chosen`` (b,), ``rejected`` (b,), ``margin`` (b,) or None, ``weights`` (b,) or None:
    the loss is the weighted mean over comparisons (a ranking of k responses gives each of its C(k, 2) comparisons
    weight 1 / C(k, 2), so it counts once, as in InstructGPT).

    Example::

        >>> loss = BradleyTerryLoss()
        >>> round(loss(torch.tensor([1.0]), torch.tensor([0.0])).item(), 4)  # -log σ(1)
        0.3133
    """

    def __init__(self, label_smoothing: float = 0.0, center_coefficient: float = 0.0):
        super().__init__()
        self.label_smoothing, self.center_coefficient = label_smoothing, center_coefficient

    def forward(self, chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | None = None,
                weights: torch.Tensor | None = None) -> torch.Tensor:
        shifted = chosen - margin if margin is not None else chosen
        logits = torch.stack([shifted, rejected], dim=1)
        # PyTorch smooths towards the uniform ε'/k; with k = 2, ε' = 2ε puts exactly ε on the flipped label.
        loss = contrastive_cross_entropy(logits, label_smoothing=2 * self.label_smoothing, weights=weights)
        if self.center_coefficient:
            centre = (chosen + rejected).float().pow(2)
            centre = centre.mean() if weights is None else (centre * weights).sum() / weights.sum()
            loss = loss + self.center_coefficient * centre
        return loss
