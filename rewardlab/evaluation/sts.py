"""Semantic textual similarity (STS): how well the cosine similarity of two sentences' embeddings ranks sentence
pairs the way people scored them — Spearman's rank correlation on ``sentence1,sentence2,score`` files (the STS
benchmark's format; scores 0–5, though only their order matters).

The embedding model is any module whose ``forward(input_ids, attention_mask)`` returns one (n, d) embedding per
row, e.g. :class:`rewardlab.tasks.simcse.SentenceEncoder`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from rewardlab.data.sentences import tokenize
from rewardlab.data.sts import StsPair


def average_ranks(values) -> np.ndarray:
    """Ranks 1..n, tied values sharing the mean of their ranks (as ``scipy.stats.rankdata``)."""
    values = np.asarray(values, dtype=float)
    ranks = np.empty(len(values))
    ranks[np.argsort(values, kind="stable")] = np.arange(1, len(values) + 1)
    _, tie_group, tie_counts = np.unique(values, return_inverse=True, return_counts=True)
    return (np.bincount(tie_group, weights=ranks) / tie_counts)[tie_group]


def pearson(x, y) -> float:
    x, y = np.asarray(x, dtype=float) - np.mean(x), np.asarray(y, dtype=float) - np.mean(y)
    norm = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y) / norm if norm > 0 else math.nan


def spearman(x, y) -> float:
    """Spearman's rank correlation: the Pearson correlation of the (tie-averaged) ranks."""
    return pearson(average_ranks(x), average_ranks(y))


@torch.no_grad()
def embed(model: torch.nn.Module, tokenizer, texts: list[str], max_length: int, batch_size: int,
          device) -> torch.Tensor:
    """(n, d) embeddings of ``texts`` in input order, in eval mode; batches of similar lengths waste little on
    padding."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = [None] * len(texts)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        encoded = tokenize(tokenizer, [texts[i] for i in idx], max_length).to(device)
        for i, row in zip(idx, model(encoded["input_ids"], encoded["attention_mask"]).float().cpu()):
            out[i] = row
    model.train(was_training)
    return torch.stack(out) if out else torch.empty(0)


def cosine_similarities(model, tokenizer, pairs: list[StsPair], max_length: int, batch_size: int,
                        device) -> list[float]:
    """cos(embedding(sentence1), embedding(sentence2)) of every pair."""
    if not pairs:
        return []
    embeddings = embed(model, tokenizer, [p.sentence1 for p in pairs] + [p.sentence2 for p in pairs], max_length,
                       batch_size, device)
    first, second = embeddings.chunk(2)
    return F.cosine_similarity(first, second, dim=-1).tolist()


def sts_metrics(similarities: list[float], pairs: list[StsPair]) -> dict:
    """``spearman`` (the STS benchmark's metric) and ``pearson`` between the similarities and the scores."""
    scores = [p.score for p in pairs]
    return {"pairs": len(pairs), "spearman": spearman(similarities, scores), "pearson": pearson(similarities, scores)}


def format_sts(name: str, metrics: dict) -> str:
    return "\n".join([
        f"{name}: {metrics['pairs']} sentence pairs",
        f"  Spearman (cosine vs score)  {metrics['spearman']:.4f}",
        f"  Pearson                     {metrics['pearson']:.4f}",
    ])
