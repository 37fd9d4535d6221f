"""The reward model: a transformers sequence classifier whose one ``forward(batch)`` reads one reward per sequence
in every batch layout. The only place a reward is read, for training, evaluation, scoring, best-of-n and serving.

- ``padded`` batches go through the model's own forward, so the reward is exactly what plain transformers computes.
- ``packed`` and ``prefix_shared`` batches run the backbone with their own attention mask and position ids, then
  apply the model's head to the hidden states of the reward tokens (:func:`head_rewards`, one rule per head shape).
- Best-of-n (:meth:`RewardNetwork.shared_prompt_rewards`) runs the prompt once and the candidates on its KV cache.

Which layouts a model supports is a capability, decided when it is first needed (:func:`probe_layouts`): a packed
and a prefix-shared probe batch must give the padded path's hidden states and rewards. Models whose attention does
not honour an explicit mask or position ids (DeBERTa, ModernBERT, flash attention) get ``padded``, and say why.

How packed rows attend is decided the same way (:func:`probe_attention`): ``blocks`` (:mod:`rewardlab.models.attention`,
each block of a row on its own) where the model's SDPA attention can be replaced and gives the padded path's
results, else ``dense`` (the whole (s, s) mask to the model's attention), with the reason.
"""

from __future__ import annotations

import inspect
from typing import get_args

import torch
from torch import nn

from rewardlab.config.recipe import Attention
from rewardlab.data.collate import PairBatch, attention_mask, pad_sequences, reward_token
from rewardlab.models.attention import BLOCKS_KWARG, AttentionBlocks
from rewardlab.models.heads import head_rewards, position_offset
from rewardlab.models.layouts import probe_attention, probe_layouts

ATTENTION = get_args(Attention)


def additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean → additive mask, once per batch (not converted by every attention layer and kept for its backward)."""
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)


def packed_masks(config, allowed: torch.Tensor, position_ids: torch.Tensor, encoder: bool, dtype: torch.dtype):
    """The additive attention mask(s) of packed rows. A model with sliding-window layers (Gemma 2, Mistral,
    ModernBERT, ...) applies its window only to the masks it builds itself, so here the window is applied by
    position (the distance within a sequence, as in its padded row): one mask for every layer, or one per layer
    type (``{"full_attention", "sliding_attention"}``), as transformers' models take them."""
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None) or []
    if not window or (layer_types and "sliding_attention" not in layer_types):
        return additive(allowed, dtype)
    q, k = position_ids[:, None, :, None], position_ids[:, None, None, :]
    # transformers' overlays: causal kv > q − window; bidirectional |q − kv| ≤ window
    near = (q - k).abs() <= window if encoder else k > q - window
    windowed = additive(allowed & near, dtype)
    if not layer_types:  # every layer slides (Mistral, Phi-3 with a window)
        return windowed
    return {"full_attention": additive(allowed, dtype), "sliding_attention": windowed}


