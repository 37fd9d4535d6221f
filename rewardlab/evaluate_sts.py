"""Semantic textual similarity (STS): how well the cosine similarity of two sentences' embeddings ranks sentence
pairs the way people scored them — Spearman's rank correlation on ``sentence1,sentence2,score`` files (the STS
benchmark's format; scores 0–5, though only their order matters).

The embedding model is any module whose ``forward(input_ids, attention_mask)`` returns one (n, d) embedding per
row, e.g. :class:`rewardlab.tasks.simcse.SentenceEncoder`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rewardlab.data.rows import DataError, describe, iter_rows, missing_column, number, text

STS_COLUMNS = ("sentence1", "sentence2", "score")


@dataclass
class StsPair:
    """Two sentences and their human similarity score; ``origin`` is ``file:line``."""

    sentence1: str
    sentence2: str
    score: float
    origin: str = ""


def has_sts_columns(source: str) -> bool:
    """Whether ``source`` is a local data file whose first row has the columns sentence1, sentence2 and score."""
    path = Path(source)
    if not path.is_file() or path.suffix.lower() not in (".csv", ".jsonl", ".json", ".parquet"):
        return False
    try:
        row, _ = next(iter_rows(source))
    except (StopIteration, DataError):
        return False
    return set(STS_COLUMNS) <= set(row)


def read_sts(source: str, split: str = "test") -> list[StsPair]:
    """Every row of ``source`` as an :class:`StsPair` (the rules of :mod:`rewardlab.data.rows`); a missing column, an
    empty sentence or a score that is not a finite number is a :class:`DataError` naming the file and line."""
    pairs = []
    for row, origin in iter_rows(source, split):
        for column in STS_COLUMNS:
            if column not in row:
                raise missing_column(row, column, origin, f"an STS file has columns {', '.join(STS_COLUMNS)}")
        sentence1, sentence2 = (text(row, column, origin) for column in STS_COLUMNS[:2])
        score = number(row, "score", origin)
        if score is None:
            raise DataError(f"{origin}: column 'score' must be a finite number, got {describe(row['score'])}")
        pairs.append(StsPair(sentence1, sentence2, score, origin))
    if not pairs:
        raise DataError(f"{source}: no sentence pairs")
    return pairs


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


def tokenize(tokenizer, texts: list[str], max_length: int):
    """Right-padded token ids and attention mask (n, s), cut at ``max_length`` tokens: the one encoding that training,
    evaluation and sentence-transformers use."""
    return tokenizer(texts, padding=True, truncation=True, max_length=max_length, padding_side="right",
                     return_tensors="pt")


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
