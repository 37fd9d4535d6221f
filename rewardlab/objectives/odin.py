"""ODIN: a reward with its length disentangled, two heads trained jointly and only the quality head kept.

Reference: L. Chen et al., "ODIN: Disentangled Reward Mitigates Hacking in RLHF", ICML 2024 (arXiv 2402.07319): the
Bradley–Terry loss on the sum of a quality head and a length head, a length loss that decorrelates the quality head
from response length while the length head takes it (Pearson correlations over the batch), and an orthogonality
loss between the two heads' weights. At inference only the quality head scores.

Shape notation: n = responses, e = comparisons.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rewardlab.objectives.bradley_terry import BradleyTerryLoss


def pearson(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The Pearson correlation of two (n,) tensors (0 when either is constant)."""
    x, y = x.float() - x.float().mean(), y.float() - y.float().mean()
    return (x * y).sum() / (x.norm() * y.norm()).clamp(min=1e-8)


class OdinLoss(nn.Module):
    """``BT(q_b + l_b, q_w + l_w) + λ_L·(|ρ(q, L)| − ρ(l, L)) + λ_O·|cos(w_q, w_l)|``.

    Inputs: ``outputs`` (n, 2) (column 0 quality, column 1 length), ``edges`` (e, 2), ``lengths`` (n,) response
    lengths in tokens, ``head_weight`` (2, d): the final linear layer's rows of the two heads; ``margin`` and
    ``weights`` (e,) as :class:`BradleyTerryLoss` takes them.

    Example: two responses of lengths 1 and 3 with outputs (q, l) = (1, 0) and (0, 2), the first better, heads
    (1, 0) and (1, 1): BT −log σ(1 − 2) = 1.313262; ρ(q, L) = −1, ρ(l, L) = 1, so the length term is 1 − 1 = 0;
    |cos| = 1/√2 = 0.707107 → 2.02037::

        >>> loss = OdinLoss(length_coefficient=1.0)
        >>> out = loss(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[0, 1]]), torch.tensor([1.0, 3.0]),
        ...            torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
        >>> round(out.item(), 5)
        2.02037
    """

    def __init__(self, length_coefficient: float = 0.3, orthogonal_coefficient: float = 1.0, **bradley_terry):
        super().__init__()
        self.length_coefficient, self.orthogonal_coefficient = length_coefficient, orthogonal_coefficient
        self.bradley_terry = BradleyTerryLoss(**bradley_terry)

    def forward(self, outputs: torch.Tensor, edges: torch.Tensor, lengths: torch.Tensor, head_weight: torch.Tensor,
                margin: torch.Tensor | None = None, weights: torch.Tensor | None = None) -> torch.Tensor:
        total = outputs.sum(-1)
        loss = self.bradley_terry(total[edges[:, 0]], total[edges[:, 1]], margin, weights)
        quality, length = outputs[:, 0], outputs[:, 1]
        loss = loss + self.length_coefficient * (pearson(quality, lengths).abs() - pearson(length, lengths))
        cosine = F.cosine_similarity(head_weight[0].float(), head_weight[1].float(), dim=0)
        return loss + self.orthogonal_coefficient * cosine.abs()
