"""Encoded pairs (or groups of k responses to one prompt) → batches that carry the positions the rewards are read
from, in three layouts.

- ``padded``: one right-padded row per sequence (what TRL does); the model's own head reads the reward.
- ``packed``: sequences laid end to end in rows (first-fit decreasing), with position ids restarting at each
  sequence and a block-diagonal attention mask, so almost nothing is spent on padding.
- ``prefix_shared`` (causal LMs only): each example is one segment ``[prompt | r1 | … | rk]`` whose response tokens
  see the prompt and their own response only, with positions restarting after the prompt: the prompt is computed
  once for all k. Exact for causal attention, where no prompt token sees what follows it.

Every layout carries ``score_index``, the flat position (row × width + column) of each sequence's reward token.
Sequences are ordered response-major: the first response of every example, then the second, ...; so a batch of
pairs holds its b chosen sequences first, then the b rejected ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

from rewardlab.data.encode import EncodedGroup, EncodedPair

Example = EncodedPair | EncodedGroup


@dataclass
class PairBatch:
    """A batch of b examples (pairs, or groups of responses to one prompt), in one of the layouts above.

    Shape notation: b = examples, n = sequences (2b for pairs), e = edges (comparisons; b for pairs), r = rows,
    s = row width.

    - ``input_ids``: (r, s); padded: r = n, response-major (pairs: the b chosen sequences, then the b rejected)
    - ``attention_mask``: padded: (r, s) with 1 for real tokens; packed/prefix-shared: (r, 1, s, s) booleans, True
      where a query token (dim 2) may attend to a key token (dim 3), or None where the batch is for block attention
      only (``blocks`` says the same, without the (s, s) square)
    - ``position_ids``: (r, s) for packed/prefix-shared (restarting per sequence), None for padded
    - ``blocks``: packed/prefix-shared: (k, 5) attention blocks, (row, start, end, prompt start, prompt end): the
      queries ``start:end`` attend to the keys ``prompt start:prompt end`` and ``start:end`` (causally in causal
      LMs); a prompt and its first response form one block (see :class:`rewardlab.models.attention.AttentionBlocks`)
    - ``score_index``: (n,) flat index into the r·s tokens of each reward token
    - ``response_lengths``: (n,) tokens in each response (for the length-bias diagnostic)
    - ``edges``: (e, 2) indices into the n rewards, (better, worse); ``margin``: (e,) (0 where absent);
      ``edge_weight``: (e,) each comparison's weight in the loss
    - ``group``: (n,) the example of each sequence; ``levels``: (n,) its rank level (0 = best), −1 without a ranking
    - ``sources``, ``origins``: b strings (``origins``: each example's ``file:line``)
    - ``targets``: (n, a) attribute ratings per sequence (objective regression), else None
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    score_index: torch.Tensor
    response_lengths: torch.Tensor
    margin: torch.Tensor
    sources: list[str]
    position_ids: torch.Tensor | None = None
    blocks: torch.Tensor | None = None
    origins: list[str] = field(default_factory=list)
    edges: torch.Tensor | None = None
    edge_weight: torch.Tensor | None = None
    group: torch.Tensor | None = None
    levels: torch.Tensor | None = None
    targets: torch.Tensor | None = None

    def to(self, device) -> PairBatch:
        return PairBatch(**{f.name: _to(getattr(self, f.name), device) for f in fields(self)})

    @property
    def pairs(self) -> int:
        return self.margin.shape[0]


def sequence_order(examples: list[Example]) -> list[tuple[int, int]]:
    """(example, response) of every sequence, response-major."""
    most = max(len(e.responses) for e in examples)
    return [(g, k) for k in range(most) for g, e in enumerate(examples) if k < len(e.responses)]


def comparison_fields(examples: list[Example], order: list[tuple[int, int]]) -> dict:
    """The batch fields that say what is compared with what, for sequences in ``order``."""
    position = {key: i for i, key in enumerate(order)}
    edges, margins, weights = [], [], []
    for g, example in enumerate(examples):
        for (better, worse), margin in zip(example.edges, example.margins):
            edges.append((position[g, better], position[g, worse]))
            margins.append(margin)
            weights.append(example.edge_weight)
    return dict(
        response_lengths=torch.tensor([len(examples[g].responses[k]) for g, k in order], dtype=torch.long),
        edges=torch.tensor(edges, dtype=torch.long).reshape(-1, 2),
        margin=torch.tensor(margins, dtype=torch.float),
        edge_weight=torch.tensor(weights, dtype=torch.float),
        group=torch.tensor([g for g, _ in order], dtype=torch.long),
        levels=torch.tensor([examples[g].levels[k] if examples[g].levels is not None else -1 for g, k in order],
                            dtype=torch.long),
        sources=[e.source for e in examples],
        origins=[e.origin for e in examples],
        targets=torch.tensor([examples[g].targets[k] for g, k in order], dtype=torch.float)
        if examples[0].targets is not None else None,
    )


def _to(value, device):
    return value.to(device) if isinstance(value, torch.Tensor) else value


def score_positions(input_ids: torch.Tensor, pad_token_id: int | None, encoder: bool) -> torch.Tensor:
    """Where each row's reward is read: the first token for encoders (their ``[CLS]``), else the rightmost token
    that is not the pad token — the rule transformers' sequence-classification heads use, so an EOS that doubles as
    the pad token is skipped the same way in training, evaluation, scoring and plain transformers."""
    if encoder:
        return torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
    if pad_token_id is None:
        return torch.full((input_ids.shape[0],), input_ids.shape[1] - 1, dtype=torch.long, device=input_ids.device)
    not_pad = (input_ids != pad_token_id).long()
    return (torch.arange(input_ids.shape[1], device=input_ids.device) * not_pad).argmax(-1)


def pad_sequences(sequences: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest; returns (input_ids, attention_mask)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, : len(seq)] = 1
    return ids, mask


class PadCollator:
    """Collate examples into a padded :class:`PairBatch`: one row per sequence, response-major."""

    def __init__(self, pad_token_id: int, encoder: bool):
        self.pad_token_id, self.encoder = pad_token_id, encoder

    def __call__(self, examples: list[Example]) -> PairBatch:
        order = sequence_order(examples)
        sequences = [examples[g].prompt_ids + examples[g].responses[k] for g, k in order]
        input_ids, attention_mask = pad_sequences(sequences, self.pad_token_id)
        positions = score_positions(input_ids, self.pad_token_id, self.encoder)
        return PairBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            score_index=torch.arange(len(positions)) * input_ids.shape[1] + positions,
            **comparison_fields(examples, order),
        )


