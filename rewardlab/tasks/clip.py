"""The CLIP and SigLIP learner: a two-tower model (:mod:`rewardlab.models.two_tower`) trained on image–caption
pairs; evaluated by zero-shot classification from text prompts and by retrieval.

The model returns a dict whose keys are exactly its loss's arguments (open_clip's convention), so
``loss_fn(**model(**batch.inputs()))`` serves both objectives. The learnable logit scale (and SigLIP's bias) live
in the model, where the optimizer finds them.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator

from rewardlab.config import Recipe
from rewardlab.data.images import (
    PROMPT_TEMPLATES,
    ImageCaption,
    ImageTextBatch,
    ImageTextCollator,
    read_image_captions,
)
from rewardlab.errors import RecipeError
from rewardlab.evaluation.parallel import map_across_processes
from rewardlab.evaluation.retrieval import RECALL_AT, retrieval_metrics, zero_shot_metrics
from rewardlab.models.loading import checkpoint_layers, disable_dropout, load_text_model
from rewardlab.models.setup import trainable_parameters
from rewardlab.models.two_tower import TwoTower, build_two_tower, save_two_tower
from rewardlab.objectives import ClipLoss, SigLipLoss
from rewardlab.objectives.cached import cached_backward, length_sorted_chunks, without_trailing_padding
from rewardlab.objectives.core import gather_with_grad

MAX_LOGIT_SCALE = 100.0  # CLIP clips the learned scale here, so the softmax cannot become arbitrarily sharp


class ClipTask:
    """CLIP (``objective: clip``) or SigLIP (``objective: siglip``) on image–caption pairs."""

    def __init__(self, recipe: Recipe, log):
        if recipe.model.lora.r:
            raise RecipeError("recipe key 'model.lora.r': CLIP/SigLIP train or freeze whole towers "
                              "(clip.freeze_text_tower, clip.freeze_image_tower); set model.lora.r: 0")
        self.recipe = recipe
        text_model, self.tokenizer, _ = load_text_model(recipe.model.name, recipe.seed, recipe.model.dtype)
        torch.manual_seed(recipe.seed)  # the projections
        if not recipe.model.dropout:
            disable_dropout(text_model)
        if recipe.model.gradient_checkpointing:
            checkpoint_layers(text_model, float(recipe.model.gradient_checkpointing))
        self.model = build_two_tower(recipe, text_model)
        self.model.freeze(recipe.clip.freeze_image_tower, recipe.clip.freeze_text_tower)
        trainable, total = trainable_parameters(self.model)
        log(f"{recipe.objective}: image tower {recipe.clip.image_tower}"
            f"{' (frozen)' if recipe.clip.freeze_image_tower else ''}, text {recipe.model.name}"
            f"{' (frozen)' if recipe.clip.freeze_text_tower else ''}, {recipe.clip.embed_dim}-d embeddings; "
            f"{trainable:,} of {total:,} parameters trained")
        size = recipe.clip.image_size
        self.train_data = read_image_captions(recipe.train_data, size)
        self.eval_data = read_image_captions(recipe.eval_data, size) if recipe.eval_data else []
        log(f"{recipe.train_data}: {len(self.train_data)} pairs"
            + (f"; {recipe.eval_data}: {len(self.eval_data)} pairs" if recipe.eval_data else ""))
        labelled = all(p.label is not None for p in self.eval_data or self.train_data)
        self.main_metric = "zero_shot_accuracy" if labelled else "i2t_recall@1"
        self.collate = ImageTextCollator(self.tokenizer, size, recipe.max_length)
        # Every process scores the whole gathered batch; gather_with_grad's backward makes DDP's averaged gradient
        # that of the global batch on one process.
        gather = gather_with_grad if recipe.contrastive.gather_across_processes else None
        self.loss_fn = ClipLoss(gather) if recipe.objective == "clip" else SigLipLoss(gather)

    def after_optimizer_step(self, model: TwoTower) -> None:
        """Clamp the learned scale at 100 (open_clip's way): on the parameter, after the step, so that a scale past
        the clamp keeps its gradient and can come back (clamping the output would zero it for good)."""
        with torch.no_grad():
            model.logit_scale.clamp_(max=math.log(MAX_LOGIT_SCALE))

    def loss(self, model, batch):
        out = model(**batch.inputs())
        return self.loss_fn(**out), statistics(out)

    def backward(self, accelerator: Accelerator, model, batch: ImageTextBatch):
        """The batch's gradients: in one pass, or as a cached-gradient batch of ``contrastive.mini_batch_size``
        pairs a chunk (:mod:`rewardlab.objectives.cached`; both towers, the scale and bias through the outputs)."""
        size = self.recipe.contrastive.mini_batch_size
        if size is None:
            loss, stats = self.loss(model, batch)
            accelerator.backward(loss)
            return loss, stats
        loss, out = cached_backward(accelerator, model, image_text_chunks(batch, size),
                                    lambda chunk: model(**chunk.inputs()), self.loss_fn)
        return loss, statistics(out)

    def evaluate(self, accelerator: Accelerator, model, data: list[ImageCaption]) -> dict:
        two_tower = accelerator.unwrap_model(model)
        images, texts = torch.stack(map_across_processes(accelerator, data, self.eval_batch_size, lambda pairs: list(
            torch.stack(embed_pairs(two_tower, pairs, self.collate, len(pairs), accelerator.device), 1)))).unbind(1)
        metrics = {"pairs": len(data), **retrieval_metrics(images, texts, [p.caption for p in data])}
        if all(p.label is not None for p in data):
            classes = sorted({p.label for p in data})
            prompts = embed_prompts(two_tower, self.tokenizer, classes, accelerator.device)
            metrics |= zero_shot_metrics(images, prompts, [classes.index(p.label) for p in data])
        return metrics

    @property
    def eval_batch_size(self) -> int:
        return self.recipe.micro_batch_size or self.recipe.batch_size

    def format(self, name: str, metrics: dict) -> str:
        lines = [f"{name}: {metrics['pairs']} pairs"]
        if "zero_shot_accuracy" in metrics:
            lines.append(f"  zero-shot accuracy    {metrics['zero_shot_accuracy']:.4f}  "
                         f"({metrics['zero_shot_classes']} classes, chance {1 / metrics['zero_shot_classes']:.4f})")
        for direction, arrow in (("i2t", "image→text"), ("t2i", "text→image")):
            recalls = " / ".join(f"{metrics[f'{direction}_recall@{k}']:.4f}" for k in RECALL_AT)
            lines.append(f"  {arrow} R@{'/'.join(map(str, RECALL_AT))}  {recalls}")
        return "\n".join(lines)

    def save(self, model, output_dir: Path, info: dict) -> None:
        save_two_tower(model, self.tokenizer, output_dir, self.recipe, info)


@torch.no_grad()
def statistics(out: dict) -> dict:
    """In-batch image→text top-1 accuracy on this process's pairs, and the logit scale."""
    similarity = out["image_features"] @ out["text_features"].T
    accuracy = (similarity.argmax(1) == torch.arange(len(similarity), device=similarity.device)).float().mean()
    return {"accuracy": accuracy, "logit_scale": out["logit_scale"].detach()}


def image_text_chunks(batch: ImageTextBatch, size: int) -> list[ImageTextBatch]:
    """The batch as batches of ``size`` pairs, sorted by caption length, each cut to its own longest caption."""
    chunks = []
    for rows in length_sorted_chunks(batch.attention_mask.sum(1), size):
        rows = rows.to(batch.input_ids.device)
        ids, mask = without_trailing_padding(batch.input_ids[rows], batch.attention_mask[rows])
        chunks.append(ImageTextBatch(batch.pixel_values[rows], ids, mask))
    return chunks


@torch.no_grad()
def embed_pairs(model: TwoTower, pairs: list[ImageCaption], collate, batch_size: int, device):
    """(images (n, d), texts (n, d)) embeddings of ``pairs``, on the CPU."""
    was_training = model.training
    model.eval()
    images, texts = [], []
    for start in range(0, len(pairs), batch_size):
        batch = collate(pairs[start : start + batch_size]).to(device)
        images.append(model.encode_image(batch.pixel_values).float().cpu())
        texts.append(model.encode_text(batch.input_ids, batch.attention_mask).float().cpu())
    model.train(was_training)
    d = model.image_projection.out_features
    return torch.cat(images) if images else torch.zeros(0, d), torch.cat(texts) if texts else torch.zeros(0, d)


@torch.no_grad()
def embed_prompts(model: TwoTower, tokenizer, classes: list[str], device) -> torch.Tensor:
    """(c, d): each class's text embedding, the normalised mean over ``PROMPT_TEMPLATES``."""
    was_training = model.training
    model.eval()
    prompts = [template.format(c) for c in classes for template in PROMPT_TEMPLATES]
    tokens = tokenizer(prompts, padding=True, return_tensors="pt").to(device)
    texts = model.encode_text(tokens["input_ids"], tokens["attention_mask"]).float().cpu()
    model.train(was_training)
    return F.normalize(texts.view(len(classes), len(PROMPT_TEMPLATES), -1).mean(1), dim=-1)


