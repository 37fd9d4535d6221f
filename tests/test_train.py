"""End-to-end training on tiny random backbones: learning, resume, save → reload, LoRA, parameters changed."""

import json
from pathlib import Path

import pytest
import torch
from helpers import interrupt_after_checkpoint, logged_losses, make_recipe
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rewardlab.models.loading import load_backbone
from rewardlab.training import loop as train_module
from rewardlab.training.loop import train


@pytest.mark.slow
def test_tiny_backbone_learns_a_synthetic_preference_set(tmp_path):
    recipe = make_recipe(tmp_path, "max_steps=40", rows=320)
    info = train(recipe)
    assert info["metrics"]["accuracy"] > 0.9
    assert info["steps"] == 40


@pytest.mark.slow
def test_resume_after_interruption_gives_the_same_losses(tmp_path, monkeypatch):
    """40 pairs, 8 a step: 5 steps an epoch; stop after the checkpoint at step 3, resume to step 8 (crossing the
    epoch boundary, with warmup and a linear schedule that depend on the restored scheduler state)."""
    common = ("max_steps=8", "save_steps=3", "warmup_ratio=0.25", "group_by_length=true")
    straight = make_recipe(tmp_path / "a", *common, rows=40)
    train(straight)

    interrupted = make_recipe(tmp_path / "b", *common, rows=40)
    interrupt_after_checkpoint(monkeypatch, interrupted, 3)
    assert train_module.latest_checkpoint(interrupted.output_dir).path.name == "step-00000003"
    train(interrupted, resume=True)

    expected, resumed = logged_losses(straight.output_dir), logged_losses(interrupted.output_dir)
    assert sorted(resumed) == list(range(1, 9))
    for step in range(4, 9):
        assert resumed[step] == pytest.approx(expected[step], abs=1e-6), step


def plain_transformers_rewards(model_dir, texts):
    """What a user without rewardlab gets: tokenizer + AutoModelForSequenceClassification, one text at a time."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return [model(**tok(t, return_tensors="pt")).logits[0, 0].item() for t in texts]


@pytest.mark.parametrize("backbone, lora", [("tiny-llama", 0), ("tiny-gpt2", 4), ("tiny-bert", 0)])
def test_saved_model_reloads_in_plain_transformers_with_identical_scores(tmp_path, backbone, lora):
    recipe = make_recipe(tmp_path, f"model.name={backbone}", f"model.lora.r={lora}", "max_steps=4")
    info = train(recipe)
    out = Path(recipe.output_dir)
    assert {"config.json", "model.safetensors", "recipe.yaml", "rewardlab.json"} <= {p.name for p in out.iterdir()}
    config = json.loads((out / "config.json").read_text())
    assert config["reward_mean"] == pytest.approx(info["metrics"]["reward_mean"])

    # rewardlab's own evaluation of the saved folder equals the in-training evaluation (LoRA merged on save)
    from rewardlab.cli import main
    assert main(["eval", str(out), "--data", recipe.eval_data, "--json", str(tmp_path / "m.json")]) == 0
    reloaded = json.loads((tmp_path / "m.json").read_text())[recipe.eval_data]
    for key in ("accuracy", "mean_margin", "reward_mean", "reward_std"):
        assert reloaded[key] == pytest.approx(info["metrics"][key], abs=1e-5), key

    # plain transformers on raw text gives the same reward as rewardlab's batched, padded path
    from rewardlab.data.collate import PadCollator
    from rewardlab.data.pairs import read_pairs
    from rewardlab.evaluation.preferences import score_pairs
    from rewardlab.inference.scorer import RewardModel

    rm = RewardModel.load(str(out))
    pairs, _ = read_pairs(recipe.eval_data)
    encoded, _ = rm.policy.encode_pairs(pairs[:6])
    chosen, _ = score_pairs(rm.network, encoded, PadCollator(rm.tokenizer.pad_token_id, rm.network.encoder), 4, "cpu")
    eos = "" if rm.network.encoder else rm.tokenizer.eos_token
    plain = plain_transformers_rewards(out, [p.prompt + p.chosen + eos for p in pairs[:6]])
    assert plain == pytest.approx(chosen, abs=1e-5)


def test_training_changes_the_trainable_parameters_and_lora_keeps_the_base_frozen(tmp_path):
    recipe = make_recipe(tmp_path, "model.lora.r=4", "max_steps=3", "save_adapter_only=true")
    initial = load_backbone(recipe.model, recipe.seed).model
    before = {n: p.detach().clone() for n, p in initial.named_parameters()}
    captured = {}
    real_finish = train_module.finish

    def capture(accelerator, recipe_, task, model, *rest):
        captured.update({n: p.detach().clone() for n, p in accelerator.unwrap_model(model).model.named_parameters()})
        return real_finish(accelerator, recipe_, task, model, *rest)

    train_module.finish = capture
    try:
        train(recipe)
    finally:
        train_module.finish = real_finish
    changed = {n for n in before if not torch.equal(before[n], captured[n])}
    assert changed and all("lora_" in n or "score" in n for n in changed)
    assert any("score" in n for n in changed)
    assert (Path(recipe.output_dir) / "adapter_config.json").is_file()


@pytest.mark.parametrize("order", ["shuffled", "grouped_by_length"])
@pytest.mark.slow
def test_resume_with_dropout_lora_and_accumulation_gives_the_same_losses(tmp_path, monkeypatch, order):
    """Dropout draws from the global RNG, which the checkpoint restores: nothing else (building the resumed data
    iterator, evaluation) may draw from it, or step 4 onwards sees other dropout masks."""
    common = ("model.name=tiny-gpt2", "model.dropout=true", "model.lora.r=4", "model.lora.dropout=0.3",
              "micro_batch_size=4", "max_steps=8", "save_steps=3", "eval_steps=2", "warmup_ratio=0.25",
              f"group_by_length={order == 'grouped_by_length'}")
    straight = make_recipe(tmp_path / "a", *common, rows=40)
    train(straight)
    interrupted = make_recipe(tmp_path / "b", *common, rows=40)
    interrupt_after_checkpoint(monkeypatch, interrupted, 3)
    train(interrupted, resume=True)

    expected, resumed = logged_losses(straight.output_dir), logged_losses(interrupted.output_dir)
    assert sorted(resumed) == list(range(1, 9))
    for step in range(4, 9):
        assert resumed[step] == pytest.approx(expected[step], abs=1e-6), step
