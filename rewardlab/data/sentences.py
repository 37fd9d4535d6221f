"""Sentences for contrastive training (SimCSE): single sentences, or (anchor, positive[, hard negative]) pairs.

Rows follow the rules of :mod:`rewardlab.data.rows`; a ``.txt`` file is one sentence a line (UTF-8, blank lines
skipped). What is left out (repeated sentences, pairs under the minimum score) is counted in the summary.
"""

from __future__ import annotations

from pathlib import Path

from rewardlab.data.rows import describe, iter_rows, number, text, text_lines
from rewardlab.errors import DataError


def read_sentences(source: str, columns: list[str], split: str = "train") -> tuple[list[tuple[str]], str]:
    """Unsupervised examples: the distinct sentences of ``columns`` (or of a .txt file's lines), first occurrence
    first — a repeated sentence would be its own negative. Returns (examples, a summary of what was read)."""
    if source.endswith(".txt"):
        if not Path(source).is_file():
            raise DataError(f"{source}: no such file")
        lines = [line.strip() for _, line in text_lines(Path(source), source)]
        texts, rows = [line for line in lines if line], len(lines)
    else:
        texts, rows = [], 0
        for row, origin in iter_rows(source, split):
            rows += 1
            texts.extend(text(row, column, origin) for column in columns)
    distinct = list(dict.fromkeys(texts))
    if not distinct:
        raise DataError(f"{source}: no sentences")
    return [(t,) for t in distinct], f"{len(distinct)} distinct sentences from {rows} rows ({len(texts)} in all)"


def read_sentence_pairs(source: str, columns: list[str], hard_negative: str | None, min_score: float | None,
                        split: str = "train") -> tuple[list[tuple[str, ...]], str]:
    """Supervised examples: (anchor, positive[, hard negative]) per row, keeping only rows whose ``score`` is at
    least ``min_score`` when it is set. Returns (examples, a summary of what was read)."""
    examples, rows = [], 0
    for row, origin in iter_rows(source, split):
        rows += 1
        if min_score is not None:
            score = number(row, "score", origin)
            if score is None:
                raise DataError(f"{origin}: contrastive.min_pair_score needs a numeric 'score' column, got "
                                f"{describe(row.get('score')) if 'score' in row else 'no such column'}")
            if score < min_score:
                continue
        examples.append(tuple(text(row, c, origin) for c in columns + ([hard_negative] if hard_negative else [])))
    kept = f" with score >= {min_score}" if min_score is not None else ""
    if not examples:
        raise DataError(f"{source}: no sentence pairs{kept}")
    return examples, f"{len(examples)} pairs{kept} from {rows} rows" + (" with hard negatives" if hard_negative else "")


def tokenize(tokenizer, texts: list[str], max_length: int):
    """Right-padded token ids and attention mask (n, s), cut at ``max_length`` tokens: the one encoding that training,
    evaluation and sentence-transformers use."""
    return tokenizer(texts, padding=True, truncation=True, max_length=max_length, padding_side="right",
                     return_tensors="pt")
