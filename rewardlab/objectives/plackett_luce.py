"""Plackett–Luce: the log-likelihood of a ranking of k responses, a product of softmaxes over what is left.

References: R. L. Plackett, "The Analysis of Permutations", Applied Statistics 1975; R. D. Luce, "Individual Choice
Behavior", 1959; F. Xia et al., "Listwise Approach to Learning to Rank" (ListMLE), ICML 2008; ties as in N. Breslow,
"Covariance Analysis of Censored Survival Data", Biometrics 1974 (each tied response is picked from the set that
still holds all its tied peers).

Shape notation: n = sequences in the batch (responses of all examples), t = terms.
"""

from __future__ import annotations

import torch
from torch import nn

from rewardlab.objectives.core import contrastive_cross_entropy


class PlackettLuceLoss(nn.Module):
    """``−log P(ranking) = Σ_i −log( e^{r_i} / Σ_{j : level_j ≥ level_i} e^{r_j} )`` per example, averaged over its
    terms (so an example counts once, whatever its k), then over examples. A term whose candidate set is the response
    alone is 0 and left out. With k = 2 and no tie it is Bradley–Terry.

    Inputs: ``rewards`` (n,), ``group`` (n,) the example of each response, ``levels`` (n,) its rank level (0 = best,
    equal levels tied, −1 = not ranked: left out).

    Example (one example, rewards 2, 1, 0 ranked 1, 2, 3)::

        −log(e²/(e² + e + 1)) = 0.407606   −log(e/(e + 1)) = 0.313262   (the last is alone: 0, left out)
        loss = (0.407606 + 0.313262) / 2 = 0.360434

        >>> loss = PlackettLuceLoss()
        >>> rewards, group, levels = torch.tensor([2.0, 1.0, 0.0]), torch.zeros(3, dtype=torch.long), torch.arange(3)
        >>> round(loss(rewards, group, levels).item(), 6)
        0.360434
    """

    def forward(self, rewards: torch.Tensor, group: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        candidates = (group[:, None] == group[None, :]) & (levels[None, :] >= levels[:, None]) & (levels[:, None] >= 0)
        terms = candidates.sum(1) > 1
        if not terms.any():
            raise ValueError("Plackett–Luce needs ranked responses: no example in this batch ranks two of them")
        logits = rewards.float()[None, :].expand(len(rewards), -1).masked_fill(~candidates, float("-inf"))[terms]
        targets = torch.arange(len(rewards), device=rewards.device)[terms]
        # each example once: its terms share weight 1 / (its number of terms)
        per_example = torch.zeros(int(group.max()) + 1, device=rewards.device).index_add_(
            0, group[terms], torch.ones(int(terms.sum()), device=rewards.device))
        return contrastive_cross_entropy(logits, targets, weights=1 / per_example[group[terms]])
