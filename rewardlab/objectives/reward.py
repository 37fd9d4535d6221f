"""Reward-model objectives as strategies: how a reward network's outputs become rewards, a loss and statistics.

Each objective of a :class:`~rewardlab.config.recipe.RewardRecipe` is one class here, over the loss modules of this
package; :class:`~rewardlab.tasks.reward.RewardTask` holds one and asks it, instead of switching on the objective's
name. Shape notation: n = sequences in the batch, e = comparisons (edges), a = rated attributes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rewardlab.config.recipe import RewardRecipe
from rewardlab.data.collate import PairBatch
from rewardlab.data.encode import EncodingPolicy
from rewardlab.data.examples import load_pairs, load_rated
from rewardlab.errors import RecipeError
from rewardlab.models.heads import output_layer
from rewardlab.objectives.bradley_terry import BradleyTerryLoss
from rewardlab.objectives.odin import OdinLoss
from rewardlab.objectives.plackett_luce import PlackettLuceLoss
from rewardlab.objectives.regression import AttributeRegressionLoss

Stats = dict[str, torch.Tensor]


def edge_accuracy(rewards: torch.Tensor, batch: PairBatch) -> torch.Tensor:
    """The weighted share of comparisons whose better response has the higher reward."""
    better, worse = rewards[batch.edges[:, 0]], rewards[batch.edges[:, 1]]
    return ((better > worse).float() * batch.edge_weight).sum() / batch.edge_weight.sum()


class BradleyTerry:
    """Bradley–Terry over every comparison of the batch (pairs, rankings, preference graphs)."""

    outputs = 1
    main_metric = "accuracy"
    kept_outputs: list[int] | None = None  # the head outputs a saved model keeps (None: all)

    def __init__(self, recipe: RewardRecipe):
        self.recipe = recipe
        self.loss_fn = BradleyTerryLoss(recipe.loss.label_smoothing, recipe.loss.center_coefficient)

    def load(self, source: str | None, split: str, policy: EncodingPolicy, log: Callable[[str], None]) -> list:
        return load_pairs(source, split, policy, log, self.recipe.group_by_prompt)

    def reward(self, outputs: torch.Tensor) -> torch.Tensor:
        """(n,) rewards of the network's (n,) outputs."""
        return outputs

    def margin(self, batch: PairBatch) -> torch.Tensor | None:
        return batch.margin if self.recipe.loss.use_margin else None

    def loss(self, outputs: torch.Tensor, batch: PairBatch, network: torch.nn.Module) -> tuple[torch.Tensor, Stats]:
        rewards = self.reward(outputs)
        loss = self.loss_fn(rewards[batch.edges[:, 0]], rewards[batch.edges[:, 1]], self.margin(batch),
                            batch.edge_weight)
        return loss, {"accuracy": edge_accuracy(rewards, batch)}


class PlackettLuce(BradleyTerry):
    """The likelihood of each ranking (ties as Breslow's)."""

    def __init__(self, recipe: RewardRecipe):
        super().__init__(recipe)
        self.loss_fn = PlackettLuceLoss()

    def load(self, source, split, policy, log) -> list:
        examples = super().load(source, split, policy, log)
        if any(e.levels is None for e in examples):
            raise RecipeError("recipe key 'objective': plackett_luce needs ranked responses (ranking rows with "
                              "ranks or scores, or plain pairs); pairs grouped by prompt are a graph with no order: "
                              "use bradley_terry")
        return examples

    def loss(self, outputs, batch, network):
        return self.loss_fn(outputs, batch.group, batch.levels), {"accuracy": edge_accuracy(outputs, batch)}


class Odin(BradleyTerry):
    """Bradley–Terry on a quality and a length head; the quality head (output 0) is the reward and all a saved
    model keeps."""

    outputs = 2
    kept_outputs = [0]

    def __init__(self, recipe: RewardRecipe):
        super().__init__(recipe)
        loss = recipe.loss
        self.loss_fn = OdinLoss(loss.length_coefficient, loss.orthogonal_coefficient,
                                label_smoothing=loss.label_smoothing, center_coefficient=loss.center_coefficient)

    def reward(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs[:, 0]

    def loss(self, outputs, batch, network):
        head = output_layer(network.classifier).weight
        loss = self.loss_fn(outputs, batch.edges, batch.response_lengths.float(), head, self.margin(batch),
                            batch.edge_weight)
        return loss, {"accuracy": edge_accuracy(self.reward(outputs), batch)}


class Regression(BradleyTerry):
    """One output per rated attribute, mean squared error against the ratings; the reward is their weighted sum."""

    main_metric = "rmse"

    def __init__(self, recipe: RewardRecipe):
        self.recipe = recipe
        attributes = recipe.attributes
        self.outputs = len(attributes)
        self.weights = torch.tensor(recipe.reward_weights or [1 / len(attributes)] * len(attributes))
        self.loss_fn = AttributeRegressionLoss(self.weights, recipe.loss.pairwise_coefficient)

    def load(self, source, split, policy, log) -> list:
        return load_rated(source, split, policy, log, self.recipe.attributes, self.weights.tolist())

    def reward(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float() @ self.weights.to(outputs.device)

    def loss(self, outputs, batch, network):
        loss = self.loss_fn(outputs, batch.targets, batch.edges)
        return loss, {"rmse": (outputs.float() - batch.targets).pow(2).mean().sqrt().detach()}


REWARD_OBJECTIVES: dict[str, type[BradleyTerry]] = {
    "bradley_terry": BradleyTerry, "plackett_luce": PlackettLuce, "regression": Regression, "odin": Odin,
}