class RewardNetwork(nn.Module):
    """A reward model as one module: ``forward(batch)`` → (2b,) rewards (chosen first) in any layout.

    Args:
        model: a transformers ``...ForSequenceClassification`` with one output, possibly wrapped by peft.
        encoder: True for bidirectional encoders (reward at the first token), False for causal LMs.
        attention: how packed rows attend: ``blocks`` (each block of a row on its own,
            :mod:`rewardlab.models.attention`), ``dense`` (the whole mask to the model's attention) or ``auto``
            (blocks where the model computes them exactly; see :meth:`attention`).

    One forward is also what data parallelism (DDP) needs to synchronise gradients.
    """

    def __init__(self, model: nn.Module, encoder: bool, attention: str = "auto"):
        super().__init__()
        if attention not in ATTENTION:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION)}, not {attention!r}")
        self.model, self.encoder, self.wanted_attention = model, encoder, attention
        # The model's layer classes, for FSDP's transformer-based wrapping (one shard group per layer).
        self._no_split_modules = getattr(self.classifier, "_no_split_modules", None) or []
        self._layouts: tuple[tuple[str, ...], str] | None = None
        self._attention: tuple[str, str] | None = None

    @property
    def classifier(self) -> nn.Module:
        """The transformers sequence classifier (peft's wrapper removed)."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    @property
    def pad_token_id(self) -> int | None:
        return self.classifier.config.pad_token_id

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.classifier.get_input_embeddings().weight.dtype

    def layouts(self) -> tuple[tuple[str, ...], str]:
        """(the layouts this model computes exactly, why it is limited to ``padded`` or ''), probed once."""
        if self._layouts is None:
            self.attention()
            self._layouts = probe_layouts(self)
        return self._layouts

    def attention(self) -> tuple[str, str]:
        """(``blocks`` or ``dense``: how packed rows attend, why not ``blocks`` or ''), probed once."""
        if self._attention is None:
            self._attention = ("dense", "asked for") if self.wanted_attention == "dense" else probe_attention(self)
        return self._attention

    def forward(self, batch: PairBatch) -> torch.Tensor:
        if batch.position_ids is None:
            return self.padded(batch.input_ids, batch.attention_mask)
        return self.packed(batch.input_ids, batch.attention_mask, batch.position_ids, batch.score_index,
                           batch.blocks)

    def padded(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(n,) rewards of n right-padded rows, through the model's own head (so plain transformers agrees)."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits.squeeze(-1)

    def packed(self, input_ids: torch.Tensor, allowed: torch.Tensor | None, position_ids: torch.Tensor,
               score_index: torch.Tensor, blocks: torch.Tensor | None = None) -> torch.Tensor:
        """Rewards at the flat positions ``score_index`` of packed rows: ``allowed`` (r, 1, s, s) booleans say which
        key each query sees, ``blocks`` (k, 5) the same as attention blocks (read when the model attends by blocks:
        :meth:`attention`), ``position_ids`` (r, s) restart per sequence."""
        by_blocks = blocks is not None and self.attention()[0] == "blocks"
        if allowed is None and not by_blocks:
            raise ValueError("a batch without its attention mask (collated for block attention) reached a model that "
                             f"attends densely ({self.attention()[1]})")
        blocks = AttentionBlocks.of(blocks, input_ids, causal=not self.encoder) if by_blocks else None
        return self.head(self.packed_states(input_ids, allowed, position_ids, blocks)[score_index])

    def packed_states(self, input_ids: torch.Tensor, allowed: torch.Tensor | None, position_ids: torch.Tensor,
                      blocks: AttentionBlocks | None = None):
        """(r·s, d) last hidden states of packed rows; by ``blocks`` when given, else by the dense mask."""
        if blocks is None:
            extra = {"attention_mask": packed_masks(self.classifier.config, allowed, position_ids, self.encoder,
                                                    self.dtype)}
        else:  # a 4-D mask is taken as given, so transformers builds none; the block attention does not read it
            rows, width = input_ids.shape
            placeholder = torch.ones(1, 1, 1, 1, dtype=torch.bool, device=input_ids.device)
            placeholder = placeholder.expand(rows, 1, width, width)
            extra = {"attention_mask": placeholder, BLOCKS_KWARG: blocks}
        hidden = self.classifier.base_model(
            input_ids=input_ids, position_ids=position_ids + position_offset(self.classifier), **extra
        ).last_hidden_state
        return hidden.reshape(-1, hidden.shape[-1])

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """(n,) rewards of the (n, d) hidden states of reward tokens."""
        return head_rewards(self.classifier, hidden).squeeze(-1)

    @torch.inference_mode()
    def shared_prompt_rewards(self, prompt_ids: list[int], responses: list[list[int]],
                              groups: list[list[int]]) -> list[float]:
        """Rewards of n responses to one prompt (causal LMs) with the prompt computed once: one forward pass over
        the prompt keeps its keys and values (the KV cache); then each group of candidates, end to end in one row,
        attends to that cache and each candidate to itself only, positioned right after the prompt: the
        prefix-shared layout of training, with the prompt's own attention done causally in its pass."""
        base, pad_id, start, device = self.classifier.base_model, self.pad_token_id, len(prompt_ids), self.device
        # transformers 5.x renamed past_key_values to cache (the old name warns, and goes in 5.40)
        cache_arg = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        out = base(input_ids=torch.tensor([prompt_ids], device=device), use_cache=True)
        prompt_hidden, cache = out.last_hidden_state[0], out[cache_arg]
        dtype = prompt_hidden.dtype
        states = [None] * len(responses)
        for group in groups:
            ids = [t for k in group for t in responses[k]]
            part_of = torch.tensor([[i for i, k in enumerate(group, 1) for _ in responses[k]]])
            allowed = attention_mask(torch.zeros_like(part_of), part_of, encoder=False)[0, 0]  # each sees itself
            mask = torch.zeros(1, 1, len(ids), start + len(ids), dtype=dtype)
            mask[0, 0, :, start:].masked_fill_(~allowed, torch.finfo(dtype).min)  # and the whole prompt
            positions = [start + i for k in group for i in range(len(responses[k]))]
            hidden = base(
                input_ids=torch.tensor([ids], device=device), attention_mask=mask.to(device),
                position_ids=torch.tensor([positions], device=device), use_cache=True, **{cache_arg: cache},
            ).last_hidden_state[0]
            cache.crop(-len(ids))  # back to the prompt alone, for the next group
            offset = 0
            for k in group:
                token = reward_token(prompt_ids + responses[k], list(range(start + len(responses[k]))), pad_id, False)
                # a response of pad tokens only is read where the prompt ends, as one-by-one scoring does
                states[k] = prompt_hidden[token] if token < start else hidden[offset + token - start]
                offset += len(responses[k])
        return self.head(torch.stack(states)).float().tolist()

    @torch.inference_mode()
    def score_sequences(self, sequences: list[list[int]]) -> list[float]:
        """Rewards of one batch of token id lists: one forward pass, right-padded."""
        input_ids, mask = pad_sequences(sequences, self.pad_token_id)
        return self.padded(input_ids.to(self.device), mask.to(self.device)).float().tolist()


