"""SigLIP: a sigmoid loss over the same image–text logits as CLIP, with a learnable scale and bias.

Reference: X. Zhai, B. Mustafa, A. Kolesnikov and L. Beyer, "Sigmoid Loss for Language Image Pre-Training",
ICCV 2023 (Algorithm 1: ``t`` starts at 10 as ``log t = log 10``, ``b`` at −10). Every (image, text) cell is an
independent binary decision, so no softmax normalises over the batch.

Shape notation: n = image–text pairs (over all processes when gathered), d = embedding size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rewardlab.objectives.clip import Gather, pairwise_logits


class SigLipLoss(nn.Module):
    """``−(1/n) Σ_i Σ_j log σ(z_ij · (t·⟨x_i, y_j⟩ + b))`` with ``z_ij = +1`` on the diagonal (pairs), −1 elsewhere.

    As in the paper, the n² terms are summed and divided by n (the batch size), not by n².

    Args:
        gather: when set (several processes), applied to both feature matrices first, so every process scores its
            pairs against the negatives of all processes; the gradient flows back to the local rows.

    Inputs: ``image_features`` (n, d) and ``text_features`` (n, d), L2-normalised; ``logit_scale`` (t) and
    ``logit_bias`` (b) scalars, t already exponentiated and clamped.

    Example (n = 2, t = 10, b = −10): images (1, 0), (0, 1); texts (1, 0), (0.6, 0.8)::

        similarities [[1, 0.6], [0, 0.8]] → logits t·s + b = [[0, −4], [−10, −2]], z = [[1, −1], [−1, 1]]
        −log σ(0) = 0.693147   −log σ(4) = 0.018150   −log σ(10) = 0.000045   −log σ(−2) = 2.126928
        loss = (0.693147 + 0.018150 + 0.000045 + 2.126928) / 2 = 1.419135

        >>> images, texts = torch.tensor([[1.0, 0], [0, 1]]), torch.tensor([[1.0, 0], [0.6, 0.8]])
        >>> round(SigLipLoss()(images, texts, torch.tensor(10.0), torch.tensor(-10.0)).item(), 6)
        1.419135
    """

    def __init__(self, gather: Gather | None = None):
        super().__init__()
        self.gather = gather

    def get_logits(
        self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
        logit_bias: torch.Tensor,
    ) -> torch.Tensor:
        """logits_per_image (n, n), over all processes' pairs when gathering."""
        if self.gather is not None:
            image_features, text_features = self.gather(image_features), self.gather(text_features)
        return pairwise_logits(image_features, text_features, logit_scale, logit_bias)

    def get_ground_truth(self, n: int, device: torch.device) -> torch.Tensor:
        """z (n, n): +1 on the diagonal, −1 elsewhere."""
        return 2 * torch.eye(n, device=device) - 1

    def forward(
        self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
        logit_bias: torch.Tensor,
    ) -> torch.Tensor:
        logits = self.get_logits(image_features, text_features, logit_scale, logit_bias).float()
        signs = self.get_ground_truth(logits.shape[0], logits.device)
        return -F.logsigmoid(signs * logits).sum() / logits.shape[0]
