"""The tokens a saved model is scored on are the tokens it was trained on, with real tokenizers (byte-level BPE,
SentencePiece-style Unigram, WordPiece): training, `rewardlab eval`, `rewardlab score`, `/get_reward` and plain
transformers on the joined text give the same reward for the same row (1e-5, fp32)."""

import json

import pytest
import torch
from families import TOKENIZERS, build_checkpoint
from fastapi.testclient import TestClient
from helpers import REPO, write_jsonl
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rewardlab.cli import main
from rewardlab.config import load_recipe
from rewardlab.data.encode import EncodeReport, EncodingPolicy
from rewardlab.data.examples import load_pairs
from rewardlab.data.pairs import parse_row
from rewardlab.evaluation.preferences import score_pairs
from rewardlab.inference.scorer import RewardModel
from rewardlab.inference.server import create_app
from rewardlab.tasks import reward as reward_task
from rewardlab.tasks.reward import make_collator, resolve_layout
from rewardlab.training.loop import train

ROWS = [json.loads(line) for line in (REPO / "data" / "prefs-dev.jsonl").read_text().splitlines()[:16]]
# HH-style rows: the prompt ends in "Assistant:", the response starts with a space; and one cut past max_length
# (its chosen response is the longer one, so the pair cuts its prompt as scoring it alone does)
ROWS += [{"prompt": "\n\nHuman: Where is Paris?\n\nAssistant:", "chosen": " In France.", "rejected": " No idea."},
         {"prompt": "Tell me a story. " * 80, "chosen": "Once upon a time there was a fox.", "rejected": "No."}]
CHAT = [{"prompt": [{"role": "user", "content": r["prompt"]}],
         "chosen": [{"role": "assistant", "content": r["chosen"]}],
         "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in ROWS[:6]]


def trained(tmp_path, family: str, tokenizer_kind: str, rows: list[dict], monkeypatch):
    """(saved folder, the chosen rewards the training loop's final evaluation computed for ``rows``)."""
    folder = build_checkpoint(family, tmp_path / "checkpoint", TOKENIZERS[tokenizer_kind](), torch.float32)
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    recipe = load_recipe(None, [f"model.name={folder}", f"train_data={data}", f"eval_data={data}", "max_length=192",
                                "batch_size=4", "max_steps=2", "learning_rate=1e-3", f"output_dir={tmp_path / 'out'}"])
    seen = {}
    real_save = reward_task.RewardTask.save

    def save(task, *args):
        seen["chosen"] = task.rewards[0]
        return real_save(task, *args)

    monkeypatch.setattr(reward_task.RewardTask, "save", save)
    train(recipe)
    return tmp_path / "out", data, seen["chosen"]


def plain_transformers(folder, texts: list[str], chat: bool) -> list[float]:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        return [model(**tokenizer(t, truncation=True, add_special_tokens=not chat, return_tensors="pt"))
                .logits[0, 0].item() for t in texts]


def other_paths(folder, data, tmp_path, prompts, responses, joined, chat: bool) -> dict[str, list[float]]:
    rm = RewardModel.load(str(folder))
    layout, _ = resolve_layout("auto", rm.network)
    encoded = load_pairs(str(data), "train", rm.policy, lambda _: None)
    evaluated, _ = score_pairs(rm.network, encoded, make_collator(layout, rm.network), 4, "cpu")  # rewardlab eval
    score_in = write_jsonl(tmp_path / "score.jsonl", [{"prompt": p, "response": r} for p, r in zip(prompts, responses)])
    assert main(["score", str(folder), "--input", str(score_in), "--output", str(tmp_path / "scored.jsonl")]) == 0
    scored = [json.loads(line)["reward"] for line in (tmp_path / "scored.jsonl").read_text().splitlines()]
    with TestClient(create_app(rm)) as client:
        served = client.post("/get_reward", json={"query": joined}).json()["rewards"]
    return {"rewardlab eval": evaluated, "rewardlab score": scored, "/get_reward": served,
            "plain transformers": plain_transformers(folder, joined, chat)}


@pytest.mark.parametrize("family, tokenizer_kind", [("llama", "unigram"), ("qwen2", "bpe"), ("bert", "wordpiece"),
                                                    ("roberta", "roberta-bpe")])
def test_plain_rows_score_the_same_everywhere(tmp_path, monkeypatch, family, tokenizer_kind):
    folder, data, training = trained(tmp_path, family, tokenizer_kind, ROWS, monkeypatch)
    eos = AutoTokenizer.from_pretrained(folder).eos_token if family in ("llama", "qwen2") else ""
    prompts, responses = [r["prompt"] for r in ROWS], [r["chosen"] for r in ROWS]
    joined = [p + r + eos for p, r in zip(prompts, responses)]
    assert max(training) - min(training) > 5e-5
    for path, rewards in other_paths(folder, data, tmp_path, prompts, responses, joined, chat=False).items():
        assert rewards == pytest.approx(training, abs=1e-5), path


@pytest.mark.parametrize("family, tokenizer_kind", [("llama", "unigram"), ("qwen2", "bpe")])
def test_conversations_score_the_same_everywhere(tmp_path, monkeypatch, family, tokenizer_kind):
    """Plain transformers renders the conversation with the chat template and tokenizes it as it stands (what
    `apply_chat_template(tokenize=True)` does); `/get_reward` gets that rendered text."""
    folder, data, training = trained(tmp_path, family, tokenizer_kind, CHAT, monkeypatch)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    joined = [tokenizer.apply_chat_template(r["prompt"] + r["chosen"], tokenize=False) for r in CHAT]
    prompts, responses = [r["prompt"] for r in CHAT], [r["chosen"] for r in CHAT]
    for path, rewards in other_paths(folder, data, tmp_path, prompts, responses, joined, chat=True).items():
        assert rewards == pytest.approx(training, abs=1e-5), path


@pytest.mark.parametrize("tokenizer_kind", ["bpe", "unigram", "wordpiece"])
def test_the_pair_shares_exactly_the_common_ids_of_its_two_joined_texts(tokenizer_kind):
    """The prompt a pair shares is the common prefix of the two joined texts' ids, not the prompt tokenized alone,
    so each sequence is exactly its joined text's tokens (the seam may merge differently from the prompt alone)."""
    tokenizer = TOKENIZERS[tokenizer_kind]()
    policy = EncodingPolicy(tokenizer, encoder=tokenizer_kind == "wordpiece", max_length=512)
    for row in ROWS[:-1]:
        pair = policy.encode_pair(parse_row(row, "t", None), EncodeReport())
        _, chosen, rejected = policy.pair_texts(parse_row(row, "t", None))
        assert pair.prompt_ids + pair.chosen_ids == tokenizer(chosen)["input_ids"]
        assert pair.prompt_ids + pair.rejected_ids == tokenizer(rejected)["input_ids"]


def test_separately_tokenized_prompts_would_differ_at_the_seam():
    """Why joint tokens: SentencePiece marks a word start with "▁", so a response tokenized alone starts with a
    token that the joined text ("...advance.Take off") never has."""
    tokenizer = TOKENIZERS["unigram"]()
    prompt, response = "How do I fix a flat bike tire? Thanks in advance.", "Take off the wheel."
    separate = tokenizer(prompt)["input_ids"] + tokenizer(response, add_special_tokens=False)["input_ids"]
    assert separate != tokenizer(prompt + response)["input_ids"]
