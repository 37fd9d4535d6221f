"""Computing over data split across processes, every process getting every result (evaluation under DDP, FSDP
and ZeRO-3)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from accelerate import Accelerator
from accelerate.data_loader import prepare_data_loader
from torch.utils.data import DataLoader


def map_across_processes(accelerator: Accelerator, data: Sequence, batch_size: int, compute: Callable[[list], list],
                         length: Callable | None = None) -> list:
    """``compute`` (a list of examples → a list with one result per example) over ``data``, split across processes;
    every process gets all the results, in ``data``'s order.

    Every process runs the same number of equal batches: Accelerate pads the last ones with repeated examples, which
    ``gather_for_metrics`` drops again. So a forward pass that is itself a collective (FSDP and ZeRO-3 gather their
    weights, DDP broadcasts buffers) never waits on a process that has run out of data. With ``length``, batches are
    formed in order of it, so they pad little.
    """
    order = sorted(range(len(data)), key=lambda i: length(data[i])) if length else list(range(len(data)))
    # Its own generator: building the iterator must not draw from the RNG that dropout in training uses.
    loader = prepare_data_loader(DataLoader([data[i] for i in order], batch_size=batch_size, collate_fn=list,
                                            generator=torch.Generator()),
                                 num_processes=accelerator.num_processes, process_index=accelerator.process_index)
    results = [r for batch in loader for r in accelerator.gather_for_metrics(compute(batch), use_gather_object=True)]
    in_order = [None] * len(data)
    for i, result in zip(order, results, strict=True):
        in_order[i] = result
    return in_order
