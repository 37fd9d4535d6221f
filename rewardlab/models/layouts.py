"""Which batch layouts and which attention a model computes exactly, probed numerically once, and the collator
of the layout chosen."""

from __future__ import annotations

from typing import get_args

import torch
from torch import nn

from rewardlab.config.recipe import Layout
from rewardlab.data.collate import PackedCollator, PadCollator, PairBatch
from rewardlab.data.encode import EncodedPair
from rewardlab.errors import RecipeError
from rewardlab.models.attention import IMPLEMENTATION, AttentionBlocks
from rewardlab.models.setup import attention_cost

LAYOUTS = tuple(layout for layout in get_args(Layout) if layout != "auto")  # what "auto" chooses among


def _probe_pairs(vocab_size: int, avoid: set[int]) -> list[EncodedPair]:
    """Two pairs of random ids (seeded), of different lengths, none of them a special token."""
    generator = torch.Generator().manual_seed(0)
    ids = [i for i in torch.randint(0, vocab_size, (64,), generator=generator).tolist() if i not in avoid]

    def take(n):
        taken, ids[:] = ids[:n], ids[n:]
        return taken

    return [EncodedPair(take(5), take(3), take(2)), EncodedPair(take(2), take(4), take(1))]


def _probe_all(module: nn.Module, dense_mask: bool, blocks: bool) -> list[tuple[str, str]]:
    """(layout, what went wrong or '') for each packed layout's probe batch against the padded path: hidden states of
    the reward tokens (relative error, 1e-4 in fp32, 3e-2 in 16-bit) and rewards; by blocks when ``blocks``."""
    classifier = module.classifier
    tokenizer_specials = {t for t in (classifier.config.pad_token_id, getattr(classifier.config, "bos_token_id", None),
                                      getattr(classifier.config, "eos_token_id", None)) if isinstance(t, int)}
    pairs = _probe_pairs(classifier.get_input_embeddings().weight.shape[0], tokenizer_specials | {0, 1, 2, 3})
    tolerance = 1e-4 if module.dtype == torch.float32 else 3e-2
    collate = lambda share: PackedCollator(module.pad_token_id, module.encoder, share, dense_mask=dense_mask)  # noqa: E731
    candidates = [("packed", collate(False))] + ([] if module.encoder else [("prefix_shared", collate(True))])
    was_training = module.training
    module.eval()
    results = []
    try:
        with torch.no_grad():
            padded = PadCollator(module.pad_token_id, module.encoder)(pairs).to(module.device)
            hidden = classifier.base_model(input_ids=padded.input_ids,
                                           attention_mask=padded.attention_mask).last_hidden_state
            reference = hidden.reshape(-1, hidden.shape[-1])[padded.score_index]
            reference_rewards = module.padded(padded.input_ids, padded.attention_mask)
            for name, collator in candidates:
                batch = collator(pairs).to(module.device)
                attention = AttentionBlocks.of(batch.blocks, batch.input_ids, not module.encoder) if blocks else None
                problem = _probe(module, batch, reference, reference_rewards, tolerance, attention)
                if not problem and attention is not None and attention.calls == 0:
                    problem = f"{type(classifier).__name__} does not pass the blocks to its attention function"
                results.append((name, problem))
    finally:
        module.train(was_training)
    return results


def probe_layouts(module: nn.Module) -> tuple[tuple[str, ...], str]:
    """Which layouts give the padded path's results on this model, in the way it attends (:func:`probe_attention`).
    Returns (layouts, the reason the others were left out, or '')."""
    blocks = module.attention()[0] == "blocks"
    results = _probe_all(module, dense_mask=not blocks, blocks=blocks)
    supported = ["padded"] + [name for name, problem in results if not problem]
    return tuple(supported), "; ".join(f"{name}: {problem}" for name, problem in results if problem)


