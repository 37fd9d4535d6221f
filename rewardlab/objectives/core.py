"""The one loss core every contrastive objective shares: a logits matrix and the column each row should pick.

Shape notation: n = rows (comparisons), k = candidates per row.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def contrastive_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor | None = None, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Softmax cross-entropy of ``logits`` (n, k) against target columns ``targets`` (n,), default all 0.

    ``label_smoothing`` follows PyTorch: the target distribution is ``(1 − ε)·onehot + ε/k``.
    """
    if targets is None:
        targets = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)
