"""The one loss core every contrastive objective shares: a logits matrix and the column each row should pick,
and the gather that lets InfoNCE objectives use every process's examples as negatives.

Shape notation: n = rows (comparisons), k = candidates per row.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def contrastive_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor | None = None, label_smoothing: float = 0.0,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax cross-entropy of ``logits`` (n, k) against target columns ``targets`` (n,), default all 0: the mean
    over rows, or the ``weights`` (n,)-weighted mean. Columns at −inf are not candidates.

    ``label_smoothing`` follows PyTorch: the target distribution is ``(1 − ε)·onehot + ε/k``.
    """
    if targets is None:
        targets = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    if weights is None:
        return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)
    losses = F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing, reduction="none")
    return (losses * weights).sum() / weights.sum()


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (b, ...) from every process in rank order → (world · b, ...); gradients flow back to each
    process's own rows. Identity with one process (or none initialised). Every process must pass the same shape.

    The backward pass sums, over processes, the gradient each one computed for the gathered tensor, and keeps the
    local slice: so when every process's loss is the mean over its local rows and the optimizer averages gradients
    over processes (DDP), the gradient is exactly the one of the whole global batch on one process.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


class _GatherWithGrad(torch.autograd.Function):
    # torch.distributed.nn.functional.all_gather does the same but is deprecated, and its successor is private;
    # an all-reduce in the backward pass works on every backend (gloo has no reduce-scatter).
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.rows, ctx.rank = x.shape[0], dist.get_rank()
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]
