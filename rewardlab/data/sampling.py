"""Length grouping: batches of pairs of similar length, in a random order of batches."""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


class LengthGroupedSampler(Sampler[int]):
    """Yields indices so that every ``batch_size`` consecutive ones have similar lengths.

    Each epoch a seeded permutation is cut into chunks of ``batch_size × chunk_batches`` examples; each chunk is
    sorted by length and cut into batches; the batches are shuffled. The randomness of a plain shuffle stays (a
    batch's members are random within a chunk), while padding shrinks. Set ``batch_size`` to the global batch
    (pairs per optimizer step), so the micro-batches of one step, on every process, come from one length group.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int = 0, chunk_batches: int = 50):
        self.lengths, self.batch_size, self.seed, self.chunk_batches = lengths, batch_size, seed, chunk_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        chunk = self.batch_size * self.chunk_batches
        batches = []
        for start in range(0, len(order), chunk):
            group = sorted(order[start : start + chunk], key=lambda i: -self.lengths[i])
            batches += [group[k : k + self.batch_size] for k in range(0, len(group), self.batch_size)]
        for b in torch.randperm(len(batches), generator=generator).tolist():
            yield from batches[b]
