"""Beyond one pair: rankings of k responses and preference graphs per prompt, Bradley–Terry over every comparison
and Plackett–Luce over every ranking, with the prompt computed once for all k responses."""

import copy
import math
import random
import re

import pytest
import torch
from helpers import SHARED_DATA, logged_losses, needs_shared_data, write_jsonl

from rewardlab.config import load_recipe
from rewardlab.data.collate import PackedCollator, PadCollator
from rewardlab.data.encode import EncodingPolicy
from rewardlab.data.groups import read_groups
from rewardlab.errors import DataError, RecipeError
from rewardlab.models.reward import RewardNetwork
from rewardlab.objectives import BradleyTerryLoss, PlackettLuceLoss
from rewardlab.training.loop import train

LEVELS = [["superb", "wonderful"], ["good", "fine"], ["meh", "so-so"], ["awful", "terrible"]]


def ranking_rows(n: int, seed: int = 0, key: str = "scores") -> list[dict]:
    """A learnable ranking set: 4 responses whose last word says its quality (3 … 0), after random filler; one row in
    three ties its two middle responses."""
    rng, rows = random.Random(seed), []
    filler = ["well", "so", "ok", "hm", "right"]
    for _ in range(n):
        tie = rng.random() < 1 / 3
        grades = [3, 1, 1, 0] if tie else [3, 2, 1, 0]
        rng.shuffle(grades)
        responses = [" ".join(rng.choice(filler) for _ in range(rng.randint(0, 3))) + " "
                     + rng.choice(LEVELS[3 - g]) for g in grades]
        values = grades if key == "scores" else [4 - g for g in grades]  # ranks: 1 = best
        rows.append({"prompt": f"Request {rng.randint(0, 999)}:", "responses": responses, key: values})
    return rows


def test_scores_and_ranks_become_levels_and_every_untied_comparison(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [
        {"prompt": "p", "responses": ["a", "b", "c", "d"], "scores": [2, 7, 2, 0]},
        {"prompt": "q", "responses": ["a", "b", "c"], "ranks": [3, 1, 2], "source": "s"},
    ])
    (scored, ranked), summary = read_groups(str(path))
    assert scored.levels == [1, 0, 1, 2]  # 7 best; the two 2s tied, never compared
    assert sorted(scored.edges) == [(0, 3), (1, 0), (1, 2), (1, 3), (2, 3)]
    assert ranked.levels == [2, 0, 1] and sorted(ranked.edges) == [(1, 0), (1, 2), (2, 0)] and ranked.source == "s"
    assert summary == "2 rankings, 8 comparisons"


@pytest.mark.parametrize("row, message", [
    ({"prompt": "p", "responses": ["a", "b"], "scores": [1]}, "must be a list as long as 'responses' (2)"),
    ({"prompt": "p", "responses": ["a"], "scores": [1]}, "at least 2 responses"),
    ({"prompt": "p", "responses": ["a", "b"], "scores": [1, "x"]}, "must hold finite numbers"),
    ({"prompt": "p", "responses": ["a", "b"], "ranks": [1, True]}, "must hold finite numbers"),
    ({"prompt": "p", "responses": ["a", "b"], "scores": [2, 2]}, "every response is tied"),
    ({"prompt": "p", "responses": ["a", ""], "scores": [2, 1]}, "response 1 is empty"),
    ({"prompt": "p", "chosen": "a", "rejected": "b"}, "need 'responses' and 'ranks' or 'scores'"),
])
def test_bad_ranking_rows_name_file_and_line(tmp_path, row, message):
    path = write_jsonl(tmp_path / "r.jsonl", [{"prompt": "p", "responses": ["a", "b"], "scores": [1, 0]}, row])
    with pytest.raises(DataError, match=re.escape(f"{path}:2: ") + ".*" + re.escape(message)):
        read_groups(str(path))


def test_pairs_grouped_by_prompt_form_a_graph_with_each_response_once(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": "x", "rejected": "y"},
        {"prompt": "p", "chosen": "a", "rejected": "c", "margin": 0.5}, {"prompt": "p", "chosen": "c", "rejected": "b"},
    ])
    (p, q), summary = read_groups(str(path), group_by_prompt=True)
    assert p.responses == ["a", "b", "c"] and p.edges == [(0, 1), (0, 2), (2, 1)] and p.margins == [0, 0.5, 0]
    assert p.levels is None and q.edges == [(0, 1)] and summary.endswith("; 2 prompts")


@needs_shared_data
def test_pandalm_pairs_are_153_prompts():
    groups, _ = read_groups(str(SHARED_DATA / "prefs" / "pandalm-testset-human.jsonl"), group_by_prompt=True)
    assert len(groups) == 153 and sum(len(g.edges) for g in groups) == 836
    assert sum(len(g.responses) for g in groups) < 2 * 836  # responses shared between pairs are computed once


