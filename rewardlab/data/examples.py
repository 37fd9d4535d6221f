"""A preference file read and encoded: the examples a reward model trains and is evaluated on.

Pairs (:mod:`rewardlab.data.pairs`), rankings and preference graphs (:mod:`rewardlab.data.groups`) or attribute
ratings, encoded by the model's :class:`~rewardlab.data.encode.EncodingPolicy`; what was skipped, cut or dropped is
said in the log.
"""

from __future__ import annotations

from collections.abc import Callable

from rewardlab.data.encode import EncodingPolicy
from rewardlab.data.groups import is_ranking_row, read_groups, read_rated
from rewardlab.data.pairs import read_pairs
from rewardlab.data.rows import iter_rows


def load_pairs(source: str | None, split: str, policy: EncodingPolicy, log: Callable[[str], None],
               group_by_prompt: bool = False) -> list:
    """Read and encode one file's examples: pairs, or groups for ranking files and for pair files grouped by
    prompt. None gives no examples."""
    if source is None:
        return []
    first = next(iter_rows(source, split), (None, None))[0]
    if group_by_prompt or (first is not None and is_ranking_row(first)):
        examples, summary = read_groups(source, split, policy.chat_renderer, group_by_prompt)
    else:
        examples, report = read_pairs(source, split, policy.chat_renderer)
        summary = report.summary()
    encoded, encode_report = policy.encode_pairs(examples, source)
    log(f"{source}: {summary}; {encode_report.summary()}")
    return encoded


def load_rated(source: str | None, split: str, policy: EncodingPolicy, log: Callable[[str], None],
               attributes: list[str], weights: list[float]) -> list:
    """Read and encode attribute-rated responses, grouped by prompt (objective regression)."""
    if source is None:
        return []
    groups, summary = read_rated(source, attributes, weights, split, policy.chat_renderer)
    encoded, report = policy.encode_pairs(groups, source)
    log(f"{source}: {summary}; {report.summary()}")
    return encoded
