"""The reward model: a transformers sequence classifier whose one ``forward(batch)`` reads one reward per sequence
in every batch layout. The only place a reward is read, for training, evaluation, scoring, best-of-n and serving.

- ``padded`` batches go through the model's own forward, so the reward is exactly what plain transformers computes.
- ``packed`` and ``prefix_shared`` batches run the backbone with their own attention mask and position ids, then
  apply the model's head to the hidden states of the reward tokens (:func:`head_rewards`, one rule per head shape).
- Best-of-n (:meth:`RewardModule.shared_prompt_rewards`) runs the prompt once and the candidates on its KV cache.

Which layouts a model supports is a capability, decided when it is first needed (:func:`probe_layouts`): a packed
and a prefix-shared probe batch must give the padded path's hidden states and rewards. Models whose attention does
not honour an explicit mask or position ids (DeBERTa, ModernBERT, flash attention) get ``padded``, and say why.

How packed rows attend is decided the same way (:func:`probe_attention`): ``blocks`` (:mod:`rewardlab.attention`,
each block of a row on its own) where the model's SDPA attention can be replaced and gives the padded path's
results, else ``dense`` (the whole (s, s) mask to the model's attention), with the reason.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from rewardlab.attention import BLOCKS_KWARG, IMPLEMENTATION, AttentionBlocks
from rewardlab.data.collate import PackedCollator, PadCollator, PairBatch, attention_mask, pad_sequences, reward_token
from rewardlab.data.encode import EncodedPair

LAYOUTS = ("padded", "packed", "prefix_shared")
ATTENTION = ("auto", "dense", "blocks")


def _unwrapped(module: nn.Module) -> nn.Module:
    """peft's ``ModulesToSaveWrapper`` around a trained head → the head it wraps (to see its type)."""
    return getattr(module, "original_module", module)


def head_rewards(classifier: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Apply a sequence-classification head to the (n, d) hidden states of the reward tokens → (n, labels).

    Transformers' heads come in a few shapes: a linear map of the last token (``score``: Llama, Qwen2, Mistral,
    Gemma, Phi-3, GPT-2, GPT-NeoX, ...); BERT's pooler + linear; DeBERTa's context pooler + linear; DistilBERT's
    pre-classifier + ReLU + linear; ModernBERT's head + linear (``classifier_pooling: cls``); and RoBERTa's and
    ELECTRA's head modules that read position 0 of a sequence themselves."""
    if hasattr(classifier, "score"):
        return classifier.score(hidden)
    head = _unwrapped(classifier.classifier)
    if hasattr(classifier, "pre_classifier"):  # DistilBERT
        return classifier.classifier(classifier.dropout(torch.relu(classifier.pre_classifier(hidden))))
    if not isinstance(head, nn.Linear):  # RoBERTa, ELECTRA, XLM-R, ...: the head takes the sequence
        return classifier.classifier(hidden[:, None, :])
    if hasattr(classifier, "pooler"):  # DeBERTa: ContextPooler on the first token
        return classifier.classifier(classifier.dropout(classifier.pooler(hidden[:, None, :])))
    pooler = getattr(classifier.base_model, "pooler", None)
    if pooler is not None:  # BERT: pooler on [CLS]
        return classifier.classifier(classifier.dropout(pooler(hidden[:, None, :])))
    if hasattr(classifier, "head") and getattr(classifier.config, "classifier_pooling", "cls") == "cls":  # ModernBERT
        return classifier.classifier(classifier.drop(classifier.head(hidden)))
    raise NotImplementedError(f"rewardlab does not know the head of {type(classifier).__name__}")


def output_layer(classifier: nn.Module) -> nn.Linear:
    """The head's last linear map, whose rows are the model's outputs (the trained copy under peft)."""
    head = getattr(classifier, "score", None) or classifier.classifier
    head = getattr(head, "modules_to_save", {}).get("default", head) if hasattr(head, "modules_to_save") else head
    head = _unwrapped(head)
    return head if isinstance(head, nn.Linear) else head.out_proj


def keep_outputs(classifier: nn.Module, rows: list[int]) -> None:
    """Keep only the outputs ``rows`` of a (merged, unwrapped) sequence classifier: ODIN keeps its quality head."""
    layer = output_layer(classifier)
    layer.weight = nn.Parameter(layer.weight.data[rows].clone())
    if layer.bias is not None:
        layer.bias = nn.Parameter(layer.bias.data[rows].clone())
    layer.out_features = len(rows)
    classifier.config.num_labels = len(rows)
    classifier.num_labels = len(rows)


def position_offset(classifier: nn.Module) -> int:
    """Where the model's position ids start: 0, except RoBERTa-style embeddings, which count from
    ``padding_idx + 1`` (fairseq's convention)."""
    embeddings = getattr(classifier.base_model, "embeddings", None)
    if embeddings is not None and hasattr(embeddings, "create_position_ids_from_input_ids"):
        return embeddings.padding_idx + 1
    return 0


def additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean → additive mask, once per batch (not converted by every attention layer and kept for its backward)."""
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)


def packed_masks(config, allowed: torch.Tensor, position_ids: torch.Tensor, encoder: bool, dtype: torch.dtype):
    """The additive attention mask(s) of packed rows. A model with sliding-window layers (Gemma 2, Mistral,
    ModernBERT, ...) applies its window only to the masks it builds itself, so here the window is applied by
    position (the distance within a sequence, as in its padded row): one mask for every layer, or one per layer
    type (``{"full_attention", "sliding_attention"}``), as transformers' models take them."""
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None) or []
    if not window or (layer_types and "sliding_attention" not in layer_types):
        return additive(allowed, dtype)
    q, k = position_ids[:, None, :, None], position_ids[:, None, None, :]
    # transformers' overlays: causal kv > q − window; bidirectional |q − kv| ≤ window
    near = (q - k).abs() <= window if encoder else k > q - window
    windowed = additive(allowed & near, dtype)
    if not layer_types:  # every layer slides (Mistral, Phi-3 with a window)
        return windowed
    return {"full_attention": additive(allowed, dtype), "sliding_attention": windowed}


class RewardModule(nn.Module):
    """A reward model as one module: ``forward(batch)`` → (2b,) rewards (chosen first) in any layout.

    Args:
        model: a transformers ``...ForSequenceClassification`` with one output, possibly wrapped by peft.
        encoder: True for bidirectional encoders (reward at the first token), False for causal LMs.
        attention: how packed rows attend: ``blocks`` (each block of a row on its own, :mod:`rewardlab.attention`),
            ``dense`` (the whole mask to the model's attention) or ``auto`` (blocks where the model computes them
            exactly; see :meth:`attention`).

    One forward is also what data parallelism (DDP) needs to synchronise gradients.
    """

    def __init__(self, model: nn.Module, encoder: bool, attention: str = "auto"):
        super().__init__()
        if attention not in ATTENTION:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION)}, not {attention!r}")
        self.model, self.encoder, self.wanted_attention = model, encoder, attention
        # The model's layer classes, for FSDP's transformer-based wrapping (one shard group per layer).
        self._no_split_modules = getattr(self.classifier, "_no_split_modules", None) or []
        self._layouts: tuple[tuple[str, ...], str] | None = None
        self._attention: tuple[str, str] | None = None

    @property
    def classifier(self) -> nn.Module:
        """The transformers sequence classifier (peft's wrapper removed)."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    @property
    def pad_token_id(self) -> int | None:
        return self.classifier.config.pad_token_id

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.classifier.get_input_embeddings().weight.dtype

    def layouts(self) -> tuple[tuple[str, ...], str]:
        """(the layouts this model computes exactly, why it is limited to ``padded`` or ''), probed once."""
        if self._layouts is None:
            self.attention()
            self._layouts = probe_layouts(self)
        return self._layouts

    def attention(self) -> tuple[str, str]:
        """(``blocks`` or ``dense``: how packed rows attend, why not ``blocks`` or ''), probed once."""
        if self._attention is None:
            self._attention = ("dense", "asked for") if self.wanted_attention == "dense" else probe_attention(self)
        return self._attention

    def forward(self, batch: PairBatch) -> torch.Tensor:
        if batch.position_ids is None:
            return self.padded(batch.input_ids, batch.attention_mask)
        return self.packed(batch.input_ids, batch.attention_mask, batch.position_ids, batch.score_index,
                           batch.blocks)

    def padded(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(n,) rewards of n right-padded rows, through the model's own head (so plain transformers agrees)."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits.squeeze(-1)

    def packed(self, input_ids: torch.Tensor, allowed: torch.Tensor | None, position_ids: torch.Tensor,
               score_index: torch.Tensor, blocks: torch.Tensor | None = None) -> torch.Tensor:
        """Rewards at the flat positions ``score_index`` of packed rows: ``allowed`` (r, 1, s, s) booleans say which
        key each query sees, ``blocks`` (k, 5) the same as attention blocks (read when the model attends by blocks:
        :meth:`attention`), ``position_ids`` (r, s) restart per sequence."""
        by_blocks = blocks is not None and self.attention()[0] == "blocks"
        if allowed is None and not by_blocks:
            raise ValueError("a batch without its attention mask (collated for block attention) reached a model that "
                             f"attends densely ({self.attention()[1]})")
        blocks = AttentionBlocks.of(blocks, input_ids, causal=not self.encoder) if by_blocks else None
        return self.head(self.packed_states(input_ids, allowed, position_ids, blocks)[score_index])

    def packed_states(self, input_ids: torch.Tensor, allowed: torch.Tensor | None, position_ids: torch.Tensor,
                      blocks: AttentionBlocks | None = None):
        """(r·s, d) last hidden states of packed rows; by ``blocks`` when given, else by the dense mask."""
        if blocks is None:
            extra = {"attention_mask": packed_masks(self.classifier.config, allowed, position_ids, self.encoder,
                                                    self.dtype)}
        else:  # a 4-D mask is taken as given, so transformers builds none; the block attention does not read it
            rows, width = input_ids.shape
            placeholder = torch.ones(1, 1, 1, 1, dtype=torch.bool, device=input_ids.device).expand(rows, 1, width, width)
            extra = {"attention_mask": placeholder, BLOCKS_KWARG: blocks}
        hidden = self.classifier.base_model(
            input_ids=input_ids, position_ids=position_ids + position_offset(self.classifier), **extra
        ).last_hidden_state
        return hidden.reshape(-1, hidden.shape[-1])

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """(n,) rewards of the (n, d) hidden states of reward tokens."""
        return head_rewards(self.classifier, hidden).squeeze(-1)

    @torch.inference_mode()
    def shared_prompt_rewards(self, prompt_ids: list[int], responses: list[list[int]],
                              groups: list[list[int]]) -> list[float]:
        """Rewards of n responses to one prompt (causal LMs) with the prompt computed once: one forward pass over
        the prompt keeps its keys and values (the KV cache); then each group of candidates, end to end in one row,
        attends to that cache and each candidate to itself only, positioned right after the prompt: the
        prefix-shared layout of training, with the prompt's own attention done causally in its pass."""
        base, pad_id, start, device = self.classifier.base_model, self.pad_token_id, len(prompt_ids), self.device
        # transformers 5.x renamed past_key_values to cache (the old name warns, and goes in 5.40)
        cache_arg = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        out = base(input_ids=torch.tensor([prompt_ids], device=device), use_cache=True)
        prompt_hidden, cache = out.last_hidden_state[0], out[cache_arg]
        dtype = prompt_hidden.dtype
        states = [None] * len(responses)
        for group in groups:
            ids = [t for k in group for t in responses[k]]
            part_of = torch.tensor([[i for i, k in enumerate(group, 1) for _ in responses[k]]])
            allowed = attention_mask(torch.zeros_like(part_of), part_of, encoder=False)[0, 0]  # each sees itself
            mask = torch.zeros(1, 1, len(ids), start + len(ids), dtype=dtype)
            mask[0, 0, :, start:].masked_fill_(~allowed, torch.finfo(dtype).min)  # and the whole prompt
            positions = [start + i for k in group for i in range(len(responses[k]))]
            hidden = base(
                input_ids=torch.tensor([ids], device=device), attention_mask=mask.to(device),
                position_ids=torch.tensor([positions], device=device), use_cache=True, **{cache_arg: cache},
            ).last_hidden_state[0]
            cache.crop(-len(ids))  # back to the prompt alone, for the next group
            offset = 0
            for k in group:
                token = reward_token(prompt_ids + responses[k], list(range(start + len(responses[k]))), pad_id, False)
                # a response of pad tokens only is read where the prompt ends, as one-by-one scoring does
                states[k] = prompt_hidden[token] if token < start else hidden[offset + token - start]
                offset += len(responses[k])
        return self.head(torch.stack(states)).float().tolist()

    @torch.inference_mode()
    def score_sequences(self, sequences: list[list[int]]) -> list[float]:
        """Rewards of one batch of token id lists: one forward pass, right-padded."""
        input_ids, mask = pad_sequences(sequences, self.pad_token_id)
        return self.padded(input_ids.to(self.device), mask.to(self.device)).float().tolist()


