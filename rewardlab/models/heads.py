"""Reward heads: transformers' sequence-classification heads applied to the hidden states of reward tokens, and the
head's output layer (which ODIN trims to its quality head)."""

from __future__ import annotations

import torch
from torch import nn


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
