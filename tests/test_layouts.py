"""Packed and prefix-shared batches give the rewards of the plain padded path (fp32, 1e-4)."""

import copy

import pytest
import torch
from helpers import synthetic_rows

from rewardlab.data.collate import PackedCollator, PadCollator
from rewardlab.data.encode import EncodedPair, EncodeReport, EncodingPolicy
from rewardlab.data.pairs import PreferencePair
from rewardlab.models.reward import RewardNetwork


def encoded_pairs(tiny, name, n=6):
    backbone = tiny[name]
    encoder = EncodingPolicy(backbone.tokenizer, backbone.encoder, max_length=128)
    rows = synthetic_rows(n, seed=3)
    # prompts and responses of different lengths, one response empty after the prompt (HH has such rows)
    pairs = [PreferencePair(r["prompt"] * (1 + i % 3), r["chosen"], r["rejected"]) for i, r in enumerate(rows)]
    pairs.append(PreferencePair("Tell me.", "", " no"))
    return [encoder.encode_pair(p, EncodeReport()) for p in pairs]


def scorer(tiny, name):
    """The tiny model with its head scaled up, so rewards differ by more than the tolerance."""
    model = copy.deepcopy(tiny[name].model).eval()
    head = model.score if hasattr(model, "score") else model.classifier
    head.weight.data *= 1000
    return RewardNetwork(model, tiny[name].encoder)


def rewards(model, collator, pairs):
    with torch.no_grad():
        return model(collator(pairs))


@pytest.mark.parametrize("name, share_prompt", [("tiny-llama", True), ("tiny-llama", False), ("tiny-gpt2", True),
                                                ("tiny-gpt2", False), ("tiny-bert", False)])
def test_layouts_equal_the_padded_path(tiny, name, share_prompt):
    pairs = encoded_pairs(tiny, name)
    pad_id, encoder = tiny[name].tokenizer.pad_token_id, tiny[name].encoder
    model = scorer(tiny, name)
    padded = rewards(model, PadCollator(pad_id, encoder), pairs)
    packed = rewards(model, PackedCollator(pad_id, encoder, share_prompt), pairs)
    assert padded.std() > 0.02  # the rewards differ between sequences, so equality means something
    torch.testing.assert_close(packed, padded, atol=1e-4, rtol=0)


def test_prefix_sharing_computes_the_prompt_once_and_restarts_positions(tiny):
    """prompt 3 tokens, chosen 2, rejected 1: one row of 6, rejected positions restart at 3; the rejected token
    sees the prompt but not the chosen tokens."""
    pair = EncodedPair(prompt_ids=[10, 11, 12], chosen_ids=[20, 21], rejected_ids=[30])
    batch = PackedCollator(pad_token_id=0, encoder=False, share_prompt=True)([pair])
    assert batch.input_ids.tolist() == [[10, 11, 12, 20, 21, 30]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 4, 3]]
    assert batch.attention_mask[0, 0, 5].tolist() == [True, True, True, False, False, True]
    assert batch.attention_mask[0, 0, 4].tolist() == [True, True, True, True, True, False]
    assert batch.score_index.tolist() == [4, 5]


def test_length_grouped_batches_are_homogeneous_and_seeded():
    from rewardlab.data.sampling import LengthGroupedSampler

    lengths = [i % 97 for i in range(400)]
    sampler = LengthGroupedSampler(lengths, batch_size=8, seed=0, chunk_batches=50)
    order = list(sampler)
    assert sorted(order) == list(range(400)) and order == list(sampler)
    spread = [max(lengths[i] for i in order[k:k + 8]) - min(lengths[i] for i in order[k:k + 8])
              for k in range(0, 400, 8)]
    assert sum(spread) / len(spread) < 10  # a plain shuffle spreads ~75 tokens within a batch
    sampler.set_epoch(1)
    assert list(sampler) != order


def test_prefix_sharing_on_an_encoder_is_a_recipe_error(tiny):
    from rewardlab.errors import RecipeError
    from rewardlab.tasks.reward import resolve_layout

    bert, llama = RewardNetwork(tiny["tiny-bert"].model, True), RewardNetwork(tiny["tiny-llama"].model, False)
    assert resolve_layout("auto", bert)[0] == "packed" and resolve_layout("auto", llama)[0] == "prefix_shared"
    with pytest.raises(RecipeError, match="prefix_shared needs a causal LM"):
        resolve_layout("prefix_shared", bert)


def test_checkpointing_a_fraction_of_the_layers_recomputes_those_only_and_keeps_the_gradients(tiny):
    """tiny-llama has 2 layers; 0.5 checkpoints the first: its MLP runs twice (the second time in the backward
    pass), the other layer's once, and every gradient equals the run without checkpointing."""
    from rewardlab.config import ModelSettings
    from rewardlab.models.loading import load_backbone

    pairs = encoded_pairs(tiny, "tiny-llama")
    batch = PackedCollator(tiny["tiny-llama"].tokenizer.pad_token_id, False, share_prompt=True)(pairs)
    grads, calls = {}, {}
    for fraction in (0.0, 0.5):
        model = load_backbone(ModelSettings(name="tiny-llama", gradient_checkpointing=fraction), seed=0).model.train()
        layers = model.model.layers
        assert [layer.gradient_checkpointing for layer in layers] == [fraction > 0, False]
        module = RewardNetwork(model, False)
        assert module.attention() == ("blocks", "")  # probed before counting (the probe runs forward passes)
        counts = [0, 0]
        for i, layer in enumerate(layers):
            layer.mlp.register_forward_pre_hook(lambda *_, i=i, counts=counts: counts.__setitem__(i, counts[i] + 1))
        module(batch).square().sum().backward()
        calls[fraction] = counts
        grads[fraction] = {n: p.grad for n, p in model.named_parameters()}
    assert calls == {0.0: [1, 1], 0.5: [2, 1]}
    for name, grad in grads[0.0].items():
        torch.testing.assert_close(grads[0.5][name], grad, atol=1e-6, rtol=1e-5)


def test_row_width_trades_padding_against_attention():
    """Units of 6, 4 and 3 tokens. Width 6: three rows (18 slots); width 7: [6] and [4, 3] (14 slots); width 13: one
    row, no padding, but every token attends over 13 slots. cost = slots × (1 + attention_cost × width)."""
    from rewardlab.data.collate import first_fit_decreasing, row_width

    assert first_fit_decreasing([6, 4, 3], 7) == [[0], [1, 2]]
    assert row_width([6, 4, 3], attention_cost=0.0) == 13  # 13 < 14 < 18
    assert row_width([6, 4, 3], attention_cost=1.0) == 7  # 14·8 = 112 < 18·7 = 126 < 13·14 = 182
    pairs = [EncodedPair(prompt_ids=[1] * n, chosen_ids=[2] * 2, rejected_ids=[3]) for n in (3, 2, 1)]
    batch = PackedCollator(pad_token_id=0, encoder=False, share_prompt=True, attention_cost=0.0)(pairs)
    assert batch.input_ids.shape == (1, 15)  # units of 6, 5 and 4 tokens in one row: no padding at all
    assert (batch.input_ids == 0).sum() == 0
