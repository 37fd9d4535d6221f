"""Every backbone users bring: 13 model families as saved checkpoints (float32 and bfloat16) with real tokenizers
(tests/families.py). Each trains in every layout it supports (packed and prefix-shared rewards equal the padded
path's), reloads in plain transformers with the same scores, and runs through `rewardlab eval` and `score`;
bfloat16 checkpoints train float32 weights."""

import json
import math

import pytest
import torch
from families import ENCODERS, FAMILIES, LAYOUTS, TOKENIZERS, build_checkpoint
from helpers import REPO, write_jsonl
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rewardlab.cli import main
from rewardlab.config import ModelSettings, load_recipe
from rewardlab.data.collate import PackedCollator, PadCollator
from rewardlab.data.encode import EncodingPolicy
from rewardlab.data.pairs import read_pairs
from rewardlab.inference.scorer import RewardModel
from rewardlab.models.heads import output_layer
from rewardlab.models.loading import load_backbone
from rewardlab.models.reward import RewardNetwork
from rewardlab.training.loop import train

DEV = REPO / "data" / "prefs-dev.jsonl"
ROWS = [json.loads(line) for line in DEV.read_text().splitlines()[:24]]


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """checkpoint(family, dtype) → a saved folder, built once per session."""
    root, tokenizers, folders = tmp_path_factory.mktemp("families"), {}, {}

    def get(family: str, dtype: torch.dtype = torch.float32):
        kind = FAMILIES[family][2]
        if kind not in tokenizers:
            tokenizers[kind] = TOKENIZERS[kind]()
        key = (family, dtype)
        if key not in folders:
            folders[key] = build_checkpoint(family, root / f"{family}-{str(dtype)[6:]}", tokenizers[kind], dtype)
        return folders[key]

    return get


def spread_head(module: RewardNetwork) -> None:
    """Scale the fresh head's output layer up, so rewards differ by much more than the tolerance and equality means
    something. Only the last layer: scaling a two-layer head (RoBERTa, ELECTRA) in both would amplify float32
    rounding by 300² and fail exact computations at 1e-4."""
    output_layer(module.classifier).weight.data *= 300


@pytest.mark.parametrize("family", FAMILIES)
def test_every_layout_a_family_supports_gives_the_padded_rewards(family, checkpoint):
    backbone = load_backbone(ModelSettings(name=str(checkpoint(family))))
    module = RewardNetwork(backbone.model, backbone.encoder).eval()
    layouts, why = module.layouts()
    assert layouts == LAYOUTS[family], why
    assert bool(why) == (layouts == ("padded",))  # a family limited to padded says why
    spread_head(module)
    policy = EncodingPolicy(backbone.tokenizer, backbone.encoder, max_length=48)  # some rows are cut
    pairs, report = policy.encode_pairs(read_pairs(str(DEV))[0][:12])
    assert report.truncated_prompt > 0
    pad_id = backbone.tokenizer.pad_token_id
    with torch.no_grad():
        padded = module(PadCollator(pad_id, backbone.encoder)(pairs))
        assert padded.std() > 2e-3  # 20 × the tolerance
        for layout in set(layouts) - {"padded"}:
            packed = module(PackedCollator(pad_id, backbone.encoder, layout == "prefix_shared")(pairs))
            torch.testing.assert_close(packed, padded, atol=1e-4, rtol=0, msg=f"{family} {layout}")