def _probe_pairs(vocab_size: int, avoid: set[int]) -> list[EncodedPair]:
    """Two pairs of random ids (seeded), of different lengths, none of them a special token."""
    generator = torch.Generator().manual_seed(0)
    ids = [i for i in torch.randint(0, vocab_size, (64,), generator=generator).tolist() if i not in avoid]

    def take(n):
        taken, ids[:] = ids[:n], ids[n:]
        return taken

    return [EncodedPair(take(5), take(3), take(2)), EncodedPair(take(2), take(4), take(1))]


def _probe_all(module: RewardModule, dense_mask: bool, blocks: bool) -> list[tuple[str, str]]:
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


def probe_layouts(module: RewardModule) -> tuple[tuple[str, ...], str]:
    """Which layouts give the padded path's results on this model, in the way it attends (:func:`probe_attention`).
    Returns (layouts, the reason the others were left out, or '')."""
    blocks = module.attention()[0] == "blocks"
    results = _probe_all(module, dense_mask=not blocks, blocks=blocks)
    supported = ["padded"] + [name for name, problem in results if not problem]
    return tuple(supported), "; ".join(f"{name}: {problem}" for name, problem in results if problem)


def probe_attention(module: RewardModule) -> tuple[str, str]:
    """``blocks`` where the model's attention is transformers' SDPA (what block attention replaces) and, switched to
    :data:`rewardlab.attention.IMPLEMENTATION`, every packed layout's probe batch reaches it and gives the padded
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


def _probe(module: RewardModule, batch: PairBatch, reference: torch.Tensor, reference_rewards: torch.Tensor,
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
        return f"the head of {type(classifier).__name__} is not the one rewardlab applies (rewards differ by {reward_error:.2g})"
    return ""
