"""Preference pairs → token ids, with an explicit policy for pairs longer than ``max_length``.

A pair is encoded as one prompt and two responses, so that the prompt can be cut without touching a response:
``truncate`` cuts the prompt from the left (keeping the special tokens in front), and only when a response alone is
too long cuts that response from the left too, so the token the reward is read from always survives; ``drop``
drops the pair. Both are counted in :class:`EncodeReport`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase

from rewardlab.data.formats import DataError, PreferencePair


@dataclass
class EncodedPair:
    """Token ids of one pair: the sequences are ``prompt_ids + chosen_ids`` and ``prompt_ids + rejected_ids``."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    margin: float = 0.0
    source: str = ""
    origin: str = ""  # file:line of the row, for messages

    @property
    def length(self) -> int:
        """Tokens of the longer of the two sequences."""
        return len(self.prompt_ids) + max(len(self.chosen_ids), len(self.rejected_ids))


@dataclass
class EncodeReport:
    pairs: int = 0
    truncated_prompt: int = 0
    truncated_response: int = 0
    dropped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.pairs} pairs encoded; over max_length: {self.truncated_prompt} prompts cut from the left, "
            f"{self.truncated_response} responses cut from the left, {len(self.dropped)} pairs dropped"
        )


def special_affixes(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a text (e.g. ``[CLS]``/``[SEP]``, or ``<s>``)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            return full[:i], full[i + len(plain) :]
    return [], []


class PairEncoder:
    """Tokenizes pairs the same way for training, evaluation and scoring.

    Causal LMs get the EOS token appended to plain-text responses (as TRL does); chat-rendered texts already carry
    the template's own end-of-turn tokens. Encoders get their ``[CLS] … [SEP]`` around the whole sequence.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, encoder: bool, max_length: int, truncation: str = "truncate"):
        self.tokenizer, self.encoder = tokenizer, encoder
        self.max_length, self.truncation = max_length, truncation
        self.prefix, self.suffix = special_affixes(tokenizer)
        if not encoder and tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in self.suffix:
            self.suffix = self.suffix + [tokenizer.eos_token_id]

    def ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode_sequence(self, prompt: str, response: str, chat: bool = False) -> tuple[list[int], list[int]]:
        """(prompt ids, response ids) of one sequence, special tokens included, not yet truncated."""
        if chat:
            return self.ids(prompt), self.ids(response)
        response_ids = self.ids(response)
        suffix = self.suffix if response_ids[-len(self.suffix) :] != self.suffix else []
        return self.prefix + self.ids(prompt), response_ids + suffix

    def fit(self, prompt_ids: list[int], responses: list[list[int]], keep_front: int, report: EncodeReport):
        """Cut ``prompt_ids`` (after its first ``keep_front`` special tokens), then the responses, from the left to
        fit ``max_length``; None when the policy is ``drop``."""
        longest = max(len(r) for r in responses)
        if len(prompt_ids) + longest <= self.max_length:
            return prompt_ids, responses
        if self.truncation == "drop":
            return None
        room = self.max_length - longest - keep_front
        if room >= 0:
            report.truncated_prompt += 1
            body = prompt_ids[keep_front:]
            return prompt_ids[:keep_front] + (body[len(body) - room :] if room else []), responses
        report.truncated_prompt += len(prompt_ids) > keep_front
        report.truncated_response += 1
        room = self.max_length - keep_front
        return prompt_ids[:keep_front], [r[-room:] for r in responses]

    def encode_pair(self, pair: PreferencePair, report: EncodeReport) -> EncodedPair | None:
        prompt_ids, chosen_ids = self.encode_sequence(pair.prompt, pair.chosen, pair.chat)
        _, rejected_ids = self.encode_sequence(pair.prompt, pair.rejected, pair.chat)
        keep_front = 0 if pair.chat else len(self.prefix)
        fitted = self.fit(prompt_ids, [chosen_ids, rejected_ids], keep_front, report)
        if fitted is None:
            report.dropped.append(pair.origin)
            return None
        prompt_ids, (chosen_ids, rejected_ids) = fitted
        return EncodedPair(prompt_ids, chosen_ids, rejected_ids, pair.margin, pair.source, pair.origin)

    def encode_pairs(self, pairs: list[PreferencePair], name: str = "data") -> tuple[list[EncodedPair], EncodeReport]:
        report = EncodeReport()
        encoded = [e for e in (self.encode_pair(p, report) for p in pairs) if e is not None]
        report.pairs = len(encoded)
        if not encoded:
            raise DataError(f"{name}: every pair is longer than max_length={self.max_length} ({report.summary()})")
        return encoded, report
