"""The reward model: preference pairs, rankings or preference graphs → Bradley–Terry over every comparison, or
Plackett–Luce over every ranking, on rewards read from a sequence-classification head."""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import Accelerator

from rewardlab.backbones import attention_cost, load_backbone, trainable_parameters
from rewardlab.config import Recipe, RecipeError, to_dict
from rewardlab.data.collate import PackedCollator, PadCollator
from rewardlab.data.encode import EncodingPolicy
from rewardlab.data.formats import iter_rows, read_pairs
from rewardlab.data.groups import is_ranking_row, read_groups, read_rated
from rewardlab.data.sampling import LengthGroupedSampler
from rewardlab.evaluate import comparisons, evaluation, format_metrics, plot_rewards, score_examples
from rewardlab.model import LAYOUTS, RewardModule, output_layer
from rewardlab.objectives import AttributeRegressionLoss, BradleyTerryLoss, OdinLoss, PlackettLuceLoss
from rewardlab.save import save_reward_model
from rewardlab.tasks import map_across_processes


def load_pairs(source: str | None, split: str, policy: EncodingPolicy, log, group_by_prompt: bool = False) -> list:
    """Read and encode one file's examples, reporting what was skipped, cut or dropped: pairs, or groups for ranking
    files and for pair files grouped by prompt (:mod:`rewardlab.data.groups`)."""
    if source is None:
        return []
    first = next(iter_rows(source, split), (None, None))[0]
    if group_by_prompt or (first is not None and is_ranking_row(first)):
        examples, summary = read_groups(source, split, policy.chat_renderer, group_by_prompt)
    else:
        examples, report = read_pairs(source, split, policy.chat_renderer)
        summary = report.summary()
    encoded, encode_report = policy.encode_pairs(examples, source)
    log(f"{source}: {summary}; {encode_report.summary()}")
    return encoded


def resolve_layout(layout: str, module: RewardModule, key: str = "recipe key 'layout'") -> tuple[str, str]:
    """(the layout to use, a note for the log). ``auto`` → prefix sharing for causal LMs (exact there), packing for
    encoders (whose prompt tokens see the response, so they cannot share a prompt), each where the model computes it
    exactly (:func:`rewardlab.model.probe_layouts`), else ``padded``."""
    if layout == "prefix_shared" and module.encoder:
        raise RecipeError(f"{key}: prefix_shared needs a causal LM; this backbone is an encoder "
                          "(choose one of: auto, padded, packed)")
    if layout == "padded":
        return layout, ""
    supported, why = module.layouts()
    if layout == "auto":
        preferred = "packed" if module.encoder else "prefix_shared"
        chosen = next(name for name in (preferred, "packed", "padded") if name in supported)
        return chosen, "auto" + (f"; {why}" if chosen != preferred else "")
    if layout not in supported:
        raise RecipeError(f"{key}: {layout} does not compute this model exactly ({why}); choose one "
                          f"of: auto, {', '.join(name for name in LAYOUTS if name in supported)}")
    return layout, ""


def resolve_attention(module: RewardModule, key: str = "recipe key 'model.attention'") -> str:
    """A note for the log on how packed rows attend; ``blocks`` on a model that cannot is a recipe error."""
    attention, why = module.attention()
    if module.wanted_attention == "blocks" and attention != "blocks":
        raise RecipeError(f"{key}: blocks does not compute this model exactly ({why}); choose one of: auto, dense")
    return attention + (f" ({why})" if why else "")


def make_collator(layout: str, module: RewardModule):
    """The collator of ``layout``. Rows attended by blocks cost no attention for their width, so they are as wide
    as the batch (no padding) and carry no (s, s) mask."""
    if layout == "padded":
        return PadCollator(module.pad_token_id, module.encoder)
    blocks = module.attention()[0] == "blocks"
    return PackedCollator(module.pad_token_id, module.encoder, layout == "prefix_shared",
                          0.0 if blocks else attention_cost(module.classifier), dense_mask=not blocks)


