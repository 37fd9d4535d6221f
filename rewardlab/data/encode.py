"""Rows → token ids: the encoding policy a reward model is trained with, saved with it and scored with.

**The tokens are those of the joined text**, as TRL's ``RewardTrainer``, OpenRLHF's ``/get_reward`` and plain
transformers see it: a plain-text row is ``prompt + response`` (plus the EOS token for causal LMs, as TRL appends
it) tokenized as one text with the tokenizer's own special tokens (``<s>``, ``[CLS] … [SEP]``); a conversation is
the chat template's rendering, tokenized as it stands (the template carries its own special tokens). Tokenizing
the prompt and the response separately would be simpler, but with BPE and SentencePiece tokenizers the ids at the
seam differ from the joined text's, so a saved model would be scored on tokens it never saw.

**The prompt a pair shares** is the longest common prefix of its two sequences' ids, so the prefix-shared layout
computes exactly the tokens of both joined texts.

**Past max_length** (``truncation: truncate``) the shared prompt is cut from the left, after the special tokens
in front, by as much as the longer sequence needs, so both responses keep the same prompt and stay whole; a
response too long by itself keeps its end (where the reward token is). For one sequence this is exactly the
tokenizer's own ``truncation_side="left"`` truncation, which the saved tokenizer is set to, so
``tokenizer(text, truncation=True)`` gives the same ids. ``truncation: drop`` drops the pair. Both are counted.

**The reward token** is the first token for encoders (``[CLS]``) and the rightmost token that is not the pad token
for causal LMs: transformers' own rule for sequence classifiers.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase

from rewardlab.data.pairs import PreferencePair
from rewardlab.errors import DataError, ScoringError

# A prompt or a response: plain text, or a list of {"role", "content"} messages rendered with the chat template.
Text = str | list[dict]




@dataclass
class EncodedGroup:
    """Token ids of one prompt and k responses: sequence i is ``prompt_ids + responses[i]`` (``prompt_ids``: the
    ids all k share in front). ``edges``: (better, worse) response indices, with ``margins``; ``levels``: each
    response's rank level (0 = best, equal = tied) where the data ranks them, else None; ``edge_weight``: the
    weight of each of its edges in the loss (a ranking of k counts once, as InstructGPT weights its C(k, 2)
    comparisons; a pair, or a pair of a preference graph, counts once)."""

    prompt_ids: list[int]
    responses: list[list[int]]
    edges: list[tuple[int, int]]
    margins: list[float]
    levels: list[int] | None = None
    edge_weight: float = 1.0
    source: str = ""
    origin: str = ""  # file:line of the (first) row, for messages
    targets: list[list[float]] | None = None  # per response, its attribute ratings (objective regression)

    @property
    def length(self) -> int:
        """Tokens of the longest sequence."""
        return len(self.prompt_ids) + max(map(len, self.responses))


@dataclass
class EncodedPair:
    """Token ids of one pair: the sequences are ``prompt_ids + chosen_ids`` and ``prompt_ids + rejected_ids``
    (``prompt_ids``: the ids the two share in front). A group of 2 responses with one edge."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    margin: float = 0.0
    source: str = ""
    origin: str = ""  # file:line of the row, for messages
    levels = [0, 1]
    edges = [(0, 1)]
    edge_weight = 1.0
    targets = None

    @property
    def responses(self) -> list[list[int]]:
        return [self.chosen_ids, self.rejected_ids]

    @property
    def margins(self) -> list[float]:
        return [self.margin]

    @property
    def length(self) -> int:
        """Tokens of the longer of the two sequences."""
        return len(self.prompt_ids) + max(len(self.chosen_ids), len(self.rejected_ids))


@dataclass
class EncodeReport:
    pairs: int = 0  # examples encoded: pairs, or groups of k responses
    unit: str = "pairs"
    truncated_prompt: int = 0
    truncated_response: int = 0
    dropped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.pairs} {self.unit} encoded; over max_length: {self.truncated_prompt} prompts cut from the left, "
            f"{self.truncated_response} responses cut from the left, {len(self.dropped)} {self.unit} dropped"
        )


def special_affixes(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a text (e.g. ``[CLS]``/``[SEP]``, or ``<s>``)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            return full[:i], full[i + len(plain) :]
    return [], []


def common_prefix(a: list, b: list) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def is_messages(value) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)


