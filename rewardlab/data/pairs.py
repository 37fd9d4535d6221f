"""Preference rows in the formats people already have → :class:`PreferencePair`.

Accepted row shapes (the TRL conventions):

- explicit prompt: ``{"prompt": str, "chosen": str, "rejected": str}``
- implicit prompt: ``{"chosen": str, "rejected": str}`` as whole transcripts (Anthropic HH-RLHF); the prompt is the
  shared prefix up to the last ``\\n\\nAssistant:`` (or, without that marker, up to the last shared whitespace)
- conversational: the same keys holding lists of ``{"role", "content"}`` messages, rendered with the tokenizer's
  chat template; without a ``prompt`` the shared leading messages are the prompt

plus an optional ``margin`` (a finite number within float32's range) and an optional string ``source``. Files and
the rules every row follows: :mod:`rewardlab.data.rows`. A ``prompt`` that is null is an error (write ``""`` for
no prompt, or leave the column out for an implicit one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from jinja2 import TemplateError

from rewardlab.data.rows import describe, iter_rows, messages, missing_column, number, optional_text
from rewardlab.errors import DataError

HH_ASSISTANT = "\n\nAssistant:"
FLOAT32_MAX = 3.4028234663852886e38  # a larger margin is infinite in the float32 loss
COLUMNS = "prompt (optional), chosen, rejected, margin (optional), source (optional)"


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
            skipped = self.skipped_identical
            text += f"; skipped {len(skipped)} with chosen == rejected (first: {skipped[0]})"
        return text


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


def _shared_messages(chosen: list, rejected: list) -> int:
    n = 0
    while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
        n += 1
    return n


def parse_row(row: dict, origin: str, render_chat: Callable[[list, bool], str] | None) -> PreferencePair:
    """Turn one row into a pair, or raise :class:`DataError` naming ``origin`` and the problem."""
    for column in ("chosen", "rejected"):
        if column not in row:
            raise missing_column(row, column, origin, COLUMNS)
    if "prompt" in row and row["prompt"] is None:
        raise DataError(f"{origin}: column 'prompt' is null; write \"\" for no prompt, or leave the column out for "
                        f"the prompt the two responses share")
    prompt, chosen, rejected = row.get("prompt"), row["chosen"], row["rejected"]
    margin = number(row, "margin", origin, limit=FLOAT32_MAX) or 0.0
    source = optional_text(row, "source", origin) or ""
    conversation = [messages(v, c, origin) for c, v in (("chosen", chosen), ("rejected", rejected))]
    if all(conversation):
        if render_chat is None:
            raise DataError(f"{origin}: conversational rows need a tokenizer with a chat template")
        if prompt is None:
            shared = _shared_messages(chosen, rejected)
            prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
        elif not messages(prompt, "prompt", origin):
            raise DataError(f"{origin}: column 'prompt' must be a list of messages when chosen/rejected are")
        for name, value in (("chosen", chosen), ("rejected", rejected)):
            if not value:
                raise DataError(f"{origin}: column '{name}' has no messages after the prompt")
        prompt, (chosen, rejected) = _render(prompt, [chosen, rejected], render_chat, origin)
        chat = True
    else:
        for name, value in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected)):
            if not isinstance(value, str) and not (name == "prompt" and value is None):
                raise DataError(
                    f"{origin}: column '{name}' must be a string (or, for all of prompt/chosen/rejected, a list of "
                    f"{{role, content}} messages), got {describe(value)}"
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


def _render(prompt: list, replies: list[list], render_chat, origin: str) -> tuple[str, list[str]]:
    """The prompt's text (with the generation prompt) and each reply's text: the rest of its whole rendered
    conversation. A template that raises (``raise_exception``) is an error on this row."""

    def render(messages: list, generation_prompt: bool) -> str:
        try:
            return render_chat(messages, generation_prompt)
        except TemplateError as e:
            raise DataError(f"{origin}: the chat template refused this conversation: {e}") from None
        except DataError as e:  # the renderer's own message, without the row
            raise DataError(f"{origin}: {e}") from None

    prompt_text = render(prompt, True) if prompt else ""
    texts = []
    for reply in replies:
        full = render(prompt + reply, False)
        if not full.startswith(prompt_text):
            raise DataError(f"{origin}: the chat template does not render the prompt as a prefix of the reply")
        texts.append(full[len(prompt_text) :])
    return prompt_text, texts


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
