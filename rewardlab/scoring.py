"""Score responses with a saved reward model: ``RewardModel.load(path).score(prompts, responses)``.

Texts are encoded by the model's own encoding policy (:class:`~rewardlab.data.encode.EncodingPolicy`, saved with it:
the joined text's tokens, the prompt cut from the left past ``max_length``) and rewards are read by its
:class:`~rewardlab.model.RewardModule`, so a score is the reward that training and evaluation saw.

Sequences are sorted by length and cut into batches of at most ``token_budget`` padded tokens (rows × longest row),
in which at least ``min_fill`` of the tokens are real (not padding): many short texts share one forward pass, long
ones go a few at a time, little is spent on padding, and the rewards come back in input order.
"""

from __future__ import annotations

import torch

from rewardlab.backbones import UntrustedModelError, load_classifier
from rewardlab.data.encode import EncodeReport, EncodingError, EncodingPolicy, Text, is_messages
from rewardlab.model import RewardModule
from rewardlab.offline import resolve_offline
from rewardlab.save import load_info

# Per device: (token budget, min fill). On CPU a padding token costs as much as a real one and a forward pass adds
# little, so batches are small and tight (MiniLM-L6: batches of 512-2048 tokens ran 1.4x faster than 16384); on a
# GPU the passes are what costs, so batches are big.
BATCHING = {"cuda": (16384, 0.5), "cpu": (2048, 0.9)}

ScoringError = EncodingError  # an input that cannot be scored; the message says why

__all__ = ["RewardModel", "ScoringError", "Text", "is_messages", "load_reward_model", "load_scorer"]


