"""Block attention (rewardlab/attention.py): packed and prefix-shared rows attended block by block give the rewards
and gradients of the dense-mask path and of the padded path (fp32, 1e-4), on tiny random Llama, Qwen2, GPT-NeoX and
BERT models; families that cannot attend by blocks fall back to the dense mask and say why."""

import pytest
import torch
import torch.nn.functional as F
import transformers
from families import FAMILIES

from rewardlab.data.collate import PackedCollator, PadCollator
from rewardlab.data.encode import EncodedGroup, EncodedPair
from rewardlab.models.attention import AttentionBlocks, flex_blocks, sdpa_blocks
from rewardlab.models.reward import RewardNetwork

VOCAB = 300


def classifier(family: str, **overrides):
    """A tiny random ``family`` sequence classifier (one output, pad token 0), its head scaled up so that rewards
    differ between sequences by far more than the tolerance."""
    config_name, kwargs, _, _ = FAMILIES[family]
    config = getattr(transformers, config_name)(vocab_size=VOCAB, pad_token_id=0, num_labels=1,
                                                **dict(kwargs, **overrides))
    torch.manual_seed(0)
    model = getattr(transformers, config_name.removesuffix("Config") + "ForSequenceClassification")(config).eval()
    head = model.score if hasattr(model, "score") else model.classifier
    head.weight.data *= 30
    return model


def ids(n: int, generator: torch.Generator) -> list[int]:
    return torch.randint(5, VOCAB, (n,), generator=generator).tolist()


def examples(k: int) -> list:
    """Five examples of k responses (pairs when k = 2) with prompts of 1 to 9 tokens; one response is 1 token."""
    g = torch.Generator().manual_seed(k)
    rows = []
    for i, prompt in enumerate((7, 1, 9, 4, 3)):
        responses = [ids(1 if (i, j) == (1, 0) else 2 + (3 * i + 5 * j) % 6, g) for j in range(k)]
        if k == 2:
            rows.append(EncodedPair(ids(prompt, g), *responses))
        else:
            edges = [(a, b) for a in range(k) for b in range(a + 1, k)]
            rows.append(EncodedGroup(ids(prompt, g), responses, edges, [0.0] * len(edges), list(range(k))))
    return rows


