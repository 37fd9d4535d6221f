"""Two towers (CLIP, SigLIP): an image encoder and a text backbone, each projected into one embedding space, with
the learnable logit scale (and bias); its saved folder."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from rewardlab.config.loading import recipe_from_dict
from rewardlab.config.recipe import Recipe
from rewardlab.data.images import PROMPT_TEMPLATES
from rewardlab.models.poolers import pool
from rewardlab.models.saved import RECIPE_FILE, saved_recipe, write_info
from rewardlab.models.vision import build_image_tower


class TwoTower(nn.Module):
    """Image tower + text backbone, each followed by a bias-free linear projection to ``embed_dim``, with the
    learnable log logit scale (and, for SigLIP, the logit bias).

    Shape notation: b = pairs, s = caption tokens, d = ``embed_dim``.
    """

    def __init__(self, image_tower: nn.Module, text_model: nn.Module, embed_dim: int, pooling: str,
                 init_scale: float, init_bias: float | None = None):
        super().__init__()
        if getattr(text_model, "pooler", None) is not None:
            text_model.pooler = None  # BERT's pooler is never used: text features are pooled here
        self.image_tower, self.text_model, self.pooling = image_tower, text_model, pooling
        self.image_projection = nn.Linear(image_tower.width, embed_dim, bias=False)
        self.text_projection = nn.Linear(text_model.config.hidden_size, embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(init_bias)) if init_bias is not None else None
        self.frozen: set[str] = set()

    def freeze(self, image: bool, text: bool) -> None:
        """Lock a tower (LiT): no gradients, and batch-norm/dropout kept in eval mode; its projection still trains."""
        for name, frozen in (("image_tower", image), ("text_model", text)):
            if frozen:
                getattr(self, name).requires_grad_(False)
                self.frozen.add(name)
        self.train(self.training)

    def train(self, mode: bool = True) -> TwoTower:
        super().train(mode)
        for name in self.frozen:
            getattr(self, name).eval()
        return self

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(b, 3, h, w) in [0, 1] → (b, d), L2-normalised."""
        return F.normalize(self.image_projection(self.image_tower(pixel_values)), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(b, s) right-padded token ids → (b, d), L2-normalised."""
        hidden = self.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return F.normalize(self.text_projection(pool(hidden, attention_mask, self.pooling)), dim=-1)

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
        """The loss's arguments: ``image_features`` (b, d), ``text_features`` (b, d), ``logit_scale`` (exponentiated)
        and, with a bias, ``logit_bias``."""
        out = {
            "image_features": self.encode_image(pixel_values),
            "text_features": self.encode_text(input_ids, attention_mask),
            "logit_scale": self.logit_scale.exp(),
        }
        if self.logit_bias is not None:
            out["logit_bias"] = self.logit_bias
        return out


def build_two_tower(recipe: Recipe, text_model: nn.Module, pretrained: bool = True) -> TwoTower:
    clip = recipe.clip
    return TwoTower(
        build_image_tower(clip.image_tower, pretrained), text_model, clip.embed_dim, recipe.contrastive.pooling,
        init_scale=1 / recipe.contrastive.temperature,
        init_bias=clip.init_bias if recipe.objective == "siglip" else None,
    )


def save_two_tower(model: TwoTower, tokenizer, output_dir: str | Path, recipe: Recipe, info: dict) -> Path:
    """``model.safetensors`` (both towers, projections, scale, bias), ``text/`` (the text backbone's config and
    tokenizer), ``recipe.yaml`` and ``rewardlab.json``."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / "model.safetensors")
    model.text_model.config.save_pretrained(out / "text")
    tokenizer.save_pretrained(out / "text")
    info = {"objective": recipe.objective, "image_tower": recipe.clip.image_tower, "image_size": recipe.clip.image_size,
            "embed_dim": recipe.clip.embed_dim, "prompt_templates": list(PROMPT_TEMPLATES), **info}
    write_info(out, recipe.to_dict(), info)
    return out


def load_two_tower(model_dir: str | Path) -> tuple[TwoTower, object, Recipe]:
    """(model in eval mode, tokenizer, recipe) of a folder written by :func:`save_two_tower`."""
    folder = Path(model_dir)
    recipe = recipe_from_dict(saved_recipe(folder), str(folder / RECIPE_FILE))
    text_model = AutoModel.from_config(AutoConfig.from_pretrained(folder / "text"))
    model = build_two_tower(recipe, text_model, pretrained=False)
    model.load_state_dict(load_file(folder / "model.safetensors"), strict=True)
    return model.eval(), AutoTokenizer.from_pretrained(folder / "text"), recipe
