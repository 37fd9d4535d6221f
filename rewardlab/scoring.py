"""Score responses with a saved reward model: ``RewardModel.load(path).score(prompts, responses)``.

Texts are encoded exactly as training encodes them (:class:`~rewardlab.data.encode.PairEncoder`: the same special
tokens, the prompt cut from the left past ``max_length``) and rewards come from the same head
(:func:`~rewardlab.heads.sequence_rewards`), so a score is the reward that training and evaluation saw.

Sequences are sorted by length and cut into batches of at most ``token_budget`` padded tokens (rows × longest row),
in which at least ``min_fill`` of the tokens are real (not padding): many short texts share one forward pass, long
ones go a few at a time, little is spent on padding, and the rewards come back in input order.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from rewardlab.backbones import is_encoder
from rewardlab.data.collate import pad_sequences, reward_token
from rewardlab.data.collate import attention_mask as unit_attention
from rewardlab.data.encode import EncodeReport, PairEncoder
from rewardlab.data.formats import DataError
from rewardlab.heads import classifier_of, head_rewards, sequence_rewards
from rewardlab.offline import resolve_offline
from rewardlab.save import load_info

# Per device: (token budget, min fill). On CPU a padding token costs as much as a real one and a forward pass adds
# little, so batches are small and tight (MiniLM-L6: batches of 512-2048 tokens ran 1.4x faster than 16384); on a
# GPU the passes are what costs, so batches are big.
BATCHING = {"cuda": (16384, 0.5), "cpu": (2048, 0.9)}

# A prompt or a response: plain text, or a list of {"role", "content"} messages rendered with the chat template.
Text = str | list[dict]


class ScoringError(DataError):
    """An input that cannot be scored; the message says why."""


def load_reward_model(path_or_id: str, trust_remote_code: bool = False):
    """(model in eval mode, tokenizer, encoder?, rewardlab info) for a model folder, adapter folder or hub id.

    Weights load from safetensors only (a pickle such as ``pytorch_model.bin`` can run code as it loads), and code
    shipped with a model (``auto_map``) runs only with ``trust_remote_code=True``."""
    source = resolve_offline(path_or_id) or path_or_id
    if Path(source).is_dir() and not any(Path(source).glob("*.safetensors")):
        found = ", ".join(sorted(p.name for p in Path(source).iterdir())) or "nothing"
        raise ScoringError(f"{source} holds no .safetensors weights (it has: {found:.200}); rewardlab loads weights "
                           f"only from safetensors, since a pickle file (pytorch_model.bin) can run code when loaded. "
                           f"Where you trust the file, convert it once with transformers' save_pretrained")
    remote = {"trust_remote_code": trust_remote_code}
    weights = {"use_safetensors": True, **remote}
    try:
        config = AutoConfig.from_pretrained(source, **remote)
    except ValueError as e:
        if "trust_remote_code" not in str(e):
            raise
        raise ScoringError(f"{source} ships its own Python code (auto_map in config.json), which rewardlab runs only "
                           f"when asked: --trust-remote-code (trust_remote_code=True), if you trust it") from None
    if Path(source, "adapter_config.json").is_file():
        from peft import AutoPeftModelForSequenceClassification

        model = AutoPeftModelForSequenceClassification.from_pretrained(source, num_labels=1, **weights)
    elif any(a.endswith("ForSequenceClassification") for a in config.architectures or []):
        model = AutoModelForSequenceClassification.from_pretrained(source, **weights)
    else:  # a plain backbone (e.g. an offline name): a new, untrained one-output head
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1, **weights)
    tokenizer = AutoTokenizer.from_pretrained(source, **remote)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer, is_encoder(config), load_info(source)


def is_messages(value) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)


class RewardModel:
    """A reward model ready to score: encoding as in training, token-budget batches, optional normalisation.

    Args:
        model: a sequence-classification model with one output (in eval mode, on its device).
        tokenizer: its tokenizer.
        encoder: True for encoders (reward at the first token), False for causal LMs (at the last real token).
        info: ``rewardlab.json`` of a saved model (``reward_mean``, ``reward_std``, ``max_length``), or {}.
        max_length: tokens per sequence; default ``info["max_length"]``, else 512.
        token_budget: most padded tokens (rows × longest row) in one forward pass; default 16384 on a GPU, 2048 on
            CPU. (The share of real tokens a batch must hold, ``min_fill``, is 0.5 on a GPU, 0.9 on CPU.)

    Example::

        rm = RewardModel.load("runs/quickstart")
        rm.score(["How do I water a cactus?"], [" Every two to three weeks."])  # [reward]
        rm.rank("How do I water a cactus?", [" Daily.", " Every two to three weeks."])  # [(index, reward), ...]
    """

    def __init__(self, model, tokenizer, encoder: bool, info: dict | None = None, max_length: int | None = None,
                 token_budget: int | None = None):
        if model.config.num_labels != 1:
            raise ScoringError(f"a reward model has one output; {model.config._name_or_path or type(model).__name__} "
                               f"has {model.config.num_labels} (is it a classifier rather than a reward model?)")
        self.model, self.tokenizer, self.info = model.eval(), tokenizer, info or {}
        max_length = max_length or self.info.get("max_length") or 512
        self.pair_encoder = PairEncoder(tokenizer, encoder, max_length, "truncate")
        device = next(model.parameters()).device.type
        default_budget, self.min_fill = BATCHING.get(device, BATCHING["cuda"])
        self.token_budget = token_budget or default_budget
        self.report = EncodeReport()  # counts the prompts and responses cut to fit max_length
        self.name = str(getattr(model.config, "_name_or_path", "") or type(model).__name__)
        # Saved by rewardlab in rewardlab.json and config.json; plain transformers keeps the latter.
        self.reward_mean = self.info.get("reward_mean", getattr(model.config, "reward_mean", None))
        self.reward_std = self.info.get("reward_std", getattr(model.config, "reward_std", None))

    @classmethod
    def load(cls, path_or_id: str, max_length: int | None = None, token_budget: int | None = None,
             device: str | None = None, trust_remote_code: bool = False) -> RewardModel:
        """A rewardlab output folder, an offline backbone name, or any Hugging Face sequence-classification reward
        model (folder or hub id), on ``device`` (default: cuda when available, else cpu); safetensors weights only,
        and the model's own code only with ``trust_remote_code``."""
        model, tokenizer, encoder, info = load_reward_model(path_or_id, trust_remote_code)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model.to(device), tokenizer, encoder, info, max_length, token_budget)

    @property
    def max_length(self) -> int:
        return self.pair_encoder.max_length

    def score(self, prompts: list[Text], responses: list[Text], normalize: bool = False) -> list[float]:
        """One reward per (prompt, response), in input order.

        A prompt is a string or a list of messages; a response to a string prompt is a string, a response to a
        conversation is a string (the assistant's reply) or a list of messages. ``normalize`` returns
        ``(r − reward_mean) / reward_std`` with the statistics saved at training time.
        """
        if isinstance(prompts, str) or isinstance(responses, str):
            raise ScoringError("prompts and responses must be lists (one item per response to score), not strings")
        if len(prompts) != len(responses):
            raise ScoringError(f"{len(prompts)} prompts but {len(responses)} responses; give one prompt per response")
        rewards = self.score_ids([self.encode(p, r) for p, r in zip(prompts, responses)])
        return self.normalize(rewards) if normalize else rewards

    def score_texts(self, texts: list[str], normalize: bool = False) -> list[float]:
        """One reward per whole text (prompt and response already joined); see :meth:`encode_text`."""
        rewards = self.score_ids([self.encode_text(t) for t in texts])
        return self.normalize(rewards) if normalize else rewards

    def rank(self, prompt: Text, candidates: list[Text], normalize: bool = False) -> list[tuple[int, float]]:
        """Best-of-n: ``(candidate index, reward)`` for every candidate, best first. For causal LMs the prompt is
        computed once for all candidates (:meth:`score_candidates`)."""
        if self.pair_encoder.encoder:
            rewards = self.score([prompt] * len(candidates), candidates)
        else:
            rewards = self.score_candidates(prompt, candidates)
        rewards = self.normalize(rewards) if normalize else rewards
        return sorted(enumerate(rewards), key=lambda item: -item[1])

    @torch.inference_mode()
    def score_candidates(self, prompt: Text, candidates: list[Text]) -> list[float]:
        """Rewards of n responses to one prompt with the prompt computed once (causal LMs). One forward pass over the
        prompt keeps its keys and values (the model's KV cache); then the candidates, end to end in one row as many
        as ``token_budget`` allows, attend to that cache and each to itself only, positioned right after the prompt
        — the prefix-shared layout of training, with the prompt's own attention done causally in its pass. Equal
        to scoring each candidate with its prompt, except that past ``max_length`` the prompt is cut to fit the
        longest candidate."""
        encoded = [self.encode_parts(prompt, c) for c in candidates]
        prompt_ids = encoded[0][0]
        chat = not (isinstance(prompt, str) and all(isinstance(c, str) for c in candidates))
        keep_front = 0 if chat else len(self.pair_encoder.prefix)
        prompt_ids, responses = self.pair_encoder.fit(prompt_ids, [r for _, r in encoded], keep_front, self.report)
        if not prompt_ids:  # nothing to share
            return self.score_ids(responses)
        classifier, pad_id, start = classifier_of(self.model), self.tokenizer.pad_token_id, len(prompt_ids)
        device = next(self.model.parameters()).device
        # transformers 5.x renamed past_key_values to cache (the old name warns, and goes in 5.40)
        parameters = inspect.signature(classifier.base_model.forward).parameters
        cache_arg = "cache" if "cache" in parameters else "past_key_values"
        out = classifier.base_model(input_ids=torch.tensor([prompt_ids], device=device), use_cache=True)
        prompt_hidden, cache = out.last_hidden_state[0], out[cache_arg]
        dtype = prompt_hidden.dtype
        reward_states = [None] * len(candidates)
        for group in self.candidate_groups([len(r) for r in responses]):
            ids = [t for k in group for t in responses[k]]
            part_of = torch.tensor([[i for i, k in enumerate(group, 1) for _ in responses[k]]])
            allowed = unit_attention(torch.zeros_like(part_of), part_of, encoder=False)[0, 0]  # each sees itself
            mask = torch.zeros(1, 1, len(ids), start + len(ids), dtype=dtype)
            mask[0, 0, :, start:].masked_fill_(~allowed, torch.finfo(dtype).min)  # and the whole prompt
            positions = [start + i for k in group for i in range(len(responses[k]))]
            states = classifier.base_model(
                input_ids=torch.tensor([ids], device=device), attention_mask=mask.to(device),
                position_ids=torch.tensor([positions], device=device), use_cache=True, **{cache_arg: cache},
            ).last_hidden_state[0]
            cache.crop(-len(ids))  # back to the prompt alone, for the next group
            offset = 0
            for k in group:
                token = reward_token(prompt_ids + responses[k], list(range(start + len(responses[k]))), pad_id, False)
                # a response of pad tokens only is read where the prompt ends, as one-by-one scoring does
                reward_states[k] = prompt_hidden[token] if token < start else states[offset + token - start]
                offset += len(responses[k])
        return head_rewards(classifier, torch.stack(reward_states)).float().tolist()

    def candidate_groups(self, lengths: list[int]) -> list[list[int]]:
        """Consecutive candidates in groups of at most ``token_budget`` tokens (a longer one goes alone)."""
        groups, current, used = [], [], 0
        for k, length in enumerate(lengths):
            if current and used + length > self.token_budget:
                groups.append(current)
                current, used = [], 0
            current.append(k)
            used += length
        return groups + [current]

    def normalize(self, rewards: list[float]) -> list[float]:
        """``(r − reward_mean) / reward_std`` with the statistics saved with the model."""
        if self.reward_mean is None or not self.reward_std:
            raise ScoringError(
                f"normalising needs the reward mean and std that rewardlab saves with a trained model "
                f"(rewardlab.json, or reward_mean/reward_std in config.json); {self.name} has none"
            )
        return [(r - self.reward_mean) / self.reward_std for r in rewards]

    def encode(self, prompt: Text, response: Text) -> list[int]:
        """Token ids of one prompt + response, as training encodes them (prompt cut from the left past
        ``max_length``)."""
        chat = not (isinstance(prompt, str) and isinstance(response, str))
        prompt_ids, response_ids = self.encode_parts(prompt, response)
        keep_front = 0 if chat else len(self.pair_encoder.prefix)
        prompt_ids, (response_ids,) = self.pair_encoder.fit(prompt_ids, [response_ids], keep_front, self.report)
        return self._checked(prompt_ids + response_ids)

    def encode_parts(self, prompt: Text, response: Text) -> tuple[list[int], list[int]]:
        """(prompt ids, response ids) with special tokens, before fitting to ``max_length``."""
        if isinstance(prompt, str) and isinstance(response, str):
            return self.pair_encoder.encode_sequence(prompt, response)
        return self.pair_encoder.encode_sequence(*self.render_chat(prompt, response), chat=True)

    def encode_text(self, text: str) -> list[int]:
        """Token ids of a whole text (prompt and response already joined, as OpenRLHF sends them), scored as a
        response to an empty prompt. Special tokens the text already carries are not added twice: padding text
        around it is stripped, a leading BOS/``[CLS]`` is kept once, a trailing EOS is not doubled."""
        encoder, pad = self.pair_encoder, self.tokenizer.pad_token
        while pad and text.startswith(pad):
            text = text[len(pad) :]
        while pad and text.endswith(pad):
            text = text[: -len(pad)]
        prompt_ids, response_ids = encoder.encode_sequence("", text)
        if response_ids[: len(prompt_ids)] == prompt_ids:
            prompt_ids = []
        prompt_ids, (response_ids,) = encoder.fit(prompt_ids, [response_ids], len(prompt_ids), self.report)
        return self._checked(prompt_ids + response_ids)

    def render_chat(self, prompt: list[dict], response: Text) -> tuple[str, str]:
        """(prompt text, response text) of a conversation, rendered as training renders conversational rows: the
        prompt with the generation prompt, the response as the rest of the whole rendered conversation."""
        if not self.tokenizer.chat_template:
            raise ScoringError(f"messages need a tokenizer with a chat template; {self.name}'s tokenizer has none")
        if not is_messages(prompt):
            raise ScoringError(
                f"a conversation's prompt must be a list of {{role, content}} messages (and a plain-text prompt needs "
                f"a plain-text response), got {type(prompt).__name__}"
            )
        reply = [{"role": "assistant", "content": response}] if isinstance(response, str) else response
        if not is_messages(reply):
            raise ScoringError(f"a response must be a string or a list of {{role, content}} messages, "
                               f"got {reply!r:.80}")

        def render(messages, prompt_only):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt_only)

        prompt_text = render(prompt, True) if prompt else ""
        full = render(prompt + reply, False)
        if not full.startswith(prompt_text):
            raise ScoringError("the chat template does not render the prompt as a prefix of the conversation")
        return prompt_text, full[len(prompt_text) :]

    def _checked(self, ids: list[int]) -> list[int]:
        if not ids:
            raise ScoringError("an empty text with no special tokens has nothing to read a reward from")
        return ids

    def batches(self, lengths: list[int]) -> list[list[int]]:
        """Indices grouped into batches of at most ``token_budget`` padded tokens, longest sequences first (a
        sequence longer than the budget goes alone). A sequence no longer than ``min_fill`` × its batch's first
        starts a new batch, so at least that share of every batch is real tokens, however few inputs there are."""
        batches, current = [], []
        for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
            width = lengths[current[0]] if current else 0  # longest first: the first row sets the padded width
            if current and ((len(current) + 1) * width > self.token_budget or lengths[i] <= self.min_fill * width):
                batches.append(current)
                current = []
            current.append(i)
        return batches + [current] if current else batches

    def score_ids(self, sequences: list[list[int]]) -> list[float]:
        """Rewards of encoded sequences, in input order, computed in token-budget batches."""
        rewards = [0.0] * len(sequences)
        for batch in self.batches([len(s) for s in sequences]):
            for i, reward in zip(batch, self.forward([sequences[i] for i in batch])):
                rewards[i] = reward
        return rewards

    @torch.inference_mode()
    def forward(self, sequences: list[list[int]]) -> list[float]:
        """Rewards of one batch of sequences: one forward pass, right-padded as in training."""
        input_ids, attention_mask = pad_sequences(sequences, self.tokenizer.pad_token_id)
        device = next(self.model.parameters()).device
        return sequence_rewards(self.model, input_ids.to(device), attention_mask.to(device)).float().tolist()
