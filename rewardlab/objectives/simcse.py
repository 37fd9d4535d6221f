"""SimCSE: contrastive sentence embeddings, an InfoNCE loss over cosine similarities.

References: T. Gao, X. Yao and D. Chen, "SimCSE: Simple Contrastive Learning of Sentence Embeddings", EMNLP 2021
(unsupervised: a sentence and itself under another dropout mask are the positive pair; supervised: paraphrase pairs,
with contradictions as hard negatives); A. van den Oord, Y. Li and O. Vinyals, "Representation Learning with
Contrastive Predictive Coding", 2018 (InfoNCE).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from rewardlab.objectives.core import contrastive_cross_entropy, gather_with_grad


class SimCSELoss(nn.Module):
    """Cross-entropy over ``cos(anchor_i, candidate_j) / τ``; each anchor's target is its own positive.

    The candidates are the positives of the whole batch, then (supervised SimCSE) the hard negatives of the whole
    batch as extra columns: every other row's positive and every hard negative is a negative for row i.

    Args:
        temperature: τ (the paper's 0.05).
        gather_across_processes: with several processes, the candidates are gathered from all of them (rank order,
            gradients flowing back to their own process), so each anchor sees the global batch's negatives and the
            target of local row i is ``rank · b + i``. The loss is the mean over local rows; with gradients averaged
            over processes (DDP), loss and gradients equal those of the global batch on one process.

    Inputs (b = rows on this process, d = embedding size; every process must have the same b):
        ``anchors`` (b, d), ``positives`` (b, d), ``hard_negatives`` (b, d) or None.

    Example (τ = 0.5, anchors (1, 0) and (0, 1), positives (1, 0) and (1, 1)): the cosines are
    ``[[1, 1/√2], [0, 1/√2]]``, the logits ``[[2, 1.4142], [0, 1.4142]]``, the targets ``[0, 1]``, so the loss is
    ``mean(log(1 + e^(1.4142 − 2)), log(1 + e^(0 − 1.4142))) = mean(0.442548, 0.217622) = 0.330085``::

        >>> loss = SimCSELoss(temperature=0.5)
        >>> round(loss(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [1.0, 1.0]])).item(), 6)
        0.330085
    """

    def __init__(self, temperature: float = 0.05, gather_across_processes: bool = True):
        super().__init__()
        self.temperature, self.gather_across_processes = temperature, gather_across_processes

    def get_logits(
        self, anchors: torch.Tensor, positives: torch.Tensor, hard_negatives: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(b, world · b) cosine logits, or (b, 2 · world · b) with hard negatives."""
        gather = gather_with_grad if self.gather_across_processes else (lambda x: x)
        candidates = [gather(positives)] + ([gather(hard_negatives)] if hard_negatives is not None else [])
        candidates = F.normalize(torch.cat(candidates).float(), dim=-1)
        return F.normalize(anchors.float(), dim=-1) @ candidates.T / self.temperature

    def get_targets(self, rows: int, device) -> torch.Tensor:
        """(b,) the column of each local row's own positive."""
        gathered = self.gather_across_processes and dist.is_available() and dist.is_initialized()
        offset = dist.get_rank() * rows if gathered else 0
        return torch.arange(offset, offset + rows, device=device)

    def forward(
        self, anchors: torch.Tensor, positives: torch.Tensor, hard_negatives: torch.Tensor | None = None
    ) -> torch.Tensor:
        logits = self.get_logits(anchors, positives, hard_negatives)
        return contrastive_cross_entropy(logits, self.get_targets(anchors.shape[0], anchors.device))
