"""Beyond one pair: one prompt with k responses and what is preferred to what → :class:`PreferenceGroup`.

- **Rankings**: ``{"prompt", "responses": [...], "ranks": [...]}`` (1 = best; equal ranks are ties) or
  ``{"prompt", "responses": [...], "scores": [...]}`` (UltraFeedback-style ratings, higher = better; equal scores are
  ties). Every two responses of different rank are a comparison; tied responses are never compared.
- **Preference graphs**: ordinary pair files (every format :mod:`rewardlab.data.pairs` reads) with
  ``group_by_prompt: true``: the pairs that share a prompt become one group, each distinct response appears once,
  and every labelled pair is an edge (PandaLM's test set has 836 pairs over 153 prompts).

- **Attribute ratings** (HelpSteer2's layout): ``{"prompt", "response", "<attribute>": number, ...}``, one response
  a row, rated on the recipe's ``attributes``; the rows that share a prompt form one group, compared by their
  weighted rating (for objective ``regression`` with a pairwise term).

A group's ``levels`` order its responses (0 = best, equal levels tied) where the data gives a ranking; a graph
from pairs has none (its edges need not be consistent with any order).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from rewardlab.data.pairs import iter_rows, parse_row, read_pairs
from rewardlab.data.rows import optional_text
from rewardlab.errors import DataError


@dataclass
class PreferenceGroup:
    """One prompt and its responses (texts; rendered conversations when ``chat``). ``edges``: (better, worse)
    response indices; ``margins`` one per edge; ``levels``: each response's rank level (0 = best) or None."""

    prompt: str
    responses: list[str]
    edges: list[tuple[int, int]]
    margins: list[float] = field(default_factory=list)
    levels: list[int] | None = None
    source: str = ""
    chat: bool = False
    origin: str = ""
    ratings: list[list[float]] | None = None  # per response, one number per attribute


def is_ranking_row(row: dict) -> bool:
    return "responses" in row and ("ranks" in row or "scores" in row)


def _number(value, column: str, origin: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(f"{origin}: column '{column}' must hold finite numbers, got {value!r}")
    return float(value)


def parse_ranking(row: dict, origin: str, render_chat: Callable[[list, bool], str] | None) -> PreferenceGroup:
    """A ranking row → a group with every comparison of responses of different rank."""
    prompt, responses = row.get("prompt"), row.get("responses")
    key = "ranks" if "ranks" in row else "scores"
    values = row[key]
    if not isinstance(responses, list) or len(responses) < 2:
        raise DataError(f"{origin}: column 'responses' must be a list of at least 2 responses, got {responses!r:.80}")
    if not isinstance(values, list) or len(values) != len(responses):
        raise DataError(f"{origin}: column '{key}' must be a list as long as 'responses' ({len(responses)}), "
                        f"got {values!r:.80}")
    numbers = [_number(v, key, origin) for v in values]
    if len(set(numbers)) == 1:
        raise DataError(f"{origin}: every response is tied (all {key} equal): nothing to learn from")
    # rank 1 is best; a higher score is better
    order = sorted(set(numbers), reverse=key == "scores")
    levels = [order.index(v) for v in numbers]
    source = optional_text(row, "source", origin) or ""
    texts, chat = _response_texts(prompt, responses, origin, render_chat)
    edges = [(i, j) for i in range(len(levels)) for j in range(len(levels)) if levels[i] < levels[j]]
    return PreferenceGroup(texts[0], texts[1:], edges, [0.0] * len(edges), levels, source, chat, origin)


def _response_texts(prompt, responses: list, origin: str, render_chat) -> tuple[list[str], bool]:
    """[prompt text, response texts...], conversations rendered as :func:`~rewardlab.data.pairs.parse_row`
    renders a pair (each response is the rest of its whole rendered conversation)."""
    texts = []
    for k, response in enumerate(responses):
        if isinstance(response, str) and not response.strip():
            raise DataError(f"{origin}: response {k} is empty")
        try:
            texts.append(parse_row({"prompt": prompt, "chosen": response, "rejected": response}, origin, render_chat))
        except DataError as e:
            raise DataError(str(e).replace("column 'chosen'", f"response {k}")) from None
    return [texts[0].prompt] + [t.chosen for t in texts], texts[0].chat


def group_pairs(pairs) -> list[PreferenceGroup]:
    """Pairs that share a prompt → one group per prompt (first appearance first), each distinct response once."""
    groups: dict[tuple[str, bool], PreferenceGroup] = {}
    for pair in pairs:
        group = groups.setdefault((pair.prompt, pair.chat), PreferenceGroup(
            pair.prompt, [], [], [], None, pair.source, pair.chat, pair.origin))
        index = []
        for response in (pair.chosen, pair.rejected):
            if response not in group.responses:
                group.responses.append(response)
            index.append(group.responses.index(response))
        group.edges.append((index[0], index[1]))
        group.margins.append(pair.margin)
    return list(groups.values())


def read_groups(source: str, split: str = "train", render_chat=None, group_by_prompt: bool = False):
    """(groups, a summary of what was read) from ranking rows, or from pair rows grouped by prompt."""
    rows = iter_rows(source, split)
    first = next(rows, None)
    if first is None:
        raise DataError(f"{source}: no rows")
    if is_ranking_row(first[0]):
        groups = []
        for row, origin in [first, *rows]:
            if not is_ranking_row(row):
                raise DataError(f"{origin}: a ranking file's rows need 'responses' and 'ranks' or 'scores'; "
                                f"columns present: {', '.join(map(str, row)) or 'none'}")
            groups.append(parse_ranking(row, origin, render_chat))
        edges = sum(len(g.edges) for g in groups)
        return groups, f"{len(groups)} rankings, {edges} comparisons"
    pairs, report = read_pairs(source, split, render_chat)
    groups = group_pairs(pairs)
    return groups, f"{report.summary()}; {len(groups)} prompts"


def read_rated(source: str, attributes: list[str], weights: list[float], split: str = "train", render_chat=None):
    """(groups, summary) of attribute-rated rows: one response each, grouped by prompt; two responses of a prompt
    whose weighted ratings differ are a comparison (the higher one better)."""
    groups: dict[tuple[str, bool], PreferenceGroup] = {}
    rows = 0
    for row, origin in iter_rows(source, split):
        rows += 1
        missing = [c for c in ["response", *attributes] if c not in row]
        if missing:
            raise DataError(f"{origin}: missing column '{missing[0]}'; columns present: "
                            f"{', '.join(map(str, row)) or 'none'}; expected: prompt, response, "
                            f"{', '.join(attributes)}")
        ratings = [_number(row[a], a, origin) for a in attributes]
        (prompt, response), chat = _response_texts(row.get("prompt"), [row["response"]], origin, render_chat)
        group = groups.setdefault((prompt, chat), PreferenceGroup(prompt, [], [], [], None, row.get("source") or "",
                                                                  chat, origin, []))
        group.responses.append(response)
        group.ratings.append(ratings)
    if not groups:
        raise DataError(f"{source}: no rows")
    for group in groups.values():
        score = [sum(w * r for w, r in zip(weights, rating)) for rating in group.ratings]
        group.edges = [(i, j) for i in range(len(score)) for j in range(len(score)) if score[i] > score[j]]
        group.margins = [0.0] * len(group.edges)
    edges = sum(len(g.edges) for g in groups.values())
    return list(groups.values()), f"{rows} rated responses over {len(groups)} prompts ({edges} comparisons)"
