"""The reward model: preference pairs → Bradley–Terry on rewards read from a sequence-classification head."""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import Accelerator

from rewardlab.backbones import Backbone, attention_cost, load_backbone, trainable_parameters
from rewardlab.config import Recipe, RecipeError, to_dict
from rewardlab.data.collate import PackedCollator, PadCollator
from rewardlab.data.sampling import LengthGroupedSampler
from rewardlab.data.encode import EncodedPair, PairEncoder
from rewardlab.data.formats import read_pairs
from rewardlab.evaluate import format_metrics, plot_rewards, preference_metrics, score_pairs
from rewardlab.heads import RewardScorer, pair_rewards
from rewardlab.objectives import BradleyTerryLoss
from rewardlab.save import save_reward_model
from rewardlab.tasks import map_across_processes


def chat_renderer(tokenizer):
    """Messages → text with the tokenizer's chat template (None when it has none)."""
    if not tokenizer.chat_template:
        return None
    return lambda messages, prompt_only: tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=prompt_only
    )


def load_pairs(recipe: Recipe, backbone: Backbone, log) -> tuple[list[EncodedPair], list[EncodedPair]]:
    """Read and encode the training and evaluation pairs, reporting what was skipped, cut or dropped."""
    encoder = PairEncoder(backbone.tokenizer, backbone.encoder, recipe.max_length, recipe.truncation)
    splits = []
    for source, split in ((recipe.train_data, recipe.train_split), (recipe.eval_data, recipe.eval_split)):
        if source is None:
            splits.append([])
            continue
        pairs, read_report = read_pairs(source, split, chat_renderer(backbone.tokenizer))
        encoded, encode_report = encoder.encode_pairs(pairs, source)
        log(f"{source}: {read_report.summary()}; {encode_report.summary()}")
        splits.append(encoded)
    return splits[0], splits[1]


def resolve_layout(layout: str, encoder: bool) -> str:
    """``auto`` → prefix sharing for causal LMs (exact there), packing for encoders (whose prompt tokens see the
    response, so they cannot share a prompt)."""
    if layout == "prefix_shared" and encoder:
        raise RecipeError("recipe key 'layout': prefix_shared needs a causal LM; this backbone is an encoder "
                          "(choose one of: auto, padded, packed)")
    if layout == "auto":
        return "packed" if encoder else "prefix_shared"
    return layout


def make_collator(layout: str, backbone: Backbone):
    pad_token_id, encoder = backbone.tokenizer.pad_token_id, backbone.encoder
    if layout == "padded":
        return PadCollator(pad_token_id, encoder)
    return PackedCollator(pad_token_id, encoder, layout == "prefix_shared", attention_cost(backbone.model))


class RewardTask:
    """Bradley–Terry reward model on chosen/rejected pairs."""

    main_metric = "accuracy"

    def __init__(self, recipe: Recipe, log):
        self.recipe = recipe
        self.backbone = load_backbone(recipe.model, recipe.seed)
        self.model = RewardScorer(self.backbone.model)
        trainable, total = trainable_parameters(self.model)
        log(f"model {recipe.model.name}: {trainable:,} of {total:,} parameters trained "
            f"({'LoRA r=' + str(recipe.model.lora.r) if recipe.model.lora.r else 'full fine-tuning'}), "
            f"{'encoder (reward at first token)' if self.backbone.encoder else 'causal LM (reward at last real token)'}")
        self.train_data, self.eval_data = load_pairs(recipe, self.backbone, log)
        self.layout = resolve_layout(recipe.layout, self.backbone.encoder)
        log(f"layout: {self.layout}" + (" (auto)" if recipe.layout == "auto" else "")
            + (", pairs grouped by length" if recipe.group_by_length else ""))
        self.collate = make_collator(self.layout, self.backbone)
        self.sampler = (LengthGroupedSampler([p.length for p in self.train_data], recipe.batch_size, recipe.seed)
                        if recipe.group_by_length else None)
        self.loss_fn = BradleyTerryLoss(recipe.loss.label_smoothing, recipe.loss.center_coefficient)
        self.rewards: tuple[list[float], list[float]] = ([], [])

    def loss(self, model, batch):
        chosen, rejected = pair_rewards(model, batch)
        loss = self.loss_fn(chosen, rejected, batch.margin if self.recipe.loss.use_margin else None)
        return loss, {"accuracy": (chosen > rejected).float().mean()}

    def evaluate(self, accelerator: Accelerator, model, data: list[EncodedPair]) -> dict:
        rewards = map_across_processes(accelerator, data, self.eval_batch_size, lambda pairs: torch.tensor(
            score_pairs(model, pairs, self.collate, len(pairs), accelerator.device)).T, length=lambda p: p.length)
        self.rewards = rewards[:, 0].tolist(), rewards[:, 1].tolist()
        return preference_metrics(*self.rewards, data)

    @property
    def eval_batch_size(self) -> int:
        return self.recipe.micro_batch_size or self.recipe.batch_size

    def format(self, name: str, metrics: dict) -> str:
        return format_metrics(name, metrics)

    def save(self, model: RewardScorer, output_dir: Path, info: dict) -> None:
        metrics = info["metrics"]
        info = {"reward_mean": metrics["reward_mean"], "reward_std": metrics["reward_std"],
                "max_length": self.recipe.max_length, "encoder": self.backbone.encoder, **info}
        save_reward_model(model.model, self.backbone.tokenizer, output_dir, to_dict(self.recipe), info,
                          self.recipe.save_adapter_only)
        if self.recipe.plots:
            plot_rewards(*self.rewards, self.eval_data or self.train_data[: len(self.rewards[0])],
                         Path(output_dir) / "rewards.png")
