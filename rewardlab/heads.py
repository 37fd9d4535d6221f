"""Heads: poolers for embeddings, and rewards from a sequence-classification model (one scalar per sequence, read
at the batch's score positions).

Padded batches go through the model's own forward, so the reward is exactly what plain transformers computes.
Packed and prefix-shared batches run the backbone with their own attention mask and position ids, then apply the
model's head to the hidden states at ``score_index``: the same head on the same token.
"""

from __future__ import annotations

import torch
from torch import nn

from rewardlab.data.collate import PairBatch


def sequence_rewards(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(n,) rewards of n right-padded sequences, through the model's own head (so plain transformers agrees)."""
    return model(input_ids=input_ids, attention_mask=attention_mask).logits.squeeze(-1)


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


def classifier_of(model: nn.Module) -> nn.Module:
    """The transformers sequence-classification model inside ``model`` (peft's wrapper removed)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def head_rewards(classifier: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Apply a sequence-classification head to the (n, d) hidden states of the reward tokens → (n,) rewards."""
    if hasattr(classifier, "score"):  # Llama, Qwen, Mistral, GPT-2, …: a linear map of the last token
        return classifier.score(hidden).squeeze(-1)
    pooler = getattr(classifier.base_model, "pooler", None)
    if pooler is not None and hasattr(classifier, "classifier"):  # BERT-style: pooler on [CLS], then a linear map
        return classifier.classifier(classifier.dropout(pooler(hidden[:, None, :]))).squeeze(-1)
    raise NotImplementedError(
        f"packed and prefix-shared layouts do not know the head of {type(classifier).__name__}; use layout: padded"
    )


class RewardScorer(nn.Module):
    """A reward model as one module whose forward takes a :class:`PairBatch` in any layout and returns the (2b,)
    rewards, chosen first. One forward is what data parallelism (DDP) needs to synchronise gradients."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        # The model's layer classes, for FSDP's transformer-based wrapping (one shard group per layer).
        self._no_split_modules = getattr(classifier_of(model), "_no_split_modules", None) or []

    def forward(self, batch: PairBatch) -> torch.Tensor:
        if batch.position_ids is None:
            return sequence_rewards(self.model, batch.input_ids, batch.attention_mask)
        classifier = classifier_of(self.model)
        # Additive once here, not a boolean mask every attention layer would convert (and keep for its backward).
        dtype = classifier.get_input_embeddings().weight.dtype
        mask = torch.zeros(batch.attention_mask.shape, dtype=dtype, device=batch.attention_mask.device)
        mask.masked_fill_(~batch.attention_mask, torch.finfo(dtype).min)
        hidden = classifier.base_model(
            input_ids=batch.input_ids, attention_mask=mask, position_ids=batch.position_ids
        ).last_hidden_state
        return head_rewards(classifier, hidden.reshape(-1, hidden.shape[-1])[batch.score_index])


def pair_rewards(scorer: nn.Module, batch: PairBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) rewards, each (b,), from a :class:`RewardScorer` (possibly wrapped by Accelerate)."""
    return scorer(batch).chunk(2)