def rewards_and_grads(module: RewardNetwork, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(n,) rewards and the gradient of a fixed weighting of them with respect to every parameter, flattened."""
    module.model.zero_grad(set_to_none=True)
    rewards = module(batch)
    weights = torch.linspace(-1, 1, rewards.shape[0])
    (rewards * weights).sum().backward()
    grads = torch.cat([p.grad.flatten() for p in module.model.parameters() if p.grad is not None])
    return rewards.detach(), grads


def assert_relative(actual: torch.Tensor, expected: torch.Tensor, tolerance: float = 1e-4):
    error = ((actual - expected).norm() / expected.norm()).item()
    assert error <= tolerance, f"relative error {error:.2e}"


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt_neox", "bert"])
def test_blocks_give_the_rewards_and_gradients_of_the_dense_and_padded_paths(family, k):
    model = classifier(family)
    encoder = family == "bert"
    data = examples(k)
    # eval(): BERT's dropout off (gradients still flow)
    padded_module, dense_module = (RewardNetwork(model, encoder, "dense").eval() for _ in range(2))
    blocks_module = RewardNetwork(model, encoder, "blocks").eval()
    assert blocks_module.attention() == ("blocks", "")
    padded, padded_grads = rewards_and_grads(padded_module, PadCollator(0, encoder)(data))
    assert padded.std() > 1e-2  # 100 × the tolerance: equality means something
    layouts = ["packed"] + ([] if encoder else ["prefix_shared"])
    for layout in layouts:
        share = layout == "prefix_shared"
        dense_batch = PackedCollator(0, encoder, share)(data)
        dense, dense_grads = rewards_and_grads(dense_module, dense_batch)
        # rows as wide as the longest unit (several, padding at their ends), and rows that need no padding
        for collate in (PackedCollator(0, encoder, share, dense_mask=False),
                        PackedCollator(0, encoder, share, attention_cost=0.0, dense_mask=False)):
            batch = collate(data)
            assert batch.attention_mask is None
            blocks, block_grads = rewards_and_grads(blocks_module, batch)
            torch.testing.assert_close(blocks, dense, atol=1e-4, rtol=0)
            torch.testing.assert_close(blocks, padded, atol=1e-4, rtol=0)
            assert_relative(block_grads, dense_grads)
            assert_relative(block_grads, padded_grads)
        assert (batch.input_ids == 0).sum() == 0 and (batch.blocks[:, 0].bincount() > 1).all()  # no padding
        assert len(batch.blocks) == len(data) * k  # a block per sequence, or per prompt + first response and later one


def test_prefix_shared_blocks_of_a_hand_made_batch():
    """prompt 3, chosen 2, rejected 1: one block of the prompt and the chosen tokens (0:5, causal over itself), one of
    the rejected token (5:6) that also sees the prompt keys 0:3. Packed: one block per sequence."""
    pair = EncodedPair(prompt_ids=[10, 11, 12], chosen_ids=[20, 21], rejected_ids=[30])
    shared = PackedCollator(pad_token_id=0, encoder=False, share_prompt=True)([pair])
    assert shared.blocks.tolist() == [[0, 0, 5, 0, 0], [0, 5, 6, 0, 3]]
    packed = PackedCollator(pad_token_id=0, encoder=False, share_prompt=False, attention_cost=0.0)([pair])
    assert packed.input_ids.tolist() == [[10, 11, 12, 20, 21, 10, 11, 12, 30]]
    assert packed.blocks.tolist() == [[0, 0, 5, 0, 0], [0, 5, 9, 5, 5]]


def dense_reference(query, key, value, allowed):
    """SDPA over the whole square with the boolean mask (GQA keys repeated)."""
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=allowed[:, None])


def hand_rows(causal: bool):
    """Two rows of 12 tokens, 4 query heads over 2 key heads. Row 0: left padding (0:2), a unit with a 3-token
    prompt (2:5) and responses 5:7 and 7:10, right padding (10:12). Row 1: sequences 0:4 and 4:5 (1 token), then
    7 tokens of padding. → (blocks, (2, 12, 12) allowed booleans on the real queries)."""
    blocks = [[0, 2, 7, 2, 2], [0, 7, 10, 2, 5], [1, 0, 4, 0, 0], [1, 4, 5, 4, 4]]
    allowed = torch.zeros(2, 12, 12, dtype=torch.bool)
    for row, start, end, p0, p1 in blocks:
        keys = torch.zeros(12, dtype=torch.bool)
        keys[p0:p1], keys[start:end] = True, True
        allowed[row, start:end] = keys
        if causal:
            allowed[row, start:end] &= torch.arange(12)[None, :] <= torch.arange(start, end)[:, None]
    return blocks, allowed


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("causal", [True, False])
def test_block_kernels_equal_the_dense_mask_with_left_and_right_padding(causal):
    blocks, allowed = hand_rows(causal)
    g = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(2, h, 12, 8, generator=g, requires_grad=True) for h in (4, 2, 2))
    real = allowed.any(-1)  # padding queries: no block, zero output, read by no one
    expected = dense_reference(query, key, value, allowed | ~real[:, :, None])
    out = sdpa_blocks(query, key, value, AttentionBlocks(blocks, 2, 12, causal), scaling=None)
    torch.testing.assert_close(out.transpose(1, 2)[real], expected.transpose(1, 2)[real], atol=1e-5, rtol=0)
    assert out.transpose(1, 2)[~real].abs().max() == 0
    grads = torch.autograd.grad((out * real[:, None, :, None]).square().sum(), (query, key, value))
    expected_grads = torch.autograd.grad((expected * real[:, None, :, None]).square().sum(), (query, key, value))
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # FlexAttention's path (CUDA) with the same blocks: its uncompiled forward runs on CPU
    flex = flex_blocks(query.detach(), key.detach(), value.detach(), AttentionBlocks(blocks, 2, 12, causal), None,
                       compiled=False)
    torch.testing.assert_close(flex.transpose(1, 2)[real], expected.transpose(1, 2)[real].detach(), atol=1e-5,
                               rtol=0)


def test_left_padded_plain_transformers_agree_with_blocks():
    """A left-padded batch through plain transformers (position ids counted from the first real token) gives the
    rewards the prefix-shared blocks give."""
    model = classifier("llama")
    data = examples(2)
    blocks = RewardNetwork(model, False, "blocks")
    with torch.no_grad():
        rewards = blocks(PackedCollator(0, False, True, attention_cost=0.0, dense_mask=False)(data))
        sequences = [e.prompt_ids + r for k in range(2) for e in data for r in [e.responses[k]]]
        width = max(map(len, sequences))
        input_ids = torch.tensor([[0] * (width - len(s)) + s for s in sequences])
        mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(s) for s in sequences])[:, None]).long()
        plain = model(input_ids=input_ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
    torch.testing.assert_close(rewards, plain.logits[:, 0], atol=1e-4, rtol=0)


def test_a_family_that_cannot_falls_back_to_the_dense_mask_and_says_why(capsys):
    """Mistral with a sliding window far shorter than the rows: block attention carries no window, so the probe
    keeps the dense mask (which applies the window by position), and asking for blocks is a recipe error."""
    from rewardlab.errors import RecipeError
    from rewardlab.tasks.reward import resolve_attention

    model = classifier("mistral", sliding_window=4)
    auto = RewardNetwork(model, False, "auto")
    attention, why = auto.attention()
    assert attention == "dense" and "sliding_window" in why
    assert model.config._attn_implementation == "sdpa"  # switched back
    assert resolve_attention(auto) == ("dense (packed, prefix_shared: MistralForSequenceClassification fails on block "
                                       "attention (NotImplementedError: block attention has no sliding_window "
                                       "(MistralAttention uses one)))")
    with pytest.raises(RecipeError, match="recipe key 'model.attention': blocks does not compute this model exactly"):
        resolve_attention(RewardNetwork(model, False, "blocks"))
    data = examples(2)
    padded = RewardNetwork(model, False, "dense")(PadCollator(0, False)(data))
    torch.testing.assert_close(auto(PackedCollator(0, False, True)(data)), padded, atol=1e-4, rtol=0)
    windowless = RewardNetwork(classifier("mistral", sliding_window=None), False)
    assert windowless.attention() == ("blocks", "")


@pytest.mark.slow
def test_training_logs_the_attention(tmp_path, capsys):
    from helpers import synthetic_rows, write_jsonl

    from rewardlab.config import load_recipe
    from rewardlab.training.loop import train

    data = write_jsonl(tmp_path / "train.jsonl", synthetic_rows(8))
    for attention, said in (("auto", "attention: blocks"), ("dense", "attention: dense (asked for)")):
        recipe = load_recipe(None, ["model.name=tiny-llama", f"train_data={data}", "eval_data=null", "max_steps=1",
                                    "batch_size=4", f"model.attention={attention}",
                                    f"output_dir={tmp_path / attention}"])
        train(recipe)
        captured = capsys.readouterr()
        assert said in captured.out + captured.err


def test_the_recipe_key_is_bounded():
    from rewardlab.config import load_recipe
    from rewardlab.errors import RecipeError

    with pytest.raises(RecipeError, match="recipe key 'model.attention': 'flash' is not allowed; choose one of: "
                                          "auto, dense, blocks"):
        load_recipe(None, ["model.attention=flash"])
    assert load_recipe(None, []).model.attention == "auto"