def probe_attention(module: nn.Module) -> tuple[str, str]:
    """``blocks`` where the model's attention is transformers' SDPA (what block attention replaces) and, switched to
    :data:`rewardlab.models.attention.IMPLEMENTATION`, every packed layout's probe batch reaches it and gives the padded
    path's results; else ``dense`` (the model switched back), with the reason."""
    classifier = module.classifier
    name, current = type(classifier).__name__, classifier.config._attn_implementation
    if current not in ("sdpa", IMPLEMENTATION):
        return "dense", f"{name} attends with {current}, not sdpa"
    try:
        classifier.set_attn_implementation(IMPLEMENTATION)
    except (ValueError, KeyError, NotImplementedError) as e:  # a model that takes no registered implementation
        return "dense", f"{name} takes no custom attention function ({str(e)[:120]})"
    if classifier.config._attn_implementation != IMPLEMENTATION:  # transformers only warns
        return "dense", f"{name} does not attend through transformers' AttentionInterface"
    problems: dict[str, list[str]] = {}
    for layout, problem in _probe_all(module, dense_mask=False, blocks=True):
        if problem:
            problems.setdefault(problem, []).append(layout)
    if problems:
        classifier.set_attn_implementation("sdpa")  # what it attended with (a second probe finds IMPLEMENTATION)
        return "dense", "; ".join(f"{', '.join(layouts)}: {problem}" for problem, layouts in problems.items())
    return "blocks", ""


def _probe(module: nn.Module, batch: PairBatch, reference: torch.Tensor, reference_rewards: torch.Tensor,
           tolerance: float, blocks: AttentionBlocks | None = None) -> str:
    """'' when ``batch`` gives the reference hidden states and rewards (by ``blocks`` when given), else what went
    wrong."""
    classifier = module.classifier
    try:
        states = module.packed_states(batch.input_ids, batch.attention_mask, batch.position_ids, blocks)
        states = states[batch.score_index]
        rewards = module.head(states)
    except Exception as e:  # an attention that cannot take a 4-D mask (or blocks), an unknown head: not this layout
        how = "block attention" if blocks is not None else "an explicit attention mask"
        return f"{type(classifier).__name__} fails on {how} ({type(e).__name__}: {str(e)[:120]})"
    error = ((states.float() - reference.float()).norm() / reference.float().norm().clamp(min=1e-12)).item()
    if not error <= tolerance:
        return (f"{type(classifier).__name__} does not honour an explicit attention mask and position ids "
                f"(hidden states differ from the padded path's by {error:.2g})")
    scale = reference_rewards.float().abs().max().clamp(min=1e-12)
    reward_error = ((rewards.float() - reference_rewards.float()).abs().max() / scale).item()
    if not reward_error <= tolerance:
        return (f"the head of {type(classifier).__name__} is not the one rewardlab applies (rewards differ by "
                f"{reward_error:.2g})")
    return ""


def resolve_layout(layout: str, module: nn.Module, key: str = "recipe key 'layout'") -> tuple[str, str]:
    """(the layout to use, a note for the log). ``auto`` → prefix sharing for causal LMs (exact there), packing for
    encoders (whose prompt tokens see the response, so they cannot share a prompt), each where the model computes it
    exactly (:func:`rewardlab.models.reward.probe_layouts`), else ``padded``."""
    if layout == "prefix_shared" and module.encoder:
        raise RecipeError(f"{key}: prefix_shared needs a causal LM; this backbone is an encoder "
                          "(choose one of: auto, padded, packed)")
    if layout == "padded":
        return layout, ""
    supported, why = module.layouts()
    if layout == "auto":
        preferred = "packed" if module.encoder else "prefix_shared"
        chosen = next(name for name in (preferred, "packed", "padded") if name in supported)
        return chosen, "auto" + (f"; {why}" if chosen != preferred else "")
    if layout not in supported:
        raise RecipeError(f"{key}: {layout} does not compute this model exactly ({why}); choose one "
                          f"of: auto, {', '.join(name for name in LAYOUTS if name in supported)}")
    return layout, ""


def resolve_attention(module: nn.Module, key: str = "recipe key 'model.attention'") -> str:
    """A note for the log on how packed rows attend; ``blocks`` on a model that cannot is a recipe error."""
    attention, why = module.attention()
    if module.wanted_attention == "blocks" and attention != "blocks":
        raise RecipeError(f"{key}: blocks does not compute this model exactly ({why}); choose one of: auto, dense")
    return attention + (f" ({why})" if why else "")


def make_collator(layout: str, module: nn.Module):
    """The collator of ``layout``. Rows attended by blocks cost no attention for their width, so they are as wide
    as the batch (no padding) and carry no (s, s) mask."""
    if layout == "padded":
        return PadCollator(module.pad_token_id, module.encoder)
    blocks = module.attention()[0] == "blocks"
    return PackedCollator(module.pad_token_id, module.encoder, layout == "prefix_shared",
                          0.0 if blocks else attention_cost(module.classifier), dense_mask=not blocks)
