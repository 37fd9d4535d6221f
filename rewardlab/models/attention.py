"""Attention only where a packed row's mask allows it.

A packed or prefix-shared row is a few blocks of queries, each attending to a few runs of keys: a packed sequence
to itself; in ``[prompt | r1 | … | rk]`` the prompt and ``r1`` to themselves (one causal run), and each later
response to the prompt and itself. The dense path hands the model's SDPA attention the whole (s, s) mask, and
PyTorch's CPU kernel computes every masked score of the square. Here the model's attention is replaced, through
transformers' :class:`~transformers.AttentionInterface`, by one that computes each block on its own:

- on CPU, one SDPA call per block over its own keys (``is_causal`` where the keys are the block itself, a
  lower-right causal mask where a response also sees its prompt), nothing for the padding;
- on CUDA, FlexAttention with a block mask built once per forward pass, so masked tiles are skipped by the kernel.

The blocks reach the attention function as a keyword argument (:data:`BLOCKS_KWARG`) that transformers' decoders
and encoders pass from ``base_model(...)`` down to every attention call (Llama, Qwen2, Mistral, Phi-3, GPT-2,
GPT-NeoX, BERT, RoBERTa, ELECTRA, DistilBERT in transformers 5.x), so gradient checkpointing's recomputation sees
them too. Without that argument (padded batches, best-of-n's KV cache) the function is transformers' own SDPA.
Whether a model computes its packed layouts exactly this way is probed once
(:func:`rewardlab.models.layouts.probe_attention`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

IMPLEMENTATION = "rewardlab_blocks"
BLOCKS_KWARG = "rewardlab_blocks"


class AttentionBlocks:
    """The attention blocks of a batch of packed rows, planned once per forward pass for every layer.

    Args:
        blocks: (row, start, end, prompt start, prompt end) per block: the queries ``start:end`` of ``row`` attend to
            the keys ``prompt start:prompt end`` and ``start:end`` (causally when ``causal``); blocks are disjoint
            and tokens in no block (padding) get a zero output, which no real token reads.
        rows, width: the batch's shape (r, s).
        causal: causal LMs; False for bidirectional encoders.

    ``calls`` counts the attention calls that used the blocks (the probe checks that every layer did).
    """

    def __init__(self, blocks: list[list[int]], rows: int, width: int, causal: bool):
        self.blocks, self.rows, self.width, self.causal = blocks, rows, width, causal
        self.calls = 0
        self._plans = None
        self._block_mask = None

    @classmethod
    def of(cls, blocks: torch.Tensor, input_ids: torch.Tensor, causal: bool) -> AttentionBlocks:
        return cls(blocks.tolist(), input_ids.shape[0], input_ids.shape[1], causal)

    def plans(self) -> list[tuple[list[int], list]]:
        """Per row: the lengths of its runs (the row cut at every block's boundaries), and in row order either
        ``(None, run)`` for a run in no block or ``(query runs, key runs, prompt length)`` for a block."""
        if self._plans is None:
            self._plans = [self._plan([b[1:] for b in self.blocks if b[0] == row]) for row in range(self.rows)]
        return self._plans

    def _plan(self, blocks: list[list[int]]):
        cuts = sorted({0, self.width} | {c for b in blocks for c in b})
        index = {c: i for i, c in enumerate(cuts)}
        runs = lambda a, b: list(range(index[a], index[b]))  # noqa: E731
        items, covered = [], set()
        for start, end, prompt_start, prompt_end in sorted(blocks):
            if start == end:
                continue
            queries = runs(start, end)
            items.append((queries, runs(prompt_start, prompt_end) + queries, prompt_end - prompt_start))
            covered.update(queries)
        items += [(None, i) for i in range(len(cuts) - 1) if i not in covered]
        items.sort(key=lambda item: item[0][0] if item[0] is not None else item[1])
        return [b - a for a, b in zip(cuts, cuts[1:])], items

    def block_mask(self, device: torch.device):
        """FlexAttention's block mask of the blocks (built once, on ``device``)."""
        if self._block_mask is None:
            from torch.nn.attention.flex_attention import create_block_mask

            position = torch.arange(self.width)
            low, high = position.repeat(self.rows, 1), (position + 1).repeat(self.rows, 1)  # padding: itself
            prompt_low, prompt_high = torch.zeros_like(low), torch.zeros_like(low)
            for row, start, end, p0, p1 in self.blocks:
                low[row, start:end], high[row, start:end] = start, end
                prompt_low[row, start:end], prompt_high[row, start:end] = p0, p1
            low, high, prompt_low, prompt_high = (t.to(device) for t in (low, high, prompt_low, prompt_high))
            causal = self.causal

            def allowed(b, h, q, kv):
                own = (kv >= low[b, q]) & (kv < high[b, q])
                seen = own | ((kv >= prompt_low[b, q]) & (kv < prompt_high[b, q]))
                return seen & (kv <= q) if causal else seen

            self._block_mask = create_block_mask(allowed, B=self.rows, H=None, Q_LEN=self.width, KV_LEN=self.width,
                                                 device=device)
        return self._block_mask


def _lower_right_causal(queries: int, prompt: int, device) -> torch.Tensor:
    """(queries, prompt + queries) booleans: every query sees the prompt, and its own block up to itself."""
    return torch.ones(queries, prompt + queries, dtype=torch.bool, device=device).tril(prompt)


def sdpa_blocks(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, blocks: AttentionBlocks,
                scaling: float | None, dropout: float = 0.0) -> torch.Tensor:
    """Attention of (r, h, s, d) queries over (r, h_kv, s, d) keys and values, block by block → (r, h, s, d).

    Rows are cut with ``unbind`` and ``split`` (whose backward passes stack and concatenate), not indexed: the
    backward of every slice would write a zero tensor of the whole input."""
    gqa = query.shape[1] != key.shape[1]
    rows = []
    for (sizes, items), q_row, k_row, v_row in zip(blocks.plans(), query.unbind(0), key.unbind(0), value.unbind(0)):
        qs, ks, vs = q_row.split(sizes, dim=1), k_row.split(sizes, dim=1), v_row.split(sizes, dim=1)
        pieces = []
        for item in items:
            if item[0] is None:
                pieces.append(q_row.new_zeros(q_row.shape[0], sizes[item[1]], q_row.shape[2]))
                continue
            query_runs, key_runs, prompt = item
            q = _joined(qs, query_runs)
            mask = _lower_right_causal(q.shape[1], prompt, q.device) if blocks.causal and prompt else None
            pieces.append(F.scaled_dot_product_attention(
                q[None], _joined(ks, key_runs)[None], _joined(vs, key_runs)[None], attn_mask=mask, dropout_p=dropout,
                is_causal=blocks.causal and not prompt, scale=scaling, enable_gqa=gqa)[0])
        rows.append(torch.cat(pieces, dim=1) if len(pieces) > 1 else pieces[0])
    return torch.stack(rows)


def _joined(runs: tuple[torch.Tensor, ...], which: list[int]) -> torch.Tensor:
    return runs[which[0]] if len(which) == 1 else torch.cat([runs[i] for i in which], dim=1)


_compiled_flex = None


def flex_blocks(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, blocks: AttentionBlocks,
                scaling: float | None, compiled: bool = True) -> torch.Tensor:
    """The same attention through FlexAttention and the blocks' block mask (compiled: the fused kernel, for CUDA;
    uncompiled it runs PyTorch's reference implementation, forward only on CPU)."""
    global _compiled_flex
    from torch.nn.attention.flex_attention import flex_attention

    if compiled and _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention)
    attend = _compiled_flex if compiled else flex_attention
    return attend(query, key, value, block_mask=blocks.block_mask(query.device), scale=scaling,
                  enable_gqa=query.shape[1] != key.shape[1])


def block_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                    **kwargs) -> tuple[torch.Tensor, None]:
    """A transformers attention function (``AttentionInterface``): block attention when the forward pass carries
    :data:`BLOCKS_KWARG`, else transformers' SDPA attention. Returns ((r, s, h, d), None)."""
    blocks: AttentionBlocks | None = kwargs.pop(BLOCKS_KWARG, None)
    if blocks is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    for name in ("sliding_window", "softcap"):  # the blocks carry neither a window nor a logit cap
        if kwargs.get(name) is not None:
            raise NotImplementedError(f"block attention has no {name} ({type(module).__name__} uses one)")
    blocks.calls += 1
    if query.device.type == "cuda" and dropout == 0.0:
        out = flex_blocks(query, key, value, blocks, scaling)
    else:
        out = sdpa_blocks(query, key, value, blocks, scaling, dropout)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(IMPLEMENTATION, block_attention)
AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)  # padded batches build the masks SDPA gets
