"""Cached-gradient batches (GradCache): the gradients of an in-batch contrastive loss over a large batch, in the
memory of one small chunk.

Reference: L. Gao, Y. Zhang, J. Han and J. Callan, "Scaling Deep Contrastive Learning Batch Size under Memory Limited
Setup", RepL4NLP 2021 (arXiv 2101.06983); sentence-transformers' ``CachedMultipleNegativesRankingLoss``.

Every example of a contrastive batch is every other one's negative, so the batch cannot be cut into micro-batches
whose gradients add up. But the loss reaches the model only through the embeddings, so by the chain rule
``∂L/∂θ = Σ_chunks (∂L/∂e_chunk) · ∂e_chunk/∂θ``:

1. embed every chunk without a graph, remembering the random state it started from;
2. compute the loss on the (detached) embeddings of the whole batch and its gradient with respect to them — a
   graph of the n × n logits only, not of the model;
3. embed each chunk again, with a graph, from its remembered random state (the same dropout masks: in unsupervised
   SimCSE those masks *are* the augmentation), and back-propagate ``⟨∂L/∂e_chunk, e_chunk⟩``.

The parameter gradients are those of the loss computed from the same chunk passes in one graph (to float summation
order); memory holds one chunk's activations, at the cost of one more forward pass per chunk.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.checkpoint import get_device_states, set_device_states

# A chunk's model outputs: the loss's keyword arguments. Tensors with a first (row) dimension are per example and are
# concatenated over the chunks; 0-dimensional ones (a learned logit scale or bias) are the same in every chunk.
Outputs = dict[str, torch.Tensor]


class RandomState:
    """The CPU generator's state and that of ``device`` (CUDA and other accelerators), to replay a forward pass's
    dropout exactly (the states torch's activation checkpointing saves)."""

    def __init__(self, device: torch.device):
        self.cpu = torch.get_rng_state()
        self.device_type = torch.device(device).type
        self.devices, self.device_states = get_device_states(torch.empty(0, device=device))

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        set_device_states(self.devices, self.device_states, device_type=self.device_type)


def length_sorted_chunks(lengths: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Example indices sorted by length and cut into chunks of ``size``: chunks of similar lengths carry little
    padding. The contrastive losses do not depend on the order of the examples (every column of the batch is permuted
    alike), so the chunks are embedded in this order and never put back."""
    return list(torch.argsort(lengths.cpu(), stable=True).split(size))


def without_trailing_padding(input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """(rows, s) token ids and mask cut after the last column that holds a real token of some row: the padding only
    longer rows of the batch needed. No real token moves, so this is exact whichever side the tokenizer pads."""
    width = int(attention_mask.any(0).nonzero().max()) + 1
    return input_ids[:, :width], attention_mask[:, :width]


def cached_backward(
    accelerator: Accelerator, model: nn.Module, chunks: Sequence[Any], embed: Callable[[Any], Outputs],
    loss_fn: Callable[..., torch.Tensor],
) -> tuple[torch.Tensor, Outputs]:
    """Accumulate into the parameters' ``.grad`` the gradients of ``loss_fn(**outputs of the whole batch)``, where
    ``embed(chunk)`` runs ``model`` on one chunk. Returns the loss and the batch's outputs, both detached.

    ``loss_fn`` must reach parameters only through the outputs (open_clip's convention: the model returns the loss's
    arguments, learned scales included). Each chunk's backward goes through ``accelerator.backward`` (gradient
    accumulation and loss scaling as for any loss); under data parallelism every chunk but the last runs in
    ``accelerator.no_sync``, so gradients are reduced once, and the gradient of the 0-dimensional outputs enters with
    the last chunk, so that every parameter takes part in that one synchronised backward pass. Buffers (batch-norm
    statistics) are updated once per chunk, by the pass with gradients.
    """
    buffers = list(model.buffers())
    saved_buffers = [b.clone() for b in buffers]
    states, cached = [], []
    with torch.no_grad():
        for chunk in chunks:
            states.append(RandomState(accelerator.device))
            cached.append(embed(chunk))
        for buffer, saved in zip(buffers, saved_buffers):
            buffer.copy_(saved)

    rows = [k for k, v in cached[0].items() if v.dim() > 0]
    leaves = {k: torch.cat([c[k] for c in cached]) if k in rows else cached[0][k] for k in cached[0]}
    leaves = {k: v.detach().requires_grad_() for k, v in leaves.items()}
    loss = loss_fn(**leaves)
    names = list(leaves)
    grads = dict(zip(names, torch.autograd.grad(loss, [leaves[k] for k in names], allow_unused=True)))
    grads = {k: g for k, g in grads.items() if g is not None}
    splits = {k: grads[k].split([c[k].shape[0] for c in cached]) for k in rows if k in grads}

    for i, (chunk, state) in enumerate(zip(chunks, states)):
        last = i == len(chunks) - 1
        sync = last or not accelerator.sync_gradients  # outside a synchronising step, accumulate() already holds it
        state.restore()
        with contextlib.nullcontext() if sync else accelerator.no_sync(model):
            outputs = embed(chunk)
            surrogate = sum((outputs[k].float() * splits[k][i].float()).sum() for k in splits)
            if last:
                surrogate = surrogate + sum((outputs[k].float() * grads[k].float()).sum()
                                            for k in grads if k not in rows)
            accelerator.backward(surrogate)
    return loss.detach(), {k: v.detach() for k, v in leaves.items()}