def reward_token(ids: list[int], offsets: list[int], pad_token_id: int | None, encoder: bool) -> int:
    """Of a sequence's tokens ``ids`` (at row offsets ``offsets``), the offset of its reward token: the first for
    encoders, else the rightmost that is not the pad token (the rule of :func:`score_positions`)."""
    if encoder:
        return offsets[0]
    for token, offset in zip(reversed(ids), reversed(offsets)):
        if token != pad_token_id:
            return offset
    return offsets[-1]


@dataclass
class Unit:
    """A run of tokens that share attention: a prompt (part 0) and responses (parts 1, 2, …), each response
    positioned right after the prompt. A token sees the tokens of its unit in the prompt or in its own part."""

    ids: list[int]
    parts: list[int]
    positions: list[int]


def shared_prompt_unit(prompt_ids: list[int], responses: list[list[int]]) -> Unit:
    """``[prompt | response 1 | response 2 | …]``: every response sees the prompt and itself, not the others."""
    ids, parts = list(prompt_ids), [0] * len(prompt_ids)
    positions = list(range(len(prompt_ids)))
    for k, response in enumerate(responses, 1):
        ids += response
        parts += [k] * len(response)
        positions += range(len(prompt_ids), len(prompt_ids) + len(response))
    return Unit(ids, parts, positions)


@dataclass
class Packed:
    """Units laid into rows: ``input_ids`` and ``position_ids`` (r, s), ``attention_mask`` (r, 1, s, s) booleans
    (None when not asked for), ``blocks`` (k, 5) the same as attention blocks (see :class:`PairBatch`), and
    ``reward_index[(unit, part)]``, the flat index of the reward token of each response part."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    blocks: torch.Tensor
    reward_index: dict[tuple[int, int], int]


def first_fit_decreasing(lengths: list[int], width: int) -> list[list[int]]:
    """Indices of ``lengths`` laid into rows of ``width``: longest first, each into the first row with room."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((k for k, free in enumerate(room) if free >= lengths[i]), None)
        if row is None:
            rows.append([])
            room.append(width)
            row = len(rows) - 1
        rows[row].append(i)
        room[row] -= lengths[i]
    return rows


