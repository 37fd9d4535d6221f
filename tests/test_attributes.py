"""Multi-attribute rewards (one output per rated attribute, HelpSteer2's layout) and ODIN's length-disentangled
reward (two heads trained, the quality head kept)."""

import json
import random

import pytest
import torch
from helpers import REPO, synthetic_rows, write_jsonl
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rewardlab.config import load_recipe
from rewardlab.data.groups import read_rated
from rewardlab.errors import DataError, RecipeError
from rewardlab.inference.scorer import RewardModel
from rewardlab.training.loop import train

QUALITY = ["awful", "poor", "fine", "good", "superb"]  # helpfulness 0 … 4
MANNER = {"please": 4, "thanks": 4, "ugh": 0, "whatever": 0}  # politeness


def rated_rows(n: int, seed: int = 0) -> list[dict]:
    """Responses "<manner word> <filler> <quality word>": helpfulness from the last word, politeness from the first,
    two to four responses a prompt."""
    rng, rows = random.Random(seed), []
    while len(rows) < n:
        prompt = f"Request {rng.randint(0, 9999)}:"
        for _ in range(rng.randint(2, 4)):
            manner, quality = rng.choice(list(MANNER)), rng.randrange(5)
            filler = " ".join(rng.choice(["well", "so", "ok"]) for _ in range(rng.randint(0, 2)))
            rows.append({"prompt": prompt, "response": f" {manner} {filler} {QUALITY[quality]}",
                         "helpfulness": quality, "politeness": MANNER[manner]})
    return rows[:n]


def recipe(tmp_path, *overrides, rows=240):
    train_file = write_jsonl(tmp_path / "train.jsonl", rated_rows(rows))
    dev_file = write_jsonl(tmp_path / "dev.jsonl", rated_rows(60, seed=1))
    return load_recipe(None, ["model.name=tiny-llama", f"train_data={train_file}", f"eval_data={dev_file}",
                              "objective=regression", "attributes=[helpfulness, politeness]", "max_length=48",
                              "batch_size=8", "learning_rate=1e-2", "max_steps=120", f"output_dir={tmp_path / 'out'}",
                              *overrides])


def test_rated_rows_group_by_prompt_and_compare_by_weighted_rating(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [
        {"prompt": "p", "response": "a", "helpfulness": 4, "politeness": 0},
        {"prompt": "p", "response": "b", "helpfulness": 1, "politeness": 4},
        {"prompt": "p", "response": "c", "helpfulness": 2, "politeness": 2},
        {"prompt": "q", "response": "d", "helpfulness": 0, "politeness": 0},
    ])
    # weights 0.75 / 0.25: a = 3.0, b = 1.75, c = 2.0
    (p, q), summary = read_rated(str(path), ["helpfulness", "politeness"], [0.75, 0.25])
    assert p.responses == ["a", "b", "c"] and p.ratings == [[4, 0], [1, 4], [2, 2]]
    assert sorted(p.edges) == [(0, 1), (0, 2), (2, 1)] and q.edges == []
    assert summary == "4 rated responses over 2 prompts (3 comparisons)"
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "response": "a", "helpfulness": "4", "politeness": 0}])
    with pytest.raises(DataError, match=f"{bad}:1: column 'helpfulness' must hold finite numbers"):
        read_rated(str(bad), ["helpfulness", "politeness"], [0.5, 0.5])
    with pytest.raises(DataError, match=f"{bad}:1: missing column 'correctness'"):
        read_rated(str(bad), ["correctness"], [1.0])


def test_attributes_belong_to_regression_and_weights_match_them():
    with pytest.raises(RecipeError, match="recipe key 'attributes'"):
        load_recipe(None, ["objective=regression"])
    with pytest.raises(RecipeError, match="recipe key 'reward_weights' needs one weight per attribute"):
        load_recipe(None, ["objective=regression", "attributes=[a, b]", "reward_weights=[1.0]"])


