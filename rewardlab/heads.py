"""Rewards from a sequence-classification model: one scalar per sequence, read at the batch's score positions."""

from __future__ import annotations

import torch

from rewardlab.data.collate import PairBatch


def sequence_rewards(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(n,) rewards of n right-padded sequences, through the model's own head (so plain transformers agrees)."""
    return model(input_ids=input_ids, attention_mask=attention_mask).logits.squeeze(-1)


def pair_rewards(model: torch.nn.Module, batch: PairBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) rewards, each (b,): chosen and rejected go through the model as one stacked batch."""
    return sequence_rewards(model, batch.input_ids, batch.attention_mask).chunk(2)