def test_plackett_luce_groups_ties_and_counts_each_ranking_once():
    """Example 0: rewards (2, 1, 0), levels (0, 1, 1): −log(e²/(e²+e+1)) = 0.407606, then the tied two each from
    both: −log(e/(e+1)) = 0.313262 and −log(1/(e+1)) = 1.313262 → mean 0.678043. Example 1: rewards (0, 3), levels
    (1, 0): −log(e³/(e³+1)) = 0.048587. Loss = (0.678043 + 0.048587) / 2 = 0.363315."""
    rewards = torch.tensor([2.0, 1.0, 0.0, 0.0, 3.0])
    group, levels = torch.tensor([0, 0, 0, 1, 1]), torch.tensor([0, 1, 1, 1, 0])
    assert PlackettLuceLoss()(rewards, group, levels).item() == pytest.approx(0.363315, abs=1e-6)
    # k = 2 without ties is Bradley–Terry
    two = PlackettLuceLoss()(torch.tensor([0.5, -1.0]), torch.tensor([0, 0]), torch.tensor([0, 1]))
    assert two.item() == pytest.approx(-math.log(1 / (1 + math.exp(-1.5))), abs=1e-6)


def test_bradley_terry_weighs_a_ranking_once():
    """A ranking of 3 (rewards 2, 1, 0 in order) has 3 comparisons of weight 1/3 (InstructGPT's k-wise loss),
    a pair one of weight 1: loss = (1/3 · (−log σ(1) − log σ(2) − log σ(1)) + 1 · (−log σ(0.5))) / 2
    = (0.251151 + 0.474077) / 2 = 0.362614."""
    better, worse = torch.tensor([2.0, 2.0, 1.0, 0.5]), torch.tensor([1.0, 0.0, 0.0, 0.0])
    weights = torch.tensor([1 / 3, 1 / 3, 1 / 3, 1.0])
    assert BradleyTerryLoss()(better, worse, None, weights).item() == pytest.approx(0.362614, abs=1e-6)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-bert"])
def test_k_responses_in_one_row_give_the_padded_rewards(tiny, tmp_path, name):
    """[prompt | r1 | r2 | r3 | r4]: each response sees the prompt and itself only (causal LMs), or packed one
    sequence per response (encoders); rewards equal the padded path's to 1e-4."""
    backbone = tiny[name]
    model = copy.deepcopy(backbone.model).eval()
    (model.score if hasattr(model, "score") else model.classifier).weight.data *= 1000
    module = RewardNetwork(model, backbone.encoder)
    groups, _ = read_groups(str(write_jsonl(tmp_path / "r.jsonl", ranking_rows(6))))
    policy = EncodingPolicy(backbone.tokenizer, backbone.encoder, max_length=128)
    examples, _ = policy.encode_pairs(groups)
    pad_id = backbone.tokenizer.pad_token_id
    with torch.no_grad():
        padded = module(PadCollator(pad_id, backbone.encoder)(examples))
        assert padded.shape == (24,) and padded.std() > 0.02
        batch = PackedCollator(pad_id, backbone.encoder, share_prompt=not backbone.encoder)(examples)
        torch.testing.assert_close(module(batch), padded, atol=1e-4, rtol=0)
    if not backbone.encoder:  # the prompt is in the rows once per ranking, not once per response
        prompt_tokens = sum(len(e.prompt_ids) for e in examples)
        assert (batch.input_ids != pad_id).sum() == prompt_tokens + sum(map(len, (r for e in examples
                                                                                   for r in e.responses)))


@pytest.mark.parametrize("objective, key", [("bradley_terry", "scores"), ("plackett_luce", "ranks")])
@pytest.mark.slow
def test_a_tiny_backbone_learns_rankings(tmp_path, objective, key):
    train_file = write_jsonl(tmp_path / "train.jsonl", ranking_rows(160, key=key))
    dev_file = write_jsonl(tmp_path / "dev.jsonl", ranking_rows(40, seed=1, key=key))
    recipe = load_recipe(None, ["model.name=tiny-llama", f"train_data={train_file}", f"eval_data={dev_file}",
                                f"objective={objective}", "max_length=64", "batch_size=4", "learning_rate=3e-3",
                                "max_steps=40", f"output_dir={tmp_path / 'out'}"])
    info = train(recipe)
    # every untied comparison of the 40 held-out rankings: 40 × (6 − 1/3 · 1) comparisons
    assert info["metrics"]["pairs"] == sum(6 if len(set(r[key])) == 4 else 5 for r in ranking_rows(40, 1, key))
    assert info["metrics"]["accuracy"] > 0.9


def test_plackett_luce_refuses_a_graph_without_an_order(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    recipe = load_recipe(None, ["model.name=tiny-llama", f"train_data={path}", "eval_data=null",
                                "objective=plackett_luce", "group_by_prompt=true", f"output_dir={tmp_path / 'o'}"])
    with pytest.raises(RecipeError, match="plackett_luce needs ranked responses"):
        train(recipe)


@pytest.mark.slow
def test_grouped_pairs_train_like_the_pairs_they_hold(tmp_path):
    """Pairs with distinct prompts grouped by prompt are the same pairs: the same losses step by step."""
    rows = [{"prompt": f"Q{i}:", "chosen": f" yes {i}", "rejected": f" no {i % 3}"} for i in range(16)]
    data = write_jsonl(tmp_path / "p.jsonl", rows)
    losses = []
    for grouped in ("false", "true"):
        out = tmp_path / grouped
        train(load_recipe(None, ["model.name=tiny-llama", f"train_data={data}", "eval_data=null", "max_steps=3",
                                 "batch_size=4", "learning_rate=3e-3", "logging_steps=1", f"group_by_prompt={grouped}",
                                 f"output_dir={out}"]))
        losses.append(logged_losses(out))
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
