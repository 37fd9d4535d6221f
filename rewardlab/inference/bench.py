"""Scoring a RewardBench-style benchmark with a scorer, and writing its report (:mod:`rewardlab.evaluation.rewardbench`
computes it from the rewards)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from rewardlab.errors import DataError
from rewardlab.evaluation.rewardbench import (
    DEFAULT_SECTIONS,
    BenchRow,
    build_report,
    load_sections,
    read_bench,
    write_report,
)
from rewardlab.evaluation.uncertainty import CALIBRATION_BINS
from rewardlab.inference.scorer import RewardModel, Scores

SCORE_CHUNK = 4096  # responses given to the model at a time (it batches them by tokens)


def run_bench(scorer: RewardModel, data: list[str], output: str | Path, sections_file: str | None = None,
              subset_column: str = "subset", split: str = "test", bins: int = CALIBRATION_BINS) -> str:
    """Score the benchmark rows of ``data`` (files or folders) with ``scorer`` and write the report into
    ``output`` (:func:`rewardlab.evaluation.rewardbench.write_report`); returns its Markdown."""
    sections = load_sections(sections_file)
    rows = read_bench(data, subset_column, split)
    results, members = score_rows(scorer, rows)
    report = build_report(rows, results, sections, members, bins)
    report |= {"model": scorer.name, "data": data, "sections_file": str(sections_file or DEFAULT_SECTIONS)}
    return write_report(report, rows, results, Path(output), scorer.name)


def score_rows(scorer: RewardModel, rows: list[BenchRow]) -> tuple[list[tuple[float, list[float]]], np.ndarray | None]:
    """(chosen reward, rejected rewards) per row, and for an ensemble its member rewards ``[members, responses]``
    in the order chosen, rejected..., row by row (None for one model)."""
    from tqdm.auto import tqdm

    prompts = [row.prompt for row in rows for _ in range(1 + len(row.rejected))]
    responses = [text for row in rows for text in (row.chosen, *row.rejected)]
    origins = [row.origin for row in rows for _ in range(1 + len(row.rejected))]
    parts, member_parts = [], []
    with tqdm(total=len(prompts), unit="response", file=sys.stderr) as bar:
        for start in range(0, len(prompts), SCORE_CHUNK):
            piece = slice(start, start + SCORE_CHUNK)
            scores = _score(scorer, prompts[piece], responses[piece], origins[piece])
            parts.append(np.asarray(scores.rewards, dtype=np.float64))
            member_parts.append(np.asarray(scores.members, dtype=np.float64))
            bar.update(len(origins[piece]))
    rewards, member_rewards = np.concatenate(parts, axis=-1), np.concatenate(member_parts, axis=-1)
    bad = np.flatnonzero(~(np.isfinite(rewards) & np.isfinite(member_rewards).all(axis=0)))
    if len(bad):
        raise DataError(f"{origins[bad[0]]}: the model gave a non-finite reward; its weights are broken (a training "
                        f"run that diverged?)")
    results, start = [], 0
    for row in rows:
        end = start + 1 + len(row.rejected)
        results.append((float(rewards[start]), [float(r) for r in rewards[start + 1 : end]]))
        start = end
    return results, member_rewards if scorer.size > 1 else None


def _score(scorer: RewardModel, prompts: list, responses: list, origins: list[str]) -> Scores:
    """``scorer.scores(prompts, responses)``; an input the model refuses (a :class:`DataError`, e.g. a chat template
    that raises) is found by halving, and named by its row."""
    try:
        return scorer.scores(prompts, responses)
    except DataError as e:
        if len(prompts) == 1:
            raise DataError(f"{origins[0]}: {e}") from None
        half = len(prompts) // 2
        _score(scorer, prompts[:half], responses[:half], origins[:half])
        _score(scorer, prompts[half:], responses[half:], origins[half:])
        raise