@pytest.mark.slow
def test_a_tiny_backbone_learns_every_attribute_and_saves_a_labelled_multi_output_model(tmp_path):
    info = train(recipe(tmp_path, "reward_weights=[0.75, 0.25]"))
    metrics = info["metrics"]
    assert metrics["correlation_by_attribute"]["helpfulness"] > 0.9
    assert metrics["correlation_by_attribute"]["politeness"] > 0.9
    assert metrics["accuracy"] > 0.9  # the weighted reward orders each prompt's responses

    out = tmp_path / "out"
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "helpfulness", "1": "politeness"}
    rm = RewardModel.load(str(out))
    rows = rated_rows(6, seed=2)
    prompts, responses = [r["prompt"] for r in rows], [r["response"] for r in rows]
    rated = rm.score_attributes(prompts, responses)
    assert set(rated[0]) == {"helpfulness", "politeness", "reward"}
    assert rm.score(prompts, responses) == pytest.approx([0.75 * r["helpfulness"] + 0.25 * r["politeness"]
                                                          for r in rated], abs=1e-6)
    tokenizer, plain = AutoTokenizer.from_pretrained(out), AutoModelForSequenceClassification.from_pretrained(out)
    with torch.no_grad():
        logits = plain(**tokenizer(prompts[0] + responses[0] + tokenizer.eos_token, return_tensors="pt")).logits[0]
    assert logits.tolist() == pytest.approx([rated[0]["helpfulness"], rated[0]["politeness"]], abs=1e-5)
    rows_file = write_jsonl(tmp_path / "score.jsonl",
                            [{"prompt": p, "response": r} for p, r in zip(prompts, responses)])
    from rewardlab.cli import main
    assert main(["score", str(out), "--input", str(rows_file), "--output", str(tmp_path / "scored.jsonl")]) == 0
    scored = [json.loads(line) for line in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert scored[0]["attributes"] == pytest.approx({k: v for k, v in rated[0].items() if k != "reward"}, abs=1e-6)
    assert [r["reward"] for r in scored] == pytest.approx([r["reward"] for r in rated], abs=1e-6)
    assert main(["score", str(out), "--input", str(rows_file), "--output", str(tmp_path / "p.jsonl"),
                 "--reward-weights", "0", "1"]) == 0  # other weights at scoring time: politeness alone
    politeness = [json.loads(line)["reward"] for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert politeness == pytest.approx([r["politeness"] for r in rated], abs=1e-6)
    assert main(["score", str(out), "--input", str(rows_file), "--output", str(tmp_path / "p.jsonl"),
                 "--reward-weights", "1"]) == 2
    rm.reward_weights = [0.0, 1.0]  # at scoring time, other weights
    assert rm.score(prompts[:1], responses[:1]) == pytest.approx([rated[0]["politeness"]], abs=1e-6)


def kind_word_rows(n: int, seed: int) -> list[dict]:
    """Pairs the kind word decides, the chosen reply padded with filler half of the time (length uninformative)."""
    rows, rng = synthetic_rows(n, seed), random.Random(seed + 100)
    for row in rows:
        longer = "chosen" if rng.random() < 0.5 else "rejected"
        row[longer] = " well well well so" + row[longer]
    return rows


def length_rows(n: int, seed: int) -> list[dict]:
    """Pairs of neutral replies where the longer one is chosen: a length shortcut in the labels."""
    rng, rows = random.Random(seed), []
    words = lambda k: " ".join(rng.choice(["well", "so", "ok", "hm"]) for _ in range(k))
    for _ in range(n):
        rows.append({"prompt": f"Request {rng.randint(0, 999)}:", "chosen": f" {words(rng.randint(4, 7))} fine",
                     "rejected": f" {words(rng.randint(0, 2))} fine"})
    return rows


def mixture(kind: int, length: int, seed: int) -> list[dict]:
    rows = [r | {"source": "kind"} for r in kind_word_rows(kind, seed)]
    rows += [r | {"source": "length"} for r in length_rows(length, seed + 5)]
    random.Random(seed).shuffle(rows)
    return rows


@pytest.mark.slow
def test_odin_keeps_the_quality_head_and_decorrelates_it_from_length(tmp_path):
    """Pairs decided by a kind word (length uninformative), mixed with pairs of neutral replies where the longer is
    chosen (a length shortcut in the labels). On held-out pairs of the same mixture, plain Bradley–Terry's reward
    correlates with length (0.35–0.36 over 4 seeds); ODIN's quality head much less (0.09–0.15), and both get the
    kind-word pairs right. The saved model is the quality head alone."""
    train_file = write_jsonl(tmp_path / "train.jsonl", mixture(240, 160, 0))
    dev_file = write_jsonl(tmp_path / "dev.jsonl", mixture(80, 60, 1))
    runs = {}
    for objective in ("bradley_terry", "odin"):
        runs[objective] = train(load_recipe(None, [
            "model.name=tiny-llama", f"train_data={train_file}", f"eval_data={dev_file}", f"objective={objective}",
            "max_length=64", "batch_size=16", "learning_rate=3e-3", "max_steps=160",
            f"output_dir={tmp_path / objective}"]))["metrics"]
    assert runs["odin"]["accuracy_by_source"]["kind"] > 0.9
    assert runs["bradley_terry"]["accuracy_by_source"]["kind"] > 0.9
    assert abs(runs["odin"]["length_correlation"]) < 0.5 * abs(runs["bradley_terry"]["length_correlation"])
    config = json.loads((tmp_path / "odin" / "config.json").read_text())
    assert len(config["id2label"]) == 1
    # the saved one-output model scores as the quality head scored in training's own evaluation
    evaluated = main_eval(tmp_path / "odin", dev_file)
    for key in ("accuracy", "length_correlation", "reward_mean"):
        assert evaluated[key] == pytest.approx(runs["odin"][key], abs=1e-5)


def main_eval(model_dir, data) -> dict:
    from rewardlab.cli import main

    assert main(["eval", str(model_dir), "--data", str(data), "--json", str(model_dir / "eval.json")]) == 0
    return json.loads((model_dir / "eval.json").read_text())[str(data)]


def test_the_project_generator_writes_attribute_rows_the_reader_takes():
    path = REPO / "data" / "attributes-dev.jsonl"
    groups, summary = read_rated(str(path), ["helpfulness", "politeness", "verbosity"], [1 / 3] * 3)
    assert sum(len(g.responses) for g in groups) == 400 and all(len(g.responses) % 4 == 0 for g in groups)
