"""Folders saved before the redesign (tests/data/format-v1, format version 1) load and score the same today."""

import json

import pytest
import torch
from helpers import REPO

from rewardlab import RewardModel
from rewardlab.evaluation.sts import embed
from rewardlab.models.saved import FORMAT_VERSION, load_info, saved_recipe
from rewardlab.models.sentence import load_sentence_encoder
from rewardlab.models.two_tower import load_two_tower

V1 = REPO / "tests" / "data" / "format-v1"
EXPECTED = json.loads((V1 / "expected.json").read_text())
PROMPTS, RESPONSES = EXPECTED["prompts"], EXPECTED["responses"]


def test_a_reward_model_scores_the_same():
    rm = RewardModel.load(str(V1 / "reward"))
    assert "format_version" not in load_info(V1 / "reward")  # as saved then
    assert rm.score(PROMPTS, RESPONSES) == pytest.approx(EXPECTED["reward"], abs=1e-6)
    assert rm.score(PROMPTS, RESPONSES, normalize=True) == pytest.approx(EXPECTED["reward_normalized"], abs=1e-5)


def test_an_ensemble_scores_the_same():
    scorer = RewardModel.load(str(V1 / "ensemble"))
    assert scorer.size == 2
    assert scorer.score(PROMPTS, RESPONSES) == pytest.approx(EXPECTED["ensemble"], abs=1e-6)
    assert scorer.score_members(PROMPTS, RESPONSES) == [pytest.approx(m, abs=1e-6)
                                                        for m in EXPECTED["ensemble_members"]]


def test_a_simcse_encoder_embeds_the_same():
    encoder, tokenizer, _ = load_sentence_encoder(str(V1 / "simcse"))
    embeddings = embed(encoder, tokenizer, ["a man is running", "the dog sleeps"], 32, 2, "cpu")
    assert embeddings.tolist() == [pytest.approx(row, abs=1e-5) for row in EXPECTED["simcse"]]


def test_clip_towers_load_from_a_version_1_recipe_and_embed_the_same():
    """A version-1 recipe.yaml holds every section of every objective; the sections that do not apply to CLIP are
    left out when it is read, so today's stricter recipe validation takes it."""
    assert {"loss", "ensemble"} <= saved_recipe_keys(V1 / "clip") and "loss" not in saved_recipe(V1 / "clip")
    model, tokenizer, recipe = load_two_tower(V1 / "clip")
    assert recipe.objective == "clip" and recipe.clip.image_tower == "tiny-conv"
    ids = tokenizer(["a red circle", "a blue square"], padding=True, return_tensors="pt")
    with torch.no_grad():
        texts = model.encode_text(ids["input_ids"], ids["attention_mask"])
        images = model.encode_image(torch.linspace(0, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32))
    assert texts.tolist() == [pytest.approx(row, abs=1e-5) for row in EXPECTED["clip_text"]]
    assert images.tolist() == [pytest.approx(row, abs=1e-5) for row in EXPECTED["clip_image"]]


def saved_recipe_keys(folder) -> set:
    import yaml

    return set(yaml.safe_load((folder / "recipe.yaml").read_text()))


def test_folders_saved_today_carry_the_format_version(trained):
    assert load_info(trained)["format_version"] == FORMAT_VERSION == 2
    assert set(saved_recipe(trained)) >= {"objective", "loss", "model"}
