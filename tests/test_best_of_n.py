"""Best-of-n with the prompt computed once equals scoring every candidate with its prompt."""

import copy

import pytest

from rewardlab.inference.scorer import RewardModel


def reward_model(tiny, name, token_budget=None):
    model = copy.deepcopy(tiny[name].model)
    model.score.weight.data *= 1000  # rewards spread wider than the tolerance
    return RewardModel.of(model, tiny[name].tokenizer, tiny[name].encoder, token_budget=token_budget)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
@pytest.mark.parametrize("token_budget", [None, 60])  # 60: a few candidates a row, so several rows
def test_rank_computes_the_prompt_once_and_matches_one_by_one_scoring(tiny, name, token_budget):
    rm = reward_model(tiny, name, token_budget)
    prompt = "Which fruit is yellow and curved? Answer briefly."
    candidates = [" A banana.", " Bananas are yellow and curved.", " An apple.", " No idea", " Lemons? no: banana."]
    one_by_one = [rm.score([prompt], [c])[0] for c in candidates]
    shared = rm.score_candidates(prompt, candidates)
    assert max(one_by_one) - min(one_by_one) > 0.05
    assert shared == pytest.approx(one_by_one, abs=1e-4)
    ranking = rm.rank(prompt, candidates)
    assert [i for i, _ in ranking] == sorted(range(5), key=lambda i: -one_by_one[i])


def test_rank_of_conversations_shares_the_rendered_prompt(tiny):
    rm = reward_model(tiny, "tiny-llama")
    prompt = [{"role": "user", "content": "Say hi."}]
    candidates = ["Hi!", "Hello there.", "Go away."]
    assert rm.score_candidates(prompt, candidates) == pytest.approx(
        [rm.score([prompt], [c])[0] for c in candidates], abs=1e-4)


def test_a_candidate_of_pad_tokens_only_is_read_where_the_prompt_ends(tiny):
    """With the EOS as pad token (as many causal LMs set it), an empty candidate is just that token, and the
    rightmost non-pad token is the prompt's last: shared scoring reads it from the prompt pass, like one-by-one."""
    model = copy.deepcopy(tiny["tiny-llama"].model)
    model.score.weight.data *= 1000
    tokenizer = copy.deepcopy(tiny["tiny-llama"].tokenizer)
    tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    rm = RewardModel.of(model, tokenizer, encoder=False)
    prompt, candidates = "Which fruit is yellow?", ["", " A banana.", " no"]
    assert rm.encode(prompt, "")[-1] == tokenizer.pad_token_id
    one_by_one = [rm.score([prompt], [c])[0] for c in candidates]
    assert rm.score_candidates(prompt, candidates) == pytest.approx(one_by_one, abs=1e-4)