class EncodingPolicy:
    """How rows become the token ids a reward is read from; the one place that encodes, for training, evaluation,
    ``score``, best-of-n, the server and the GRPO reward function.

    Args:
        tokenizer: the model's tokenizer (a pad token set).
        encoder: True for bidirectional encoders (reward at the first token), False for causal LMs (at the last
            token that is not the pad token).
        max_length: tokens per sequence.
        truncation: ``truncate`` or ``drop`` (pairs longer than ``max_length``; single sequences always truncate).

    Saved with the model as :meth:`to_dict` (``rewardlab.json``, key ``encoding``) and rebuilt by :meth:`from_dict`.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, encoder: bool, max_length: int = 512,
                 truncation: str = "truncate"):
        self.tokenizer, self.encoder = tokenizer, encoder
        self.max_length, self.truncation = max_length, truncation
        self.prefix, self.suffix = special_affixes(tokenizer)
        eos = tokenizer.eos_token
        # TRL's rule: plain-text responses of causal LMs end in EOS (unless the tokenizer appends it itself)
        self.eos_text = eos if not encoder and eos is not None and tokenizer.eos_token_id not in self.suffix else ""

    def to_dict(self) -> dict:
        return {"tokens": "joint", "max_length": self.max_length, "truncation": self.truncation,
                "reward_token": "first" if self.encoder else "last_non_pad", "append_eos": bool(self.eos_text)}

    @classmethod
    def from_dict(cls, tokenizer, encoder: bool, saved: dict, max_length: int | None = None) -> EncodingPolicy:
        """The policy a model was saved with (``max_length`` overrides the saved length)."""
        length = max_length or saved.get("max_length") or 512
        return cls(tokenizer, encoder, length, saved.get("truncation", "truncate"))

    @property
    def pad_token_id(self) -> int | None:
        return self.tokenizer.pad_token_id

    # --- texts ---------------------------------------------------------------------------------------------------

    def render_chat(self, prompt: list[dict], response: Text) -> tuple[str, str]:
        """(prompt text, whole conversation text) of messages: the prompt with the generation prompt, the whole with
        the reply; a string reply is the assistant's message."""
        if not self.tokenizer.chat_template:
            raise ScoringError("messages need a tokenizer with a chat template; this model's tokenizer has none")
        if not is_messages(prompt):
            raise ScoringError(f"a conversation's prompt must be a list of {{role, content}} messages (and a "
                                f"plain-text prompt needs a plain-text response), got {type(prompt).__name__}")
        reply = [{"role": "assistant", "content": response}] if isinstance(response, str) else response
        if not is_messages(reply) or not reply:
            raise ScoringError(f"a response must be a string or a non-empty list of {{role, content}} messages, "
                                f"got {reply!r:.80}")
        prompt_text = self.render(prompt, True) if prompt else ""
        whole = self.render(prompt + reply, False)
        if not whole.startswith(prompt_text):
            raise ScoringError("the chat template does not render the prompt as a prefix of the conversation")
        return prompt_text, whole

    def render(self, messages: list[dict], generation_prompt: bool) -> str:
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        except Exception as e:  # jinja2's TemplateError and friends: the template refused the user's messages
            raise ScoringError(f"the chat template refused these messages: {type(e).__name__}: {e}") from None

    @property
    def chat_renderer(self):
        """``render(messages, generation_prompt) -> text`` for the data readers, or None without a chat template."""
        return self.render if self.tokenizer.chat_template else None

    def texts(self, prompt: Text, response: Text) -> tuple[str, str, bool]:
        """(prompt text, whole text, chat?) of one prompt and response, as they are tokenized."""
        if isinstance(prompt, str) and isinstance(response, str):
            end = self.eos_text if not response.endswith(self.eos_text or "\0") else ""
            return prompt, prompt + response + end, False
        return (*self.render_chat(prompt, response), True)

    def pair_texts(self, pair: PreferencePair) -> tuple[str, str, str]:
        """(prompt, chosen whole text, rejected whole text) of a row read by :mod:`rewardlab.data.pairs`, whose
        conversations are already rendered (``pair.chat``)."""
        if pair.chat:
            return pair.prompt, pair.prompt + pair.chosen, pair.prompt + pair.rejected
        return pair.prompt, self.texts(pair.prompt, pair.chosen)[1], self.texts(pair.prompt, pair.rejected)[1]

    # --- ids -----------------------------------------------------------------------------------------------------

    def tokenize(self, text: str, chat: bool) -> list[int]:
        """Ids of a whole text: with the tokenizer's special tokens for plain text, as it stands for a rendered
        conversation (as ``apply_chat_template(tokenize=True)`` does)."""
        try:
            return self.tokenizer(text, add_special_tokens=not chat, verbose=False)["input_ids"]
        except (TypeError, ValueError) as e:  # e.g. a lone surrogate, which no tokenizer takes
            raise ScoringError(f"text cannot be tokenized ({type(e).__name__}: {e})") from None

    @functools.cached_property
    def _chars_per_token(self) -> int:
        """An upper bound on the characters one token covers: its vocabulary string's length, or a whole word that
        WordPiece maps to ``[UNK]`` (at most ``max_input_chars_per_word``, 100 by default)."""
        return max(100, max(map(len, self.tokenizer.get_vocab())))

    def _bounded(self, text: str) -> str:
        """The end of a text far longer than ``max_length`` tokens can cover, cut before tokenizing: the tokens
        kept are unchanged (the cut lies far to the left of them), and a huge input costs what a long one does."""
        limit = 2 * self.max_length * self._chars_per_token + 1024
        return text[len(text) - limit :] if len(text) > limit else text

    def _keep_front(self, ids: list[int], chat: bool) -> int:
        """How many leading special tokens survive truncation (a plain text's BOS / ``[CLS]``)."""
        return 0 if chat or ids[: len(self.prefix)] != self.prefix else len(self.prefix)

    def encode_group(self, prompt_text: str, wholes: list[str], chat: bool, report: EncodeReport | None = None,
                     drop: bool = False):
        """(shared ids, [rest ids per response]) of whole texts that start with one prompt, fitted to
        ``max_length``; None when ``drop`` and they do not fit.

        The shared part is the longest common prefix of the sequences (for one sequence: of it and the prompt's
        own ids), each response keeping at least its last token."""
        sequences = [self.tokenize(self._bounded(w), chat) for w in wholes]
        if len(sequences) > 1:
            reference = sequences[1]
        elif prompt_text:
            reference = self.tokenize(self._bounded(prompt_text), chat)
        else:
            reference = [] if chat else self.prefix
        shared = max(0, min(min(common_prefix(s, reference) for s in sequences), min(map(len, sequences)) - 1))
        keep_front = min(self._keep_front(sequences[0], chat), shared)
        return self.fit(sequences[0][:shared], [s[shared:] for s in sequences], keep_front,
                        report if report is not None else EncodeReport(), drop)

    @staticmethod
    def _cut(ids: list[int], keep_front: int, room: int) -> list[int]:
        body = ids[keep_front:]
        return ids[:keep_front] + (body[len(body) - room :] if room > 0 else [])

    def fit(self, prompt_ids: list[int], responses: list[list[int]], keep_front: int, report: EncodeReport,
            drop: bool = False):
        """Cut ``prompt_ids`` (after its first ``keep_front`` special tokens), then the responses, from the left to
        fit ``max_length``; None when ``drop``."""
        longest = max(len(r) for r in responses)
        if len(prompt_ids) + longest <= self.max_length:
            return prompt_ids, responses
        if drop:
            return None
        room = self.max_length - longest - keep_front
        if room >= 0:
            report.truncated_prompt += 1
            return self._cut(prompt_ids, keep_front, room), responses
        report.truncated_prompt += len(prompt_ids) > keep_front
        report.truncated_response += 1
        return prompt_ids[:keep_front], [r[len(r) - (self.max_length - keep_front) :] for r in responses]

    def encode(self, prompt: Text, response: Text, report: EncodeReport | None = None) -> list[int]:
        """Token ids of one prompt + response (cut from the left past ``max_length``)."""
        prompt_text, whole, chat = self.texts(prompt, response)
        shared, (rest,) = self.encode_group(prompt_text, [whole], chat, report)
        return self._checked(shared + rest)

    def encode_candidates(self, prompt: Text, responses: list[Text], report: EncodeReport | None = None):
        """(shared ids, [rest ids]) of n responses to one prompt (best-of-n): the prompt is cut to fit the
        longest."""
        texts = [self.texts(prompt, r) for r in responses]
        chat = texts[0][2]
        if any(t[2] != chat for t in texts):
            raise ScoringError("the candidates of one prompt must all be plain text or all be messages")
        return self.encode_group(texts[0][0], [t[1] for t in texts], chat, report)

    def encode_pair(self, pair: PreferencePair, report: EncodeReport) -> EncodedPair | None:
        prompt, chosen, rejected = self.pair_texts(pair)
        try:
            fitted = self.encode_group(prompt, [chosen, rejected], pair.chat, report, self.truncation == "drop")
        except ScoringError as e:
            raise ScoringError(f"{pair.origin}: {e}") from None
        if fitted is None:
            report.dropped.append(pair.origin)
            return None
        prompt_ids, (chosen_ids, rejected_ids) = fitted
        return EncodedPair(prompt_ids, chosen_ids, rejected_ids, pair.margin, pair.source, pair.origin)

    def encode_preference_group(self, group, report: EncodeReport) -> EncodedGroup | None:
        """A :class:`~rewardlab.data.groups.PreferenceGroup` → ids (None when dropped past ``max_length``)."""
        if group.chat:
            wholes = [group.prompt + r for r in group.responses]
        else:
            wholes = [self.texts(group.prompt, r)[1] for r in group.responses]
        try:
            fitted = self.encode_group(group.prompt, wholes, group.chat, report, self.truncation == "drop")
        except ScoringError as e:
            raise ScoringError(f"{group.origin}: {e}") from None
        if fitted is None:
            report.dropped.append(group.origin)
            return None
        weight = 1 / len(group.edges) if group.levels is not None else 1.0
        return EncodedGroup(fitted[0], fitted[1], group.edges, group.margins, group.levels, weight, group.source,
                            group.origin, group.ratings)

    def encode_pairs(self, pairs: list, name: str = "data") -> tuple[list, EncodeReport]:
        """Encode pairs (:class:`PreferencePair`) or groups (:class:`~rewardlab.data.groups.PreferenceGroup`)."""
        report = EncodeReport(unit="pairs" if all(isinstance(p, PreferencePair) for p in pairs) else "groups")
        encode = lambda p: self.encode_pair(p, report) if isinstance(p, PreferencePair) else \
            self.encode_preference_group(p, report)
        encoded = [e for e in map(encode, pairs) if e is not None]
        report.pairs = len(encoded)
        if not encoded:
            raise DataError(f"{name}: every pair is longer than max_length={self.max_length} ({report.summary()})")
        return encoded, report

    def encode_text(self, text: str, report: EncodeReport | None = None) -> list[int]:
        """Token ids of a whole text, prompt and response already joined (OpenRLHF's ``/get_reward`` queries).

        Pad text around it is stripped (where the pad token is the EOS, one trailing EOS is kept: it ends the text).
        A conversation (a text that opens as the chat template opens every conversation) is tokenized as it stands;
        plain text gets the special tokens a plain-text row gets, except those it already carries (a leading BOS /
        ``[CLS]`` is not doubled, nor a trailing EOS / ``[SEP]``)."""
        pad = self.tokenizer.pad_token
        if pad:
            while text.startswith(pad):
                text = text[len(pad) :]
            ended = text.endswith(pad)
            while text.endswith(pad):
                text = text[: -len(pad)]
            text += pad if ended and pad == self.tokenizer.eos_token else ""
        chat = bool(self._chat_opening) and text.startswith(self._chat_opening)
        body = self.tokenize(self._bounded(text), chat=True)
        if not chat:
            end = self.suffix + ([self.tokenizer.eos_token_id] if self.eos_text else [])
            body = (self.prefix if body[: len(self.prefix)] != self.prefix else []) + body
            body = body + (end if end and body[len(body) - len(end) :] != end else [])
        keep_front = self._keep_front(body, chat)
        _, (ids,) = self.fit(body[:keep_front], [body[keep_front:]], keep_front, report or EncodeReport())
        return self._checked(body[:keep_front] + ids)

    @functools.cached_property
    def _chat_opening(self) -> str:
        """How the chat template opens every conversation (the common start of two different ones), or ''."""
        if not self.tokenizer.chat_template:
            return ""
        renders = []
        for conversation in ([{"role": "system", "content": "\x01"}, {"role": "user", "content": "\x02"}],
                             [{"role": "user", "content": "\x03"}], [{"role": "user", "content": "\x04"}]):
            try:
                renders.append(self.render(conversation, False))
            except ScoringError:
                continue
        if len(renders) < 2:
            return ""
        opening = renders[0][: common_prefix(renders[0], renders[1])]
        return opening if opening.strip() else ""

    @staticmethod
    def _checked(ids: list[int]) -> list[int]:
        if not ids:
            raise ScoringError("an empty text with no special tokens has nothing to read a reward from")
        return ids
