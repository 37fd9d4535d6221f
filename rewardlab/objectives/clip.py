"""CLIP: the symmetric InfoNCE loss over an image–text similarity matrix, with a learnable logit scale.

Reference: A. Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021
(pseudocode in Figure 3; the scale starts at 1/0.07 and is clipped at 100). Split as in open_clip's ``ClipLoss``:
``get_logits`` / ``get_ground_truth`` / ``forward``.

Shape notation: n = image–text pairs (over all processes when gathered), d = embedding size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from rewardlab.objectives.core import contrastive_cross_entropy

# (m, d) local rows → (n, d) rows of every process, gradients flowing back to the local rows.
Gather = Callable[[torch.Tensor], torch.Tensor]


def pairwise_logits(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
    logit_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``logits_per_image`` (n, n): entry (i, j) = scale · ⟨image_i, text_j⟩ (+ bias); row i, column i is a pair."""
    logits = logit_scale * image_features @ text_features.T
    return logits + logit_bias if logit_bias is not None else logits


class ClipLoss(nn.Module):
    """``(CE(logits_per_image, diag) + CE(logits_per_text, diag)) / 2``: each image picks its caption among the
    batch's captions, and each caption its image.

    Args:
        gather: when set (several processes), applied to both feature matrices first, so every process scores its
            pairs against the negatives of all processes; the gradient flows back to the local rows.

    Inputs: ``image_features`` (n, d) and ``text_features`` (n, d), L2-normalised; ``logit_scale`` a scalar, already
    exponentiated and clamped (the model learns its log, so that it stays positive).

    Example (n = 2, d = 2, scale 1): images (1, 0), (0, 1); texts (1, 0), (0.6, 0.8)::

        logits_per_image = [[1, 0.6], [0, 0.8]]     logits_per_text = its transpose = [[1, 0], [0.6, 0.8]]
        image rows: −log softmax(1, 0.6)[0] = log(1 + e^−0.4) = 0.513015;  log(1 + e^−0.8) = 0.371101
        text rows:  log(1 + e^−1) = 0.313262;  log(1 + e^−0.2) = 0.598139
        loss = ((0.513015 + 0.371101) / 2 + (0.313262 + 0.598139) / 2) / 2 = 0.448879

        >>> images, texts = torch.tensor([[1.0, 0], [0, 1]]), torch.tensor([[1.0, 0], [0.6, 0.8]])
        >>> round(ClipLoss()(images, texts, torch.tensor(1.0)).item(), 6)
        0.448879
    """

    def __init__(self, gather: Gather | None = None):
        super().__init__()
        self.gather = gather

    def get_logits(
        self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits_per_image, logits_per_text), each (n, n), over all processes' pairs when gathering."""
        if self.gather is not None:
            image_features, text_features = self.gather(image_features), self.gather(text_features)
        logits_per_image = pairwise_logits(image_features, text_features, logit_scale)
        return logits_per_image, logits_per_image.T

    def get_ground_truth(self, n: int, device: torch.device) -> torch.Tensor:
        """(n,): row i's pair is column i."""
        return torch.arange(n, device=device)

    def forward(
        self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
    ) -> torch.Tensor:
        logits_per_image, logits_per_text = self.get_logits(image_features, text_features, logit_scale)
        targets = self.get_ground_truth(logits_per_image.shape[0], logits_per_image.device)
        return (contrastive_cross_entropy(logits_per_image, targets)
                + contrastive_cross_entropy(logits_per_text, targets)) / 2
