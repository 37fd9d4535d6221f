"""Poolers: one embedding per sequence from a backbone's hidden states (SimCSE, CLIP's text tower). Rewards are read
by :mod:`rewardlab.model`."""

from __future__ import annotations

import torch


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(n, s, d) hidden states of right-padded rows → (n, d): the first token (``cls``), the mean of the real tokens
    (``mean``) or the last real token (``last``, for causal LMs)."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        mask = attention_mask[..., None].to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), attention_mask.sum(1) - 1]