def row_width(lengths: list[int], attention_cost: float) -> int:
    """The row width that makes a batch cheapest to compute. Every slot of a row costs one token through the
    weights (padding included), plus ``attention_cost`` for each slot it attends over (the fused kernels compute
    the whole masked square): cost = rows × width × (1 + attention_cost × width). Narrow rows waste slots on
    padding, wide ones attend over more; candidates run from the longest unit to one row holding everything."""
    longest, total = max(lengths), sum(lengths)
    candidates = {total} | {min(total, longest + k * longest // 8) for k in range(4 * 8)}
    return min(sorted(candidates),
               key=lambda w: len(first_fit_decreasing(lengths, w)) * w * (1 + attention_cost * w))


def unit_blocks(unit: Unit, row: int, start: int) -> list[tuple[int, int, int, int, int]]:
    """The attention blocks of a unit laid at ``start`` of ``row``: the prompt and the first part together (a
    causal run: no prompt token sees past itself), then each later part with the prompt as its prompt keys."""
    prompt = start + unit.parts.count(0)
    ends = {p: start + k + 1 for k, p in enumerate(unit.parts)}
    begins = {p: start + len(unit.parts) - 1 - k for k, p in enumerate(reversed(unit.parts))}
    parts = sorted(p for p in ends if p > 0)
    blocks = [(row, start, ends[parts[0]] if parts else prompt, start, start)]
    blocks += [(row, begins[p], ends[p], start, prompt) for p in parts[1:]]
    return blocks


def pack(units: list[Unit], pad_token_id: int, encoder: bool, width: int | None = None,
         attention_cost: float | None = None, dense_mask: bool = True) -> Packed:
    """Lay units first-fit decreasing into rows of ``width`` tokens; by default the cheapest width for
    ``attention_cost`` (see :func:`row_width`), or the longest unit when that is not given. ``dense_mask`` False
    leaves out the (r, 1, s, s) attention mask (block attention reads ``blocks``)."""
    lengths = [len(u.ids) for u in units]
    if width is None:
        width = max(lengths) if attention_cost is None else row_width(lengths, attention_cost)
    rows = first_fit_decreasing(lengths, width)

    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    unit_of = torch.full((len(rows), width), -1, dtype=torch.long)  # -1: padding
    part_of = torch.zeros((len(rows), width), dtype=torch.long)
    reward_index, blocks = {}, []
    for r, members in enumerate(rows):
        start = 0
        for u in members:
            unit = units[u]
            end = start + len(unit.ids)
            input_ids[r, start:end] = torch.tensor(unit.ids)
            position_ids[r, start:end] = torch.tensor(unit.positions)
            unit_of[r, start:end] = u
            part_of[r, start:end] = torch.tensor(unit.parts)
            for part in {p for p in unit.parts if p > 0}:
                seen = [k for k, p in enumerate(unit.parts) if p in (0, part)]
                token = reward_token([unit.ids[k] for k in seen], [start + k for k in seen], pad_token_id, encoder)
                reward_index[u, part] = r * width + token
            blocks += unit_blocks(unit, r, start)
            start = end
    mask = attention_mask(unit_of, part_of, encoder) if dense_mask else None
    return Packed(input_ids, position_ids, mask, torch.tensor(blocks, dtype=torch.long).reshape(-1, 5), reward_index)


def attention_mask(unit_of: torch.Tensor, part_of: torch.Tensor, encoder: bool) -> torch.Tensor:
    """(r, 1, s, s) booleans: same unit, key in the prompt or the query's own part, and (causal) not later."""
    q_unit, k_unit = unit_of[:, :, None], unit_of[:, None, :]
    q_part, k_part = part_of[:, :, None], part_of[:, None, :]
    allowed = (q_unit == k_unit) & (q_unit >= 0) & ((k_part == 0) | (k_part == q_part))
    if not encoder:
        column = torch.arange(unit_of.shape[1])
        allowed &= column[None, None, :] <= column[None, :, None]
    # Padding attends to itself only, so no row of the attention is empty.
    allowed |= torch.eye(unit_of.shape[1], dtype=torch.bool)[None] & (q_unit < 0)
    return allowed[:, None]


class PackedCollator:
    """Collate examples into ``packed`` rows, or ``prefix_shared`` ones when ``share_prompt`` (causal LMs only).
    ``attention_cost`` (see :func:`row_width`) picks the row width; None keeps rows as wide as the longest unit.
    ``dense_mask`` False: batches for block attention, without the (r, 1, s, s) mask."""

    def __init__(self, pad_token_id: int, encoder: bool, share_prompt: bool, attention_cost: float | None = None,
                 dense_mask: bool = True):
        if share_prompt and encoder:
            raise ValueError("prefix sharing needs causal attention: an encoder's prompt tokens would see the response")
        self.pad_token_id, self.encoder, self.share_prompt = pad_token_id, encoder, share_prompt
        self.attention_cost, self.dense_mask = attention_cost, dense_mask

    def __call__(self, examples: list[Example]) -> PairBatch:
        order = sequence_order(examples)
        if self.share_prompt:
            units = [shared_prompt_unit(e.prompt_ids, e.responses) for e in examples]
            keys = [(g, k + 1) for g, k in order]
        else:  # one unit per sequence; its single part sees all of it
            units = [shared_prompt_unit([], [examples[g].prompt_ids + examples[g].responses[k]]) for g, k in order]
            keys = [(u, 1) for u in range(len(units))]
        packed = pack(units, self.pad_token_id, self.encoder, attention_cost=self.attention_cost,
                      dense_mask=self.dense_mask)
        return PairBatch(
            input_ids=packed.input_ids,
            attention_mask=packed.attention_mask,
            score_index=torch.tensor([packed.reward_index[k] for k in keys], dtype=torch.long),
            position_ids=packed.position_ids,
            blocks=packed.blocks,
            **comparison_fields(examples, order),
        )