def load_reward_model(path_or_id: str, dtype: torch.dtype | str = "auto", trust_remote_code: bool = False):
    """(model in eval mode, tokenizer, encoder?, rewardlab info) for a model folder, adapter folder or hub id; the
    weights in the dtype they were saved in unless ``dtype`` says otherwise. Weights load from safetensors only, and
    code shipped with a model runs only with ``trust_remote_code=True`` (a refusal is a :class:`ScoringError`)."""
    source = resolve_offline(path_or_id) or path_or_id
    try:
        model, tokenizer, encoder = load_classifier(source, dtype=dtype, trust_remote_code=trust_remote_code)
    except UntrustedModelError as e:
        raise ScoringError(str(e)) from None
    return model.eval(), tokenizer, encoder, load_info(source)


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
        attention: how packed rows attend (``auto``, ``dense``, ``blocks``: :class:`RewardModule`), for evaluation
            in the packed layouts; scoring itself is padded or runs on the prompt's KV cache.

    Example::

        rm = RewardModel.load("runs/quickstart")
        rm.score(["How do I water a cactus?"], [" Every two to three weeks."])  # [reward]
        rm.rank("How do I water a cactus?", [" Daily.", " Every two to three weeks."])  # [(index, reward), ...]
    """

    def __init__(self, model, tokenizer, encoder: bool, info: dict | None = None, max_length: int | None = None,
                 token_budget: int | None = None, attention: str = "auto"):
        self.module = model if isinstance(model, RewardModule) else RewardModule(model, encoder, attention)
        config = self.module.classifier.config
        self.info = info or {}
        # A multi-attribute model (objective regression): one output per attribute, the reward their weighted sum.
        self.attributes = self.info.get("attributes") or []
        if config.num_labels != max(1, len(self.attributes)):
            raise ScoringError(f"a reward model has one output (or one per rated attribute, named in rewardlab.json); "
                               f"{config._name_or_path or type(model).__name__} has {config.num_labels} (is it a "
                               f"classifier rather than a reward model?)")
        self.reward_weights = self.info.get("reward_weights") or [1 / max(1, len(self.attributes))] * len(self.attributes)
        self.module.eval()
        saved = self.info.get("encoding", {"max_length": self.info.get("max_length")})
        self.policy = EncodingPolicy.from_dict(tokenizer, encoder, saved, max_length)
        default_budget, self.min_fill = BATCHING.get(self.module.device.type, BATCHING["cuda"])
        self.token_budget = token_budget or default_budget
        self.report = EncodeReport()  # counts the prompts and responses cut to fit max_length
        self.name = str(getattr(config, "_name_or_path", "") or type(model).__name__)
        # Saved by rewardlab in rewardlab.json and config.json; plain transformers keeps the latter.
        self.reward_mean = self.info.get("reward_mean", getattr(config, "reward_mean", None))
        self.reward_std = self.info.get("reward_std", getattr(config, "reward_std", None))

    @classmethod
    def load(cls, path_or_id: str, max_length: int | None = None, token_budget: int | None = None,
             device: str | None = None, trust_remote_code: bool = False, attention: str = "auto") -> RewardModel:
        """A rewardlab output folder, an offline backbone name, or any Hugging Face sequence-classification reward
        model (folder or hub id), on ``device`` (default: cuda when available, else cpu); safetensors weights only,
        and the model's own code only with ``trust_remote_code``."""
        model, tokenizer, encoder, info = load_reward_model(path_or_id, trust_remote_code=trust_remote_code)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model.to(device), tokenizer, encoder, info, max_length, token_budget, attention)

    @property
    def model(self):
        """The transformers model (possibly peft-wrapped)."""
        return self.module.model

    @property
    def tokenizer(self):
        return self.policy.tokenizer

    @property
    def max_length(self) -> int:
        return self.policy.max_length

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
        if self.module.encoder:
            rewards = self.score([prompt] * len(candidates), candidates)
        else:
            rewards = self.score_candidates(prompt, candidates)
        rewards = self.normalize(rewards) if normalize else rewards
        return sorted(enumerate(rewards), key=lambda item: -item[1])

    def score_candidates(self, prompt: Text, candidates: list[Text]) -> list[float]:
        """Rewards of n responses to one prompt with the prompt computed once (causal LMs; see
        :meth:`RewardModule.shared_prompt_rewards`). Equal to scoring each candidate with its prompt, except that
        past ``max_length`` the prompt is cut to fit the longest candidate."""
        shared, responses = self.policy.encode_candidates(prompt, candidates, self.report)
        if not shared:  # nothing to share
            return self.score_ids(responses)
        groups = self.candidate_groups([len(r) for r in responses])
        return [self.weighted(o) for o in self.module.shared_prompt_rewards(shared, responses, groups)]

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
        return self.policy.encode(prompt, response, self.report)

    def encode_text(self, text: str) -> list[int]:
        """Token ids of a whole text (prompt and response already joined, as OpenRLHF sends them); see
        :meth:`EncodingPolicy.encode_text`."""
        return self.policy.encode_text(text, self.report)

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

    def score_ids(self, sequences: list[list[int]], attributes: bool = False) -> list:
        """Rewards of encoded sequences (or with ``attributes``, every output), in input order, computed in
        token-budget batches."""
        run = self.module.score_sequences if attributes else self.forward
        outputs = [0.0] * len(sequences)
        for batch in self.batches([len(s) for s in sequences]):
            for i, output in zip(batch, run([sequences[i] for i in batch])):
                outputs[i] = output
        return outputs

    def forward(self, sequences: list[list[int]]) -> list[float]:
        """Rewards of one batch of sequences: one forward pass, right-padded as in training."""
        return [self.weighted(o) for o in self.module.score_sequences(sequences)]

    def weighted(self, output: float | list[float]) -> float:
        """A response's reward from its outputs: the one output, or Σ ``reward_weights`` · attribute."""
        return output if isinstance(output, float) else sum(w * o for w, o in zip(self.reward_weights, output))

    def score_attributes(self, prompts: list[Text], responses: list[Text]) -> list[dict[str, float]]:
        """Every attribute of every (prompt, response) of a multi-attribute model, plus its weighted ``reward``."""
        if not self.attributes:
            raise ScoringError(f"{self.name} rates no attributes (it was not trained with objective regression)")
        outputs = self.score_ids([self.encode(p, r) for p, r in zip(prompts, responses)], attributes=True)
        return [dict(zip(self.attributes, o)) | {"reward": self.weighted(o)} for o in outputs]


def load_scorer(path_or_id: str, max_length: int | None = None, token_budget: int | None = None,
                device: str | None = None, trust_remote_code: bool = False, reward: str | None = None,
                std_weight: float | None = None) -> RewardModel:
    """What scores with the model at ``path_or_id``: an :class:`~rewardlab.ensemble.EnsembleRewardModel` for an
    ensemble folder (``ensemble.json``; ``reward`` and ``std_weight`` override how its members combine), else a
    :class:`RewardModel` (see :meth:`RewardModel.load`)."""
    from rewardlab.ensemble import EnsembleRewardModel, is_ensemble

    if is_ensemble(path_or_id):
        return EnsembleRewardModel.load(path_or_id, max_length, token_budget, device, trust_remote_code, reward,
                                        std_weight)
    if reward is not None or std_weight is not None:
        raise ScoringError(f"{path_or_id} is one model, not an ensemble (no ensemble.json): there are no members to "
                           f"combine (--ensemble-reward, --std-weight)")
    return RewardModel.load(path_or_id, max_length, token_budget, device=device, trust_remote_code=trust_remote_code)

