"""Scoring a file of rows: ``rewardlab score MODEL --input IN --output OUT``, and :func:`score_file` in Python.

Rows (any format of :mod:`rewardlab.data.rows`) hold ``prompt`` + ``response``, ``messages`` (the last one is the
response), one whole ``text``, or with ``best_of_n`` ``prompt`` + ``responses`` (a list). Each row is written back
as one line of JSON with its ``reward`` (for best-of-n: the best ``response``, its ``reward`` and every candidate's
``rewards``); a multi-attribute model adds ``attributes``, an ensemble ``reward_mean`` and ``reward_std`` (its
members' mean and spread), and ``members=True`` every member's reward (``member_rewards``).

Rows are read, scored and written a chunk at a time, and the output replaces its file only once every row is
written: an error (a bad row, named by file and line; a model that gives a non-finite reward) or an interruption
leaves the output as it was, even when it is the input file itself.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from rewardlab.data.encode import Text
from rewardlab.data.rows import describe, iter_rows
from rewardlab.data.rows import messages as is_conversation
from rewardlab.errors import DataError, ScoringError
from rewardlab.inference.scorer import RewardModel, Scores

CHUNK = 1024  # rows read, scored and written at a time


def score_file(scorer: RewardModel, source: str, output: str | Path, best_of_n: bool = False,
               normalize: bool = False, members: bool = False, progress: bool = True) -> int:
    """Score every row of ``source`` into ``output`` (JSON lines); returns the number of rows written."""
    return write_scores(scorer, open_rows(source), source, output, best_of_n, normalize, members, progress)


def open_rows(source: str) -> Iterator[tuple[dict, str]]:
    """The rows of ``source``, its first row read already: a missing, empty or malformed input fails here (before
    a model is loaded, when called first)."""
    rows = iter_rows(source)
    first = next(rows, None)
    if first is None:
        raise DataError(f"{source}: no rows to score")
    return itertools.chain([first], rows)


def write_scores(scorer: RewardModel, rows: Iterator[tuple[dict, str]], source: str, output: str | Path,
                 best_of_n: bool = False, normalize: bool = False, members: bool = False,
                 progress: bool = True) -> int:
    """Score ``rows`` (from :func:`open_rows`) into ``output``, a chunk at a time; returns the rows written."""
    from tqdm.auto import tqdm

    if normalize:
        scorer.check_normalizable()  # before scoring anything
    written = 0
    total = count_lines(source) if source.endswith(".jsonl") else None
    with replaced_on_success(Path(output)) as out, tqdm(total=total, unit="row", file=sys.stderr,
                                                        disable=not progress) as bar:
        for chunk in batched(rows, CHUNK):
            written += score_chunk(scorer, chunk, out, str(output), best_of_n, normalize, members)
            bar.update(len(chunk))
    return written


def batched(rows: Iterator, size: int) -> Iterator[list]:
    """Lists of ``size`` items (the last may be shorter); ``itertools.batched`` from Python 3.12."""
    while chunk := list(itertools.islice(rows, size)):
        yield chunk


def score_chunk(scorer: RewardModel, chunk: list[tuple[dict, str]], out, output: str, best_of_n: bool,
                normalize: bool, members: bool) -> int:
    """Score every row of ``chunk`` in one token-budget run and write the rows with their rewards."""
    sequences = [row_sequences(scorer, row, origin, best_of_n) for row, origin in chunk]
    scores = scorer.score_ids([s for seqs in sequences for s in seqs], normalize)
    start = 0
    for (row, origin), seqs in zip(chunk, sequences):
        span = list(range(start, start + len(seqs)))
        start += len(seqs)
        if not all(math.isfinite(m[i]) for m in scores.members for i in span):
            rewards = [scores.rewards[i] for i in span]
            raise ScoringError(f"{origin}: the model gave a non-finite reward ({rewards}); its "
                               f"weights are broken (a training run that diverged?); {output} was left as it was")
        out.write(json_line(scored_row(scorer, row, scores.select(span), best_of_n, members), origin))
    return len(chunk)


def scored_row(scorer: RewardModel, row: dict, scores: Scores, best_of_n: bool, members: bool) -> dict:
    """``row`` with what the scorer says of its response(s)."""
    pick = 0
    if best_of_n:
        pick = max(range(len(scores.rewards)), key=scores.rewards.__getitem__)
        responses = row["responses"]
        row = {k: v for k, v in row.items() if k != "responses"}
        row.update(response=responses[pick], reward=scores.rewards[pick], rewards=scores.rewards)
    else:
        row["reward"] = scores.rewards[0]
    if scores.attributes and not best_of_n:
        row["attributes"] = {a: values[0] for a, values in scores.attributes.items()}
    if scorer.size > 1:
        row.update(reward_mean=scores.mean[pick], reward_std=scores.uncertainty[pick])
    if members:
        row["member_rewards"] = [m[pick] for m in scores.members]
    return row


def row_sequences(scorer: RewardModel, row: dict, origin: str, best_of_n: bool) -> list[list[int]]:
    """Token ids of a row's response(s): ``prompt`` + ``response``, ``messages`` (the last one is the response),
    one whole ``text``, or with ``best_of_n`` ``prompt`` + ``responses`` (a list)."""
    try:
        if best_of_n:
            responses = row.get("responses")
            if "prompt" not in row or not isinstance(responses, list) or not responses:
                raise ScoringError(f"--best-of-n rows need 'prompt' and 'responses' (a non-empty list); "
                                   f"columns present: {', '.join(map(str, row)) or 'none'}")
            prompt = text_of(row["prompt"], "prompt", origin)
            return [scorer.encode(prompt, text_of(r, "responses", origin)) for r in responses]
        if "text" in row:
            return [scorer.encode_text(text_of(row["text"], "text", origin, conversation=False))]
        if "messages" in row:
            messages = row["messages"]
            if not is_conversation(messages, "messages", origin) or not messages:
                raise ScoringError(f"column 'messages' must be a non-empty list of {{role, content}} messages, "
                                   f"got {describe(messages)}")
            return [scorer.encode(messages[:-1], messages[-1:])]
        if "prompt" in row and "response" in row:
            return [scorer.encode(text_of(row["prompt"], "prompt", origin),
                                  text_of(row["response"], "response", origin))]
        hint = " (rows with several responses need --best-of-n)" if "responses" in row else ""
        raise ScoringError(f"expected columns prompt + response, messages, or text{hint}; "
                           f"columns present: {', '.join(map(str, row)) or 'none'}")
    except ScoringError as e:
        raise DataError(f"{origin}: {e}") from None


def text_of(value, column: str, origin: str, conversation: bool = True) -> Text:
    """A prompt or response: a string or (unless ``conversation`` is False) a list of messages."""
    if isinstance(value, str) or (conversation and is_conversation(value, column, origin)):
        return value
    kinds = "a string or a list of {role, content} messages" if conversation else "a string"
    raise ScoringError(f"column '{column}' must be {kinds}, got {describe(value)}")


def json_line(row: dict, origin: str) -> str:
    """``row`` as one line of JSON; timestamps (parquet) are written as ISO text, and what JSON cannot hold (NaN,
    bytes) is an error naming the row."""

    def plain(value):
        if hasattr(value, "isoformat"):
            return value.isoformat()
        raise TypeError(f"a {type(value).__name__} value is not JSON")

    try:
        return json.dumps(row, ensure_ascii=False, allow_nan=False, default=plain) + "\n"
    except (TypeError, ValueError) as e:
        raise DataError(f"{origin}: the row cannot be written back as JSON ({e})") from None


def check_output(path: Path) -> None:
    """Fail now, naming ``path``, if it cannot be written (a folder, or in a folder that does not exist or cannot be
    written to): before a model is loaded, when called first. ``path`` itself is left as it is."""
    temporary, out = _temporary(path)
    out.close()
    temporary.unlink()


def _temporary(path: Path):
    """(a new temporary file beside ``path``, open for writing) or an error naming ``path``."""
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"cannot write {path}: it is a folder")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        return temporary, temporary.open("x", encoding="utf-8")
    except OSError as e:
        raise OSError(e.errno, f"cannot write {path} ({e.strerror})") from None


@contextlib.contextmanager
def replaced_on_success(path: Path):
    """A text file to write that becomes ``path`` only once everything is written: an error, an interruption or an
    output that is also the input leaves ``path`` as it was until the end. Nothing in the standard library or the
    dependencies does this (a temporary file beside ``path``, then an atomic rename)."""
    temporary, out = _temporary(path)
    try:
        with out:
            yield out
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def count_lines(path: str) -> int:
    """Rows of a JSON-lines file, for the progress bar."""
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())
