"""Preference rows in the formats people already have → :class:`PreferencePair`.

Accepted row shapes (the TRL conventions):

- explicit prompt: ``{"prompt": str, "chosen": str, "rejected": str}``
- implicit prompt: ``{"chosen": str, "rejected": str}`` as whole transcripts (Anthropic HH-RLHF); the prompt is the
  shared prefix up to the last ``\\n\\nAssistant:`` (or, without that marker, up to the last shared whitespace)
- conversational: the same keys holding lists of ``{"role", "content"}`` messages, rendered with the tokenizer's
  chat template; without a ``prompt`` the shared leading messages are the prompt

plus an optional float ``margin`` and an optional string ``source``. Files: ``.jsonl``, ``.json``, ``.csv``,
``.parquet``; anything else is a hub dataset name read with :func:`datasets.load_dataset`.
"""

from __future__ import annotations

import csv
import difflib
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

HH_ASSISTANT = "\n\nAssistant:"


class DataError(ValueError):
    """A data file or row cannot be used; the message names the file and line (or row)."""


@dataclass
class PreferencePair:
    """One comparison: ``prompt + chosen`` should get a higher reward than ``prompt + rejected``.

    ``chat`` is True when the texts were rendered by a chat template (which already carries special tokens).
    ``origin`` is ``file:line`` (or ``dataset[split] row N``), for messages.
    """

    prompt: str
    chosen: str
    rejected: str
    margin: float = 0.0
    source: str = ""
    chat: bool = False
    origin: str = ""


@dataclass
class ReadReport:
    """What reading kept and skipped, so nothing is dropped silently."""

    rows: int = 0
    kept: int = 0
    skipped_identical: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"{self.kept} pairs from {self.rows} rows"
        if self.skipped_identical:
            text += f"; skipped {len(self.skipped_identical)} with chosen == rejected (first: {self.skipped_identical[0]})"
        return text


def iter_rows(source: str, split: str = "train") -> Iterator[tuple[dict, str]]:
    """Yield ``(row, origin)`` from a local file or a hub dataset; malformed files fail with file and line."""
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".csv", ".parquet") and not path.is_file():
        raise DataError(f"{source}: no such file")
    if suffix == ".jsonl" or (suffix == ".json" and _first_char(path) == "{"):
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{source}:{n}: malformed JSON ({e.msg} at column {e.colno})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{source}:{n}: expected a JSON object, got {type(row).__name__}")
                yield row, f"{source}:{n}"
    elif suffix == ".json":
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"{source}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(rows, list):
            raise DataError(f"{source}: expected a JSON list of objects or JSON lines")
        for n, row in enumerate(rows, 1):
            if not isinstance(row, dict):
                raise DataError(f"{source}: row {n}: expected a JSON object, got {type(row).__name__}")
            yield row, f"{source} row {n}"
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            for row in reader:
                yield {k: v for k, v in row.items() if k is not None}, f"{source}:{reader.line_num}"
    else:
        import datasets

        if suffix == ".parquet":
            dataset, name = datasets.load_dataset("parquet", data_files=str(path), split="train"), source
        else:
            dataset, name = datasets.load_dataset(source, split=split), f"{source}[{split}]"
        for n, row in enumerate(dataset, 1):
            yield row, f"{name} row {n}"


def _first_char(path: Path) -> str:
    with path.open(encoding="utf-8") as f:
        return f.read(64).lstrip()[:1]


def implicit_prompt(chosen: str, rejected: str) -> str:
    """The prompt two full transcripts share: up to the last shared ``\\n\\nAssistant:`` (HH-RLHF), else up to
    the last whitespace before they differ, so neither response starts mid-word."""
    n = 0
    limit = min(len(chosen), len(rejected))
    while n < limit and chosen[n] == rejected[n]:
        n += 1
    shared = chosen[:n]
    cut = shared.rfind(HH_ASSISTANT)
    if cut >= 0:
        return shared[: cut + len(HH_ASSISTANT)]
    return shared[: max(shared.rfind(" "), shared.rfind("\n")) + 1]


