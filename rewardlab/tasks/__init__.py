"""Learners: each module assembles data, model, objective, evaluation and saving for one kind of model, behind the
small :class:`Task` interface that the one training loop (:mod:`rewardlab.train`) drives."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import torch
from accelerate import Accelerator
from accelerate.data_loader import prepare_data_loader
from torch.utils.data import DataLoader


class Task(Protocol):
    """What the training loop needs from a learner."""

    model: torch.nn.Module  # what the optimizer trains
    train_data: Sequence
    eval_data: Sequence
    collate: Callable  # list of examples → batch (an object with `.to(device)`)
    # Optional attribute `sampler`: a torch Sampler with `set_epoch` for the training order; without it, a seeded
    # shuffle.
    main_metric: str  # the metric the progress line and comparisons report

    def loss(self, model: torch.nn.Module, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The batch's loss and per-step statistics (e.g. ``accuracy``), each a scalar tensor."""

    # Optional methods:
    # - `backward(accelerator, model, batch) -> (loss, stats)`: compute the batch's gradients itself (several backward
    #   passes, e.g. cached-gradient batches) instead of the loop's `accelerator.backward(task.loss(model, batch)[0])`.
    # - `after_optimizer_step(model)`: called with the unwrapped model after each optimizer step (e.g. to clamp a
    #   parameter, as CLIP's logit scale).

    def evaluate(self, accelerator: Accelerator, model: torch.nn.Module, data: Sequence) -> dict:
        """Metrics on ``data``, computed split across processes; every process gets them all."""

    def format(self, name: str, metrics: dict) -> str:
        """A small text table of ``metrics``."""

    def save(self, model: torch.nn.Module, output_dir: Path, info: dict) -> None:
        """Write the trained model (unwrapped) to ``output_dir`` (main process only)."""


def build_task(recipe, log: Callable[[str], None]) -> Task:
    """The learner that ``recipe.objective`` names."""
    if recipe.objective == "simcse":
        from rewardlab.tasks.simcse import SimCSETask

        return SimCSETask(recipe, log)
    if recipe.objective in ("clip", "siglip"):
        from rewardlab.tasks.clip import ClipTask

        return ClipTask(recipe, log)
    from rewardlab.tasks.reward import RewardTask

    return RewardTask(recipe, log)


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
