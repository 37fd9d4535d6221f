import random

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from rewardlab.data.collate import PadCollator
from rewardlab.data.encode import EncodingPolicy
from rewardlab.data.pairs import parse_row
from rewardlab.errors import ScoringError
from rewardlab.evaluation.preferences import score_pairs
from rewardlab.inference.scorer import RewardModel
from rewardlab.models.saved import save_reward_model


def varied_inputs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Prompts and responses of very different lengths, in random order (some prompts past max_length)."""
    rng = random.Random(seed)
    prompts = [f"Q{i}: " + "word " * rng.randint(0, 20) for i in range(n)]
    responses = [" reply" * rng.randint(0, 8) + f" {i}" for i in range(n)]
    return prompts, responses


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-bert"])
def test_token_budget_batches_equal_one_at_a_time_in_input_order(tiny, name):
    b = tiny[name]
    rm = RewardModel.of(b.model, b.tokenizer, b.encoder, max_length=64, token_budget=256)
    prompts, responses = varied_inputs(40)
    sequences = [rm.encode(p, r) for p, r in zip(prompts, responses)]
    batches = rm.batches([len(s) for s in sequences])
    assert 1 < len(batches) < 40 and sorted(i for batch in batches for i in batch) == list(range(40))
    assert all(len(batch) * max(len(sequences[i]) for i in batch) <= 256 for batch in batches)

    one_at_a_time = [rm.forward([s])[0][0] for s in sequences]  # one member, one sequence
    assert rm.score(prompts, responses) == pytest.approx(one_at_a_time, abs=1e-5)


def test_batches_keep_to_the_budget_and_the_minimum_fill(tiny):
    b = tiny["tiny-llama"]
    rm = RewardModel.of(b.model, b.tokenizer, b.encoder, token_budget=250)
    rm.min_fill = 0.5
    assert rm.batches([100] * 5) == [[0, 1], [2, 3], [4]]  # 2 × 100 ≤ 250 < 3 × 100
    rm.token_budget = 1000
    # longest first; a row no longer than half the batch's width starts a new batch
    assert rm.batches([50, 100, 10, 90, 40]) == [[1, 3], [0, 4], [2]]
    assert rm.batches([600, 700]) == [[1], [0]]  # each alone: 2 × 700 > 1000
    rm.min_fill = 0.9
    assert rm.batches([50, 100, 10, 95, 46]) == [[1, 3], [0, 4], [2]]
    assert rm.batches([100, 90]) == [[0], [1]]


def test_scores_are_plain_transformers_on_training_encoding(tiny, tmp_path):
    """Hand-built ids (BOS + prompt + response + EOS) through the reloaded folder in plain transformers, one at a
    time, give the scores; and they equal the rewards evaluation computes for the same pairs."""
    b = tiny["tiny-llama"]
    folder = save_reward_model(b.model, b.tokenizer, tmp_path, {}, {"max_length": 64})
    rm = RewardModel.load(str(folder))
    prompts, responses = varied_inputs(12, seed=1)
    scores = rm.score(prompts, responses)

    plain = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = b.tokenizer
    for prompt, response, score in zip(prompts, responses, scores):
        ids = [tok.bos_token_id] + tok(prompt, add_special_tokens=False)["input_ids"]
        ids += tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids = ids[:1] + ids[max(1, len(ids) - 64 + 1) :] if len(ids) > 64 else ids  # the prompt cut from the left
        with torch.no_grad():
            assert plain(input_ids=torch.tensor([ids])).logits[0, 0].item() == pytest.approx(score, abs=1e-5)

    encoder = EncodingPolicy(tok, False, 64)  # rejected = chosen, so the pair cuts the prompt as a single response does
    pairs, _ = encoder.encode_pairs([parse_row({"prompt": p, "chosen": r, "rejected": r}, "t", None)
                                     for p, r in zip(prompts, responses)])
    chosen, _ = score_pairs(rm.network, pairs, PadCollator(tok.pad_token_id, False), 4, "cpu")
    assert chosen == pytest.approx(scores, abs=1e-5)


def test_long_prompt_is_cut_from_the_left_and_response_kept(tiny):
    b = tiny["tiny-llama"]
    rm = RewardModel.of(b.model, b.tokenizer, b.encoder, max_length=32)
    ids = rm.encode("x" * 100, " the answer")
    response = b.tokenizer(" the answer", add_special_tokens=False)["input_ids"] + [b.tokenizer.eos_token_id]
    assert len(ids) == 32 and ids[0] == b.tokenizer.bos_token_id and ids[-len(response) :] == response
    assert rm.report.truncated_prompt == 1


def test_chat_inputs_encode_like_conversational_training_rows(tiny):
    b = tiny["tiny-llama"]
    rm = RewardModel.of(b.model, b.tokenizer, b.encoder)
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    reply = [{"role": "assistant", "content": "Hello."}]

    def render(messages, prompt_only):
        return b.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt_only)

    pair = EncodingPolicy(b.tokenizer, False, 512).encode_pair(
        parse_row({"prompt": prompt, "chosen": reply, "rejected": [{"role": "assistant", "content": "No."}]}, "t",
                  render), None)
    assert rm.encode(prompt, reply) == pair.prompt_ids + pair.chosen_ids
    assert rm.encode(prompt, "Hello.") == pair.prompt_ids + pair.chosen_ids  # a string reply is the assistant's
    assert rm.score([prompt], ["Hello."]) == pytest.approx(rm.score([prompt], [reply]))
    with pytest.raises(ScoringError, match="list of {role, content} messages"):
        rm.encode("plain prompt", reply)


def test_whole_texts_do_not_double_special_tokens(tiny):
    b = tiny["tiny-llama"]
    rm = RewardModel.of(b.model, b.tokenizer, b.encoder)
    plain = rm.encode("", "Q: hi A: yo")
    assert rm.encode_text("<s>Q: hi A: yo</s><pad><pad>") == rm.encode_text("Q: hi A: yo") == plain
    assert rm.score_texts(["Q: hi A: yo"]) == pytest.approx(rm.score([""], ["Q: hi A: yo"]))


def test_normalize_uses_saved_statistics(tiny):
    b = tiny["tiny-llama"]
    rm = RewardModel.of(b.model, b.tokenizer, b.encoder, {"reward_mean": 0.5, "reward_std": 2.0})
    raw = rm.score(["a", "b"], [" c", " d"])
    assert rm.score(["a", "b"], [" c", " d"], normalize=True) == pytest.approx([(r - 0.5) / 2.0 for r in raw])
    with pytest.raises(ScoringError, match="reward mean and std"):
        RewardModel.of(b.model, b.tokenizer, b.encoder).score(["a"], [" c"], normalize=True)


def test_rank_orders_candidates_best_first(tiny):
    b = tiny["tiny-bert"]
    rm = RewardModel.of(b.model, b.tokenizer, b.encoder)
    candidates = [" one", " two two", " three three three", " four"]
    scores = rm.score(["Pick:"] * 4, candidates)
    ranking = rm.rank("Pick:", candidates)
    assert [i for i, _ in ranking] == sorted(range(4), key=lambda i: -scores[i])
    assert [r for _, r in ranking] == pytest.approx(sorted(scores, reverse=True))


def test_bad_inputs_are_clear_errors(tiny):
    b = tiny["tiny-llama"]
    rm = RewardModel.of(b.model, b.tokenizer, b.encoder)
    with pytest.raises(ScoringError, match="2 prompts but 1 responses"):
        rm.score(["a", "b"], ["c"])
    with pytest.raises(ScoringError, match="must be lists"):
        rm.score("a", "b")
