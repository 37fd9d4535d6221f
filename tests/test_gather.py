"""Cross-process negatives: on 2 CPU processes (gloo, DDP), SimCSE's loss and gradients equal those of the whole
batch on one process."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import join_gloo_group
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from rewardlab.objectives import SimCSELoss
from rewardlab.objectives.core import gather_with_grad

WORLD, ROWS, FEATURES, DIM, TEMPERATURE = 2, 6, 8, 4, 0.5


def batch_and_encoder():
    """(3, ROWS, FEATURES) anchors, positives and hard negatives before encoding, and a linear encoder."""
    torch.manual_seed(0)
    return torch.randn(3, ROWS, FEATURES), nn.Linear(FEATURES, DIM)


def simcse_loss(encoder: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """One forward pass over all three columns (as training does), then the loss over anchors, positives, negatives."""
    return SimCSELoss(TEMPERATURE)(*encoder(inputs.reshape(-1, FEATURES)).chunk(3))


def worker(rank: int, out_dir: str) -> None:
    join_gloo_group(rank, WORLD, out_dir)
    try:
        inputs, encoder = batch_and_encoder()
        model = DistributedDataParallel(encoder)  # averages gradients over the processes, as Accelerate's DDP does
        local = ROWS // WORLD
        loss = simcse_loss(model, inputs[:, rank * local : (rank + 1) * local])
        loss.backward()
        torch.save({"loss": loss.detach(), "grads": [p.grad for p in encoder.parameters()]},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_give_the_loss_and_gradients_of_the_whole_batch(tmp_path):
    """Each process: its 3 anchors against the 6 gathered positives + 6 gathered hard negatives, targets offset by
    rank × 3, loss = mean over its rows. Whole batch: 6 anchors against 12 candidates. The mean of the two processes'
    losses is the whole-batch loss, and the DDP-averaged gradients are the whole-batch gradients."""
    mp.spawn(worker, args=(str(tmp_path),), nprocs=WORLD)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    inputs, encoder = batch_and_encoder()
    loss = simcse_loss(encoder, inputs)
    loss.backward()

    assert torch.stack([r["loss"] for r in ranks]).mean().item() == pytest.approx(loss.item(), abs=1e-6)
    assert ranks[0]["loss"].item() != pytest.approx(ranks[1]["loss"].item())  # the processes did see different rows
    for r in ranks:
        for got, expected in zip(r["grads"], (p.grad for p in encoder.parameters())):
            torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


def test_gather_is_the_identity_on_one_process():
    x = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(x) is x


def shared_gradient_worker(rank: int, out_dir: str) -> None:
    """``c`` (a non-leaf, made first) and the gathered tensor are summed: autograd hands the sum's one incoming
    gradient tensor to both, and runs the gather's backward first (it was made later)."""
    join_gloo_group(rank, WORLD, out_dir)
    try:
        c_leaf = torch.zeros(4, 2, requires_grad=True)
        c = c_leaf * 1.0
        x = torch.zeros(2, 2, requires_grad=True)
        weights = torch.full((4, 2), float(rank + 1))  # rank 0: 1, rank 1: 2
        ((gather_with_grad(x) + c) * weights).sum().backward()
        torch.save({"c": c_leaf.grad, "x": x.grad}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.distributed
def test_the_gathers_backward_leaves_the_incoming_gradient_to_its_other_consumers(tmp_path):
    """d/dc of Σ (gather(x) + c) · w is w (1 on rank 0, 2 on rank 1), whatever the gather does with its copy; the
    local rows of x get the sum over processes, 1 + 2 = 3. Reducing autograd's tensor in place would give c 3 too."""
    mp.spawn(shared_gradient_worker, args=(str(tmp_path),), nprocs=WORLD)
    for rank in range(WORLD):
        grads = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.equal(grads["c"], torch.full((4, 2), float(rank + 1))), rank
        assert torch.equal(grads["x"], torch.full((2, 2), 3.0)), rank