class RewardTask:
    """A reward model on preference data: Bradley–Terry over every comparison (pairs, rankings, graphs),
    Plackett–Luce over rankings, attribute regression (one output per rated attribute, the reward their weighted
    sum) or ODIN (Bradley–Terry on a quality and a length head; the quality head is the reward)."""

    def __init__(self, recipe: Recipe, log):
        self.recipe, self.objective = recipe, recipe.objective
        self.attributes = recipe.attributes
        self.weights = torch.tensor(recipe.reward_weights or [1 / len(self.attributes)] * len(self.attributes)
                                    if self.attributes else [1.0])
        outputs = len(self.attributes) if self.objective == "regression" else 2 if self.objective == "odin" else 1
        backbone = load_backbone(recipe.model, recipe.seed, outputs)
        if self.attributes:
            backbone.model.config.id2label = dict(enumerate(self.attributes))
            backbone.model.config.label2id = {a: i for i, a in enumerate(self.attributes)}
        self.tokenizer = backbone.tokenizer
        # What the model started from, so that weight averaging can check its members share it (rewardlab average).
        self.initial_backbone = {"name": recipe.model.name, "fingerprint": backbone.fingerprint}
        self.model = RewardModule(backbone.model, backbone.encoder, recipe.model.attention)
        trainable, total = trainable_parameters(self.model)
        log(f"model {recipe.model.name}: {trainable:,} of {total:,} parameters trained "
            f"({'LoRA r=' + str(recipe.model.lora.r) if recipe.model.lora.r else 'full fine-tuning'}; "
            f"{backbone.dtypes}), "
            f"{'encoder (reward at first token)' if backbone.encoder else 'causal LM (reward at last real token)'}")
        self.policy = EncodingPolicy(backbone.tokenizer, backbone.encoder, recipe.max_length, recipe.truncation)
        self.train_data = self.load(recipe.train_data, recipe.train_split, log)
        self.eval_data = self.load(recipe.eval_data, recipe.eval_split, log)
        if self.objective == "plackett_luce" and any(e.levels is None for e in self.train_data):
            raise RecipeError("recipe key 'objective': plackett_luce needs ranked responses (ranking rows with "
                              "ranks or scores, or plain pairs); pairs grouped by prompt are a graph with no order: "
                              "use bradley_terry")
        self.layout, note = resolve_layout(recipe.layout, self.model)
        attention = resolve_attention(self.model) if self.layout != "padded" else "padded rows"
        log(f"layout: {self.layout}" + (f" ({note})" if note else "") + f", attention: {attention}"
            + (", pairs grouped by length" if recipe.group_by_length else ""))
        self.collate = make_collator(self.layout, self.model)
        self.sampler = (LengthGroupedSampler([p.length for p in self.train_data], recipe.batch_size, recipe.seed)
                        if recipe.group_by_length else None)
        loss = recipe.loss
        self.loss_fn = {
            "plackett_luce": lambda: PlackettLuceLoss(),
            "regression": lambda: AttributeRegressionLoss(self.weights, loss.pairwise_coefficient),
            "odin": lambda: OdinLoss(loss.length_coefficient, loss.orthogonal_coefficient,
                                     label_smoothing=loss.label_smoothing, center_coefficient=loss.center_coefficient),
        }.get(self.objective, lambda: BradleyTerryLoss(loss.label_smoothing, loss.center_coefficient))()
        self.main_metric = "rmse" if self.objective == "regression" else "accuracy"
        self.rewards: tuple[list[float], list[float]] = ([], [])

    def load(self, source: str | None, split: str, log) -> list:
        if self.objective != "regression" or source is None:
            return load_pairs(source, split, self.policy, log, self.recipe.group_by_prompt)
        groups, summary = read_rated(source, self.attributes, self.weights.tolist(), split, self.policy.chat_renderer)
        encoded, report = self.policy.encode_pairs(groups, source)
        log(f"{source}: {summary}; {report.summary()}")
        return encoded

    def reward(self, outputs: torch.Tensor) -> torch.Tensor:
        """(n,) rewards of the model's (n,) or (n, outputs) outputs: the weighted attributes (regression), the
        quality head (ODIN), or the one output."""
        if self.objective == "regression":
            return outputs.float() @ self.weights.to(outputs.device)
        return outputs[:, 0] if self.objective == "odin" else outputs

    def loss(self, model, batch):
        outputs = model(batch)
        rewards = self.reward(outputs)
        better, worse = rewards[batch.edges[:, 0]], rewards[batch.edges[:, 1]]
        margin = batch.margin if self.recipe.loss.use_margin else None
        if self.objective == "regression":
            loss = self.loss_fn(outputs, batch.targets, batch.edges)
            return loss, {"rmse": (outputs.float() - batch.targets).pow(2).mean().sqrt().detach()}
        if self.objective == "plackett_luce":
            loss = self.loss_fn(rewards, batch.group, batch.levels)
        elif self.objective == "odin":
            head = output_layer(self.model.classifier).weight
            loss = self.loss_fn(outputs, batch.edges, batch.response_lengths.float(), head, margin, batch.edge_weight)
        else:
            loss = self.loss_fn(better, worse, margin, batch.edge_weight)
        accuracy = ((better > worse).float() * batch.edge_weight).sum() / batch.edge_weight.sum()
        return loss, {"accuracy": accuracy}

    def evaluate(self, accelerator: Accelerator, model, data: list) -> dict:
        outputs = map_across_processes(accelerator, data, self.eval_batch_size, lambda examples: score_examples(
            model, examples, self.collate, len(examples), accelerator.device), length=lambda e: e.length)
        reward = lambda output: self.reward(torch.tensor([output])).item()
        self.rewards = comparisons(data, [[reward(o) for o in example] for example in outputs])
        return evaluation(data, outputs, reward, self.attributes)

    @property
    def eval_batch_size(self) -> int:
        return self.recipe.micro_batch_size or self.recipe.batch_size

    def format(self, name: str, metrics: dict) -> str:
        return format_metrics(name, metrics)

    def save(self, model: RewardModule, output_dir: Path, info: dict) -> None:
        metrics = info["metrics"]
        info = {"reward_mean": metrics["reward_mean"], "reward_std": metrics["reward_std"],
                "max_length": self.recipe.max_length, "encoder": model.encoder, "layout": self.layout,
                "encoding": self.policy.to_dict(), "initial_backbone": self.initial_backbone, **info}
        if self.attributes:
            info |= {"attributes": self.attributes, "reward_weights": self.weights.tolist()}
        save_reward_model(model.model, self.tokenizer, output_dir, to_dict(self.recipe), info,
                          self.recipe.save_adapter_only, keep_outputs=[0] if self.objective == "odin" else None)
        if self.recipe.plots and self.rewards[0]:
            plot_rewards(*self.rewards, self.eval_data or self.train_data[: len(self.rewards[0])],
                         Path(output_dir) / "rewards.png")
