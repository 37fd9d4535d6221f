"""What the training loop needs from a learner (:class:`Task`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import torch
from accelerate import Accelerator


class Task(Protocol):
    """A learner: data, model, loss, evaluation and saving for one kind of model, behind the small interface that
    the one training loop (:mod:`rewardlab.training.loop`) drives."""

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
