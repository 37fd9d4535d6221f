"""The reward-model learner: preference data (pairs, rankings, preference graphs, attribute ratings) → a reward
network trained by the recipe's objective (:mod:`rewardlab.objectives.reward`), evaluated on every comparison and
saved as a plain sequence classifier."""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import Accelerator

from rewardlab.config import RewardRecipe
from rewardlab.data.encode import EncodingPolicy
from rewardlab.data.sampling import LengthGroupedSampler
from rewardlab.evaluation.parallel import map_across_processes
from rewardlab.evaluation.preferences import comparisons, evaluation, format_metrics, plot_rewards, score_examples
from rewardlab.models.layouts import make_collator, resolve_attention, resolve_layout
from rewardlab.models.loading import load_backbone
from rewardlab.models.reward import RewardNetwork
from rewardlab.models.saved import save_reward_model
from rewardlab.models.setup import trainable_parameters
from rewardlab.objectives.reward import REWARD_OBJECTIVES


class RewardTask:
    """A reward model on preference data, trained by one of :data:`REWARD_OBJECTIVES`: Bradley–Terry over every
    comparison, Plackett–Luce over rankings, attribute regression or ODIN."""

    def __init__(self, recipe: RewardRecipe, log):
        self.recipe = recipe
        self.objective = REWARD_OBJECTIVES[recipe.objective](recipe)
        self.main_metric = self.objective.main_metric
        backbone = load_backbone(recipe.model, recipe.seed, self.objective.outputs)
        if recipe.attributes:
            backbone.model.config.id2label = dict(enumerate(recipe.attributes))
            backbone.model.config.label2id = {a: i for i, a in enumerate(recipe.attributes)}
        self.tokenizer = backbone.tokenizer
        # What the model started from, so that weight averaging can check its members share it (rewardlab average).
        self.initial_backbone = {"name": recipe.model.name, "fingerprint": backbone.fingerprint}
        self.model = RewardNetwork(backbone.model, backbone.encoder, recipe.model.attention)
        trainable, total = trainable_parameters(self.model)
        log(f"model {recipe.model.name}: {trainable:,} of {total:,} parameters trained "
            f"({'LoRA r=' + str(recipe.model.lora.r) if recipe.model.lora.r else 'full fine-tuning'}; "
            f"{backbone.dtypes}), "
            f"{'encoder (reward at first token)' if backbone.encoder else 'causal LM (reward at last real token)'}")
        self.policy = EncodingPolicy(backbone.tokenizer, backbone.encoder, recipe.max_length, recipe.truncation)
        self.train_data = self.objective.load(recipe.train_data, recipe.train_split, self.policy, log)
        self.eval_data = self.objective.load(recipe.eval_data, recipe.eval_split, self.policy, log)
        self.layout, note = resolve_layout(recipe.layout, self.model)
        attention = resolve_attention(self.model) if self.layout != "padded" else "padded rows"
        log(f"layout: {self.layout}" + (f" ({note})" if note else "") + f", attention: {attention}"
            + (", pairs grouped by length" if recipe.group_by_length else ""))
        self.collate = make_collator(self.layout, self.model)
        self.sampler = (LengthGroupedSampler([p.length for p in self.train_data], recipe.batch_size, recipe.seed)
                        if recipe.group_by_length else None)
        self.rewards: tuple[list[float], list[float]] = ([], [])

    def loss(self, model, batch):
        return self.objective.loss(model(batch), batch, self.model)

    def reward(self, output: float | list[float]) -> float:
        """A response's reward from the network's output(s) for it."""
        return self.objective.reward(torch.tensor([output])).item()

    def evaluate(self, accelerator: Accelerator, model, data: list) -> dict:
        outputs = map_across_processes(accelerator, data, self.eval_batch_size, lambda examples: score_examples(
            model, examples, self.collate, len(examples), accelerator.device), length=lambda e: e.length)
        self.rewards = comparisons(data, [[self.reward(o) for o in example] for example in outputs])
        return evaluation(data, outputs, self.reward, self.recipe.attributes)

    @property
    def eval_batch_size(self) -> int:
        return self.recipe.micro_batch_size or self.recipe.batch_size

    def format(self, name: str, metrics: dict) -> str:
        return format_metrics(name, metrics)

    def save(self, model: RewardNetwork, output_dir: Path, info: dict) -> None:
        metrics = info["metrics"]
        info = {"reward_mean": metrics["reward_mean"], "reward_std": metrics["reward_std"],
                "max_length": self.recipe.max_length, "encoder": model.encoder, "layout": self.layout,
                "encoding": self.policy.to_dict(), "initial_backbone": self.initial_backbone, **info}
        if self.recipe.attributes:
            info |= {"attributes": self.recipe.attributes, "reward_weights": self.objective.weights.tolist()}
        save_reward_model(model.model, self.tokenizer, output_dir, self.recipe.to_dict(), info,
                          self.recipe.save_adapter_only, keep_outputs=self.objective.kept_outputs)
        if self.recipe.plots and self.rewards[0]:
            plot_rewards(*self.rewards, self.eval_data or self.train_data[: len(self.rewards[0])],
                         Path(output_dir) / "rewards.png")
