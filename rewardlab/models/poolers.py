"""Poolers: one embedding per sequence from a backbone's hidden states (SimCSE, CLIP's text tower). Rewards are read
by :mod:`rewardlab.models.reward`."""

from __future__ import annotations

import torch


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(n, s, d) hidden states of padded rows → (n, d): the first real token (``cls``), the mean of the real tokens
    (``mean``) or the last real token (``last``, for causal LMs). Positions come from the mask, so rows padded on
    either side (a tokenizer's ``padding_side``) are read the same way."""
    if pooling == "mean":
        mask = attention_mask[..., None].to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
    real = attention_mask.bool()
    if pooling == "cls":
        index = real.int().argmax(1)  # argmax returns the first maximum
    else:
        positions = torch.arange(real.shape[1], device=real.device)
        index = torch.where(real, positions, -1).argmax(1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]