def _is_messages(value) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)


def _shared_messages(chosen: list, rejected: list) -> int:
    n = 0
    while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
        n += 1
    return n


def parse_row(row: dict, origin: str, render_chat: Callable[[list, bool], str] | None) -> PreferencePair:
    """Turn one row into a pair, or raise :class:`DataError` naming ``origin`` and the problem."""
    missing = [k for k in ("chosen", "rejected") if k not in row]
    if missing:
        present = ", ".join(sorted(map(str, row))) or "none"
        close = difflib.get_close_matches(missing[0], [str(k) for k in row], n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise DataError(
            f"{origin}: missing column '{missing[0]}'{hint}; columns present: {present}; expected: prompt (optional), "
            f"chosen, rejected, margin (optional), source (optional)"
        )
    prompt, chosen, rejected = row.get("prompt"), row["chosen"], row["rejected"]
    margin = row.get("margin")
    margin = 0.0 if margin in (None, "") else margin
    try:
        margin = float(margin)
    except (TypeError, ValueError):
        raise DataError(f"{origin}: column 'margin' must be a number, got {margin!r}") from None
    if not math.isfinite(margin):
        raise DataError(f"{origin}: column 'margin' must be finite, got {margin!r}")
    source = row.get("source") or ""
    if not isinstance(source, str):
        raise DataError(f"{origin}: column 'source' must be a string, got {type(source).__name__}")

    if _is_messages(chosen) and _is_messages(rejected):
        if render_chat is None:
            raise DataError(f"{origin}: conversational rows need a tokenizer with a chat template")
        if prompt is None:
            shared = _shared_messages(chosen, rejected)
            prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
        elif not _is_messages(prompt):
            raise DataError(f"{origin}: column 'prompt' must be a list of messages when chosen/rejected are")
        prompt_text = render_chat(prompt, True) if prompt else ""
        texts = []
        for messages in (chosen, rejected):
            full = render_chat(prompt + messages, False)
            if not full.startswith(prompt_text):
                raise DataError(f"{origin}: the chat template does not render the prompt as a prefix of the reply")
            texts.append(full[len(prompt_text) :])
        prompt, (chosen, rejected), chat = prompt_text, texts, True
    else:
        for name, value in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected)):
            if value is not None and not isinstance(value, str):
                raise DataError(
                    f"{origin}: column '{name}' must be a string (or, for all of prompt/chosen/rejected, a list of "
                    f"{{role, content}} messages), got {type(value).__name__}"
                )
        for name, value in (("chosen", chosen), ("rejected", rejected)):
            if not value.strip():
                raise DataError(f"{origin}: column '{name}' is empty")
        # A transcript may end in an empty assistant turn (HH-RLHF has some): an empty reply is a reply.
        if prompt is None:
            prompt = implicit_prompt(chosen, rejected) if chosen != rejected else ""
            chosen, rejected = chosen[len(prompt) :], rejected[len(prompt) :]
        chat = False
    return PreferencePair(prompt, chosen, rejected, margin, source, chat, origin)


def read_pairs(
    source: str, split: str = "train", render_chat: Callable[[list, bool], str] | None = None
) -> tuple[list[PreferencePair], ReadReport]:
    """Read every row of ``source``; pairs whose chosen equals rejected are skipped and counted."""
    pairs, report = [], ReadReport()
    for row, origin in iter_rows(source, split):
        report.rows += 1
        pair = parse_row(row, origin, render_chat)
        if pair.chosen == pair.rejected:
            report.skipped_identical.append(origin)
            continue
        pairs.append(pair)
    report.kept = len(pairs)
    if not pairs:
        raise DataError(f"{source}: no usable preference pairs ({report.summary()})")
    return pairs, report
