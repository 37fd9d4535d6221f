import math

import pytest
import torch

from rewardlab.objectives import BradleyTerryLoss
from rewardlab.objectives.core import contrastive_cross_entropy


def log_sigmoid(x):
    return -math.log1p(math.exp(-x))


def test_bradley_terry_matches_hand_computed_values():
    """rewards (2, 0) and (0.5, 1.5): d = 2 and −1; loss = mean(−log σ(2), −log σ(−1)) = mean(0.126928, 1.313262)."""
    loss = BradleyTerryLoss()(torch.tensor([2.0, 0.5]), torch.tensor([0.0, 1.5]))
    assert loss.item() == pytest.approx((0.126928 + 1.313262) / 2, abs=1e-6)


def test_margin_is_subtracted_inside_the_sigmoid():
    """r_c − r_r − m = 1 − 0 − 0.5: loss = −log σ(0.5) = 0.474077."""
    loss = BradleyTerryLoss()(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([0.5]))
    assert loss.item() == pytest.approx(0.474077, abs=1e-6)


def test_label_smoothing_puts_epsilon_on_the_flipped_label():
    """ε = 0.1, d = 1: 0.9·(−log σ(1)) + 0.1·(−log σ(−1)) = 0.9·0.313262 + 0.1·1.313262 = 0.413262."""
    loss = BradleyTerryLoss(label_smoothing=0.1)(torch.tensor([1.0]), torch.tensor([0.0]))
    assert loss.item() == pytest.approx(0.413262, abs=1e-6)


def test_centering_penalises_the_pair_sum_not_the_margin():
    """Eisenstein et al. 2023 / TRL's center_rewards_coefficient: c · mean((r_c + r_r)²). Rewards (1, −3): −log σ(4)
    = 0.018149; (1 − 3)² = 4; 0.01 · 4 = 0.04. A pair centred on zero (2, −2) pays nothing for its margin of 4."""
    loss = BradleyTerryLoss(center_coefficient=0.01)(torch.tensor([1.0]), torch.tensor([-3.0]))
    assert loss.item() == pytest.approx(0.018149 + 0.04, abs=1e-6)
    centred = BradleyTerryLoss(center_coefficient=0.01)(torch.tensor([2.0]), torch.tensor([-2.0]))
    assert centred.item() == pytest.approx(BradleyTerryLoss()(torch.tensor([2.0]), torch.tensor([-2.0])).item())


def test_bradley_terry_is_two_way_cross_entropy():
    torch.manual_seed(0)
    chosen, rejected = torch.randn(16), torch.randn(16)
    direct = -torch.nn.functional.logsigmoid(chosen - rejected).mean()
    via_core = contrastive_cross_entropy(torch.stack([chosen, rejected], dim=1))
    assert BradleyTerryLoss()(chosen, rejected).item() == pytest.approx(direct.item(), abs=1e-6)
    assert via_core.item() == pytest.approx(direct.item(), abs=1e-6)
    assert log_sigmoid(1.0) == pytest.approx(-0.313262, abs=1e-6)


def test_gradient_pushes_chosen_up_and_rejected_down():
    """d loss / d r_c = −σ(−d) = −0.5 at d = 0 (mean over one pair)."""
    chosen, rejected = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    BradleyTerryLoss()(chosen, rejected).backward()
    assert chosen.grad.item() == pytest.approx(-0.5)
    assert rejected.grad.item() == pytest.approx(0.5)