def plain_transformers(folder, texts: list[str], chat: bool = False) -> list[float]:
    """What a user without rewardlab computes: the saved tokenizer on the joined text, the saved classifier."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        return [model(**tokenizer(t, truncation=True, add_special_tokens=not chat, return_tensors="pt")).logits[0, 0]
                .item() for t in texts]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_checkpoint_trains_saves_and_scores_the_same_everywhere(family, checkpoint, tmp_path):
    """2 steps in the family's automatic layout; then `rewardlab eval` equals the in-training evaluation, and
    `RewardModel`, `rewardlab score`, `/get_reward`'s whole-text encoding and plain transformers on the joined
    text give the same rewards (1e-5)."""
    data = write_jsonl(tmp_path / "rows.jsonl", ROWS)
    recipe = load_recipe(None, [f"model.name={checkpoint(family)}", f"train_data={data}", f"eval_data={data}",
                                "max_length=64", "batch_size=4", "max_steps=2", "learning_rate=1e-3",
                                f"output_dir={tmp_path / 'out'}"])
    info = train(recipe)
    out = tmp_path / "out"
    assert main(["eval", str(out), "--data", str(data), "--json", str(tmp_path / "m.json")]) == 0
    evaluated = json.loads((tmp_path / "m.json").read_text())[str(data)]
    for key in ("accuracy", "mean_margin", "reward_mean", "reward_std"):
        assert evaluated[key] == pytest.approx(info["metrics"][key], abs=1e-5), key

    rm = RewardModel.load(str(out))
    prompts, responses = [r["prompt"] for r in ROWS], [r["chosen"] for r in ROWS]
    rewards = rm.score(prompts, responses)
    assert max(rewards) - min(rewards) > 5e-5  # 5 × the tolerance
    end = "" if family in ENCODERS else rm.tokenizer.eos_token
    joined = [p + r + end for p, r in zip(prompts, responses)]
    assert plain_transformers(out, joined) == pytest.approx(rewards, abs=1e-5)
    assert rm.score_texts(joined) == pytest.approx(rewards, abs=1e-5)
    assert main(["score", str(out), "--input", str(data), "--output", str(tmp_path / "s.jsonl")]) == 2  # no response
    rows = [{"prompt": p, "response": r} for p, r in zip(prompts, responses)]
    write_jsonl(tmp_path / "in.jsonl", rows)
    assert main(["score", str(out), "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "s.jsonl")]) == 0
    scored = [json.loads(line)["reward"] for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert scored == pytest.approx(rewards, abs=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_bfloat16_checkpoint_loads_float32_trained_weights(family, checkpoint):
    backbone = load_backbone(ModelSettings(name=str(checkpoint(family, torch.bfloat16))))
    assert {p.dtype for p in backbone.model.parameters()} == {torch.float32}
    assert backbone.dtypes == "trained weights float32"


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma2"])
def test_small_updates_to_a_bfloat16_checkpoint_are_not_rounded_away(family, checkpoint, tmp_path):
    """One AdamW step at lr 1e-6 moves every weight by about 1e-6, far below bfloat16's spacing near 1 (2^-7): in
    bfloat16 nothing would move; trained in float32 (the default) every touched weight moves by < 2^-7."""
    folder = checkpoint(family, torch.bfloat16)
    before = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1, dtype=torch.float32)
    data = write_jsonl(tmp_path / "rows.jsonl", ROWS[:4])
    recipe = load_recipe(None, [f"model.name={folder}", f"train_data={data}", "eval_data=null", "max_length=64",
                                "batch_size=4", "max_steps=1", "learning_rate=1e-6", f"output_dir={tmp_path / 'out'}"])
    train(recipe)
    after = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    assert after.dtype == torch.float32
    assert json.loads((tmp_path / "out" / "rewardlab.json").read_text())["dtype"] == "float32"
    weights = before.state_dict()
    moved = [name for name, w in after.state_dict().items() if "layers" in name and name in weights
             and w.dim() == 2 and not torch.equal(w, weights[name])]
    assert len(moved) >= 8
    for name in moved:
        assert (after.state_dict()[name] - weights[name]).abs().max() < 2 ** -7, name


def test_lora_keeps_frozen_weights_as_the_checkpoint_ships_them_and_saves_the_merge_in_float32(checkpoint, tmp_path):
    """`model.lora.frozen_dtype: checkpoint`: frozen bfloat16, adapters and head float32; the merged model is saved
    in float32, and plain transformers scores it as rewardlab scores the saved folder."""
    folder = checkpoint("llama", torch.bfloat16)
    settings = ModelSettings(name=str(folder))
    settings.lora.r, settings.lora.frozen_dtype = 4, "checkpoint"
    backbone = load_backbone(settings)
    assert backbone.dtypes == "trained weights float32, frozen weights bfloat16"
    assert {p.dtype for p in backbone.model.parameters() if p.requires_grad} == {torch.float32}
    data = write_jsonl(tmp_path / "rows.jsonl", ROWS)
    recipe = load_recipe(None, [f"model.name={folder}", f"train_data={data}", f"eval_data={data}", "max_length=64",
                                "batch_size=4", "max_steps=2", "learning_rate=1e-2", "model.lora.r=4",
                                "model.lora.frozen_dtype=checkpoint", f"output_dir={tmp_path / 'out'}"])
    info = train(recipe)
    assert math.isfinite(info["metrics"]["reward_mean"])
    saved = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    assert saved.dtype == torch.float32
    rm = RewardModel.load(str(tmp_path / "out"))
    prompts, responses = [r["prompt"] for r in ROWS[:6]], [r["chosen"] for r in ROWS[:6]]
    joined = [p + r + rm.tokenizer.eos_token for p, r in zip(prompts, responses)]
    assert plain_transformers(tmp_path / "out", joined) == pytest.approx(rm.score(prompts, responses), abs=1e-5)
