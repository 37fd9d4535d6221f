"""Semantic textual similarity (STS) files: ``sentence1,sentence2,score`` rows → :class:`StsPair`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rewardlab.data.rows import describe, iter_rows, missing_column, number, text
from rewardlab.errors import DataError

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
