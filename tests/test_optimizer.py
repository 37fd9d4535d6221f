"""The optimizer the training loop builds: weight decay on matrices only (nanoGPT's and open_clip's rule), for every
objective."""

import pytest
import torch
from helpers import synthetic_rows, write_jsonl

from rewardlab.config import RECIPES_DIR, load_recipe
from rewardlab.models.two_tower import load_two_tower
from rewardlab.tasks.clip import ClipTask
from rewardlab.training.loop import train


class RecordingAdamW(torch.optim.AdamW):
    built: list["RecordingAdamW"] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        RecordingAdamW.built.append(self)


def tiny_recipe(objective: str, tmp_path):
    if objective == "siglip":
        return load_recipe(RECIPES_DIR / "clip-shapes-tiny.yaml", [
            "objective=siglip", "train_data=shapes:32", "eval_data=null", "batch_size=16", "max_steps=1",
            "weight_decay=0.1", f"output_dir={tmp_path / 'out'}"])
    data = write_jsonl(tmp_path / "train.jsonl", synthetic_rows(16))
    if objective == "simcse":
        data.write_text("sentence\n" + "".join(f"sentence number {i}\n" for i in range(16)))
        data = data.rename(tmp_path / "train.csv")
    return load_recipe(None, [
        f"objective={objective}", "model.name=tiny-bert" if objective == "simcse" else "model.name=tiny-llama",
        "model.dropout=true" if objective == "simcse" else "model.lora.r=0", f"train_data={data}", "eval_data=null",
        "max_length=32", "batch_size=8", "max_steps=1", "weight_decay=0.1", f"output_dir={tmp_path / 'out'}"])


@pytest.mark.parametrize("objective", ["bradley_terry", "simcse", "siglip"])
def test_weight_decay_reaches_matrices_only(objective, tmp_path, monkeypatch):
    """Every trained tensor with 2 or more dimensions (weights, embeddings, LoRA factors) decays; biases, norm
    weights, CLIP's logit scale and SigLIP's bias (0 or 1 dimensions) do not."""
    RecordingAdamW.built = []
    monkeypatch.setattr(torch.optim, "AdamW", RecordingAdamW)
    train(tiny_recipe(objective, tmp_path))
    (optimizer,) = RecordingAdamW.built
    decayed = [p for g in optimizer.param_groups if g["weight_decay"] for p in g["params"]]
    kept = [p for g in optimizer.param_groups if not g["weight_decay"] for p in g["params"]]
    assert decayed and kept
    assert all(p.dim() >= 2 for p in decayed) and all(p.dim() < 2 for p in kept)
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.0, 0.1}
    if objective == "siglip":
        assert sum(p.dim() == 0 for p in kept) == 2  # logit scale and bias


def test_one_step_with_strong_decay_shrinks_the_matrices_and_leaves_the_rest_to_adam(tmp_path):
    """SigLIP, lr 1e-3, weight decay 100: AdamW's first step moves a tensor by lr · sign(g) (at most 1e-3) and
    decays it by lr · wd = 10% more. The projections shrink by about 10%; the logit scale (log(1/0.07) = 2.66), the bias
    (−10), the text tower's norm weights (1) and biases move by at most 1e-3."""
    recipe = load_recipe(RECIPES_DIR / "clip-shapes-tiny.yaml", [
        "objective=siglip", "train_data=shapes:32", "eval_data=null", "batch_size=16", "max_steps=1",
        "learning_rate=1e-3", "warmup_ratio=0", "lr_scheduler=constant", "weight_decay=100",
        f"output_dir={tmp_path}"])
    before = {k: v.clone() for k, v in ClipTask(recipe, lambda _: None).model.state_dict().items()}
    train(recipe)
    after = load_two_tower(tmp_path)[0].state_dict()
    vectors = [k for k in before if before[k].dim() < 2 and before[k].is_floating_point()]
    assert {"logit_scale", "logit_bias"} <= set(vectors) and any("LayerNorm" in k for k in vectors)
    for key in vectors:
        assert (after[key] - before[key]).abs().max().item() <= 1.01e-3, key
    for key in ("image_projection.weight", "text_projection.weight"):
        assert after[key].norm().item() == pytest.approx(0.9 * before[key].norm().item(), rel=0.02), key
