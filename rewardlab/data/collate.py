"""Encoded pairs → padded batches that carry the positions the reward is read from."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from rewardlab.data.encode import EncodedPair


@dataclass
class PairBatch:
    """A batch of b pairs as 2b right-padded sequences: the b chosen ones first, then the b rejected ones.

    Shape notation: b = pairs, s = longest sequence in the batch.

    - ``input_ids``, ``attention_mask``: (2b, s)
    - ``score_positions``: (2b,) index of the token each reward is read from
    - ``response_lengths``: (2b,) tokens in each response (for the length-bias diagnostic)
    - ``margin``: (b,) the rows' margins (0 where absent)
    - ``sources``: b strings
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    score_positions: torch.Tensor
    response_lengths: torch.Tensor
    margin: torch.Tensor
    sources: list[str]

    def to(self, device) -> "PairBatch":
        return PairBatch(**{f.name: _to(getattr(self, f.name), device) for f in fields(self)})

    @property
    def pairs(self) -> int:
        return self.margin.shape[0]


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
    """Collate :class:`EncodedPair` lists into a :class:`PairBatch` (chosen rows, then rejected rows)."""

    def __init__(self, pad_token_id: int, encoder: bool):
        self.pad_token_id, self.encoder = pad_token_id, encoder

    def __call__(self, pairs: list[EncodedPair]) -> PairBatch:
        responses = [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs]
        prompts = [p.prompt_ids for p in pairs] * 2
        input_ids, attention_mask = pad_sequences([a + b for a, b in zip(prompts, responses)], self.pad_token_id)
        return PairBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            score_positions=score_positions(input_ids, self.pad_token_id, self.encoder),
            response_lengths=torch.tensor([len(r) for r in responses], dtype=torch.long),
            margin=torch.tensor([p.margin for p in pairs], dtype=torch.float),
            sources=[p.source for p in pairs],
        )
