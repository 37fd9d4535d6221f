"""Score responses with a saved reward model or ensemble: ``RewardModel.load(path).score(prompts, responses)``.

One scorer, by composition (:mod:`rewardlab.inference.parts`): a single model is an ensemble of one, so
:class:`RewardModel` has one code path for both and answers every question the same way (``size``, members'
rewards, uncertainty, normalisation). What it says of n responses is a :class:`Scores`: the reward, every member's
reward, and where a model has them, its attributes (and, for process reward models, a reward per step).

Texts are encoded by the model's own encoding policy (:class:`~rewardlab.data.encode.EncodingPolicy`, saved with
it: the joined text's tokens, the prompt cut from the left past ``max_length``) and rewards are read by its
:class:`~rewardlab.models.reward.RewardNetwork`, so a score is the reward that training and evaluation saw.

Sequences are sorted by length and cut into batches of at most ``token_budget`` padded tokens (rows × longest row),
in which at least ``min_fill`` of the tokens are real (not padding): many short texts share one forward pass, long
ones go a few at a time, little is spent on padding, and the rewards come back in input order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from rewardlab.data.encode import EncodeReport, Text
from rewardlab.errors import ScoringError
from rewardlab.inference.ensemble import load_ensemble
from rewardlab.inference.parts import Assembly, Output, load_single, single, spread
from rewardlab.models.manifest import is_ensemble
from rewardlab.models.reward import RewardNetwork

# Per device: (token budget, min fill). On CPU a padding token costs as much as a real one and a forward pass adds
# little, so batches are small and tight (MiniLM-L6: batches of 512-2048 tokens ran 1.4x faster than 16384); on a
# GPU the passes are what costs, so batches are big.
BATCHING = {"cuda": (16384, 0.5), "cpu": (2048, 0.9)}


@dataclass
class Scores:
    """What a scorer says of n responses. Shape notation: m = members (1 for a single model), n = responses.

    - ``rewards`` (n,): the reward, the members' combination (one member: its own reward)
    - ``members`` (m, n): every member's reward as it enters the combination (centred or normalised as asked)
    - ``attributes``: a multi-attribute model's ratings, attribute → (n,) (the members' mean), else None
    - ``steps``: a process reward model's reward for each step of each response, (n, steps), else None
    """

    rewards: list[float]
    members: list[list[float]]
    attributes: dict[str, list[float]] | None = None
    steps: list[list[float]] | None = None

    @property
    def mean(self) -> list[float]:
        """(n,) the members' mean."""
        return torch.tensor(self.members, dtype=torch.float64).mean(0).tolist()

    @property
    def uncertainty(self) -> list[float]:
        """(n,) the members' sample standard deviation (0 for one member)."""
        return spread(self.members)

    def select(self, indices: list[int]) -> Scores:
        """The scores of some of the responses."""
        pick = lambda values: [values[i] for i in indices]  # noqa: E731
        return Scores(pick(self.rewards), [pick(m) for m in self.members],
                      {a: pick(v) for a, v in self.attributes.items()} if self.attributes else None,
                      pick(self.steps) if self.steps else None)


class Scorer(Protocol):
    """What scores responses: a :class:`RewardModel` (one model or an ensemble), or a remote server
    (:class:`~rewardlab.inference.rlhf.RemoteRewardModel`, which answers ``score`` only)."""

    def score(self, prompts: list[Text], responses: list[Text], normalize: bool = False) -> list[float]:
        """One reward per (prompt, response), in input order."""


class RewardModel:
    """A reward model ready to score, one model or an ensemble of them (see the module's docstring).

    Built by :meth:`load` (a model folder, an ensemble folder, an offline name or a hub id). Scoring:
    :meth:`score`, :meth:`score_texts`, :meth:`rank` (best-of-n), :meth:`score_attributes`, and for the members and
    their spread :meth:`scores` / :meth:`score_members`. The server's batcher uses the lower level: :meth:`encode`,
    :meth:`batches`, :meth:`forward` (one pass) and :meth:`combine` (raw outputs → :class:`Scores`).

    Example::

        rm = RewardModel.load("runs/quickstart")
        rm.score(["How do I water a cactus?"], [" Every two to three weeks."])  # [reward]
        rm.rank("How do I water a cactus?", [" Daily.", " Every two to three weeks."])  # [(index, reward), ...]
    """

    def __init__(self, assembly: Assembly, token_budget: int | None = None):
        self.parts, self.members = assembly.parts, assembly.members
        self.policy, self.combination, self.name = assembly.policy, assembly.combination, assembly.name
        device = self.parts[0][0].network.device.type
        default_budget, self.min_fill = BATCHING.get(device, BATCHING["cuda"])
        widest = max(part.rows_per_sequence for part, _ in self.parts)
        self.token_budget = max(1, (token_budget or default_budget) // widest)  # a pass holds every adapter's rows
        self.report = EncodeReport()  # counts the prompts and responses cut to fit max_length

    @classmethod
    def of(cls, model, tokenizer, encoder: bool, info: dict | None = None, max_length: int | None = None,
           token_budget: int | None = None, attention: str = "auto") -> RewardModel:
        """A model already in memory: a transformers sequence classifier with one output (or one per rated
        attribute; possibly wrapped by peft) or a :class:`~rewardlab.models.reward.RewardNetwork`, its tokenizer,
        whether it is an encoder, and optionally its ``rewardlab.json`` (reward statistics, encoding)."""
        network = model if isinstance(model, RewardNetwork) else RewardNetwork(model, encoder, attention)
        return cls(single(network, tokenizer, encoder, info or {}, max_length), token_budget)

    @classmethod
    def load(cls, path_or_id: str, max_length: int | None = None, token_budget: int | None = None,
             device: str | None = None, trust_remote_code: bool = False, attention: str = "auto",
             reward: str | None = None, std_weight: float | None = None,
             batch_adapters: bool | None = None) -> RewardModel:
        """A rewardlab output folder, an ensemble folder (``ensemble.json``; ``reward`` and ``std_weight``
        override how its members combine), an offline backbone name, or any Hugging Face sequence-classification
        reward model (folder or hub id), on ``device`` (default: cuda when available, else cpu); safetensors
        weights only, and the model's own code only with ``trust_remote_code``."""
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if is_ensemble(path_or_id):
            assembly = load_ensemble(path_or_id, device, max_length, trust_remote_code, reward, std_weight,
                                     batch_adapters)
        elif reward is not None or std_weight is not None:
            raise ScoringError(f"{path_or_id} is one model, not an ensemble (no ensemble.json): there are no members "
                               f"to combine (--ensemble-reward, --std-weight)")
        else:
            assembly = load_single(path_or_id, device, max_length, trust_remote_code, attention)
        return cls(assembly, token_budget)

    # What it is

    @property
    def size(self) -> int:
        """Members (1: a single model)."""
        return len(self.members)

    @property
    def network(self):
        """The first part's :class:`~rewardlab.models.reward.RewardNetwork` (a single model's only one)."""
        return self.parts[0][0].network

    @property
    def tokenizer(self):
        return self.policy.tokenizer

    @property
    def max_length(self) -> int:
        return self.policy.max_length

    @property
    def attributes(self) -> list[str]:
        """The rated attributes every member shares (objective regression), else []."""
        first = self.members[0].attributes
        return first if all(m.attributes == first for m in self.members) else []

    @property
    def reward_weights(self) -> list[float]:
        return self.members[0].reward_weights if self.attributes else []

    @reward_weights.setter
    def reward_weights(self, weights: list[float]) -> None:
        """The weight of each attribute in the reward (every member's)."""
        if len(weights) != len(self.attributes):
            raise ScoringError(f"reward weights: one per attribute of {self.name} "
                               f"({', '.join(self.attributes) or 'it rates none'}), got {len(weights)}")
        for member in self.members:
            member.reward_weights = list(weights)

    @property
    def reward_mean(self) -> float | None:
        return self.members[0].reward_mean if self.size == 1 else None

    @property
    def reward_std(self) -> float | None:
        return self.members[0].reward_std if self.size == 1 else None

    # Scoring texts

    def score(self, prompts: list[Text], responses: list[Text], normalize: bool = False) -> list[float]:
        """One reward per (prompt, response), in input order.

        A prompt is a string or a list of messages; a response to a string prompt is a string, a response to a
        conversation is a string (the assistant's reply) or a list of messages. ``normalize`` scores each member as
        ``(r − reward_mean) / reward_std`` with the statistics saved at training time.
        """
        return self.scores(prompts, responses, normalize).rewards

    def scores(self, prompts: list[Text], responses: list[Text], normalize: bool = False) -> Scores:
        """Everything the model says of every (prompt, response): :class:`Scores`."""
        if isinstance(prompts, str) or isinstance(responses, str):
            raise ScoringError("prompts and responses must be lists (one item per response to score), not strings")
        if len(prompts) != len(responses):
            raise ScoringError(f"{len(prompts)} prompts but {len(responses)} responses; give one prompt per response")
        return self.score_ids([self.encode(p, r) for p, r in zip(prompts, responses)], normalize)

    def score_members(self, prompts: list[Text], responses: list[Text], normalize: bool = False) -> list[list[float]]:
        """[members][n]: every member's reward of every (prompt, response), as they combine."""
        return self.scores(prompts, responses, normalize).members

    def score_texts(self, texts: list[str], normalize: bool = False) -> list[float]:
        """One reward per whole text (prompt and response already joined); see :meth:`encode_text`."""
        return self.score_ids([self.encode_text(t) for t in texts], normalize).rewards

    def score_attributes(self, prompts: list[Text], responses: list[Text]) -> list[dict[str, float]]:
        """Every attribute of every (prompt, response) of a multi-attribute model, plus its weighted ``reward``."""
        if not self.attributes:
            raise ScoringError(f"{self.name} rates no attributes (it was not trained with objective regression)")
        scores = self.scores(prompts, responses)
        return [{a: scores.attributes[a][i] for a in self.attributes} | {"reward": scores.rewards[i]}
                for i in range(len(scores.rewards))]

    def rank(self, prompt: Text, candidates: list[Text], normalize: bool = False) -> list[tuple[int, float]]:
        """Best-of-n: ``(candidate index, reward)`` for every candidate, best first. A single causal LM computes the
        prompt once for all candidates (:meth:`score_candidates`)."""
        rewards = self.score_candidates(prompt, candidates, normalize)
        return sorted(enumerate(rewards), key=lambda item: -item[1])

    def score_candidates(self, prompt: Text, candidates: list[Text], normalize: bool = False) -> list[float]:
        """Rewards of n responses to one prompt. A single causal LM computes the prompt once for all of them (see
        :meth:`RewardNetwork.shared_prompt_rewards`): equal to scoring each candidate with its prompt, except that
        past ``max_length`` the prompt is cut to fit the longest candidate. Anything else scores them as
        :meth:`score`."""
        part = self.parts[0][0]
        if len(self.parts) > 1 or part.adapters is not None or part.network.encoder:
            return self.score([prompt] * len(candidates), candidates, normalize)
        shared, responses = self.policy.encode_candidates(prompt, candidates, self.report)
        if not shared:  # nothing to share
            return self.score_ids(responses, normalize).rewards
        groups = self.candidate_groups([len(r) for r in responses])
        outputs = part.network.shared_prompt_rewards(shared, responses, groups)
        return self.combine([outputs], normalize).rewards

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

    # Encoding and batches

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

    def forward(self, sequences: list[list[int]]) -> list[list[Output]]:
        """[members][n] raw outputs of one batch: one forward pass per part, right-padded as in training."""
        out: list = [None] * self.size
        for part, indices in self.parts:
            for k, outputs in zip(indices, part.forward(sequences)):
                out[k] = outputs
        return out

    def score_ids(self, sequences: list[list[int]], normalize: bool = False) -> Scores:
        """:class:`Scores` of encoded sequences, in input order, computed in token-budget batches."""
        outputs: list[list[Output]] = [[0.0] * len(sequences) for _ in range(self.size)]
        for batch in self.batches([len(s) for s in sequences]):
            for k, member_outputs in enumerate(self.forward([sequences[i] for i in batch])):
                for i, output in zip(batch, member_outputs):
                    outputs[k][i] = output
        return self.combine(outputs, normalize)

    # From members' outputs to scores

    def check_normalizable(self) -> None:
        """Raise :class:`ScoringError` unless every member has the reward statistics that normalising needs."""
        missing = [k for k, m in enumerate(self.members) if not m.normalizable]
        if missing:
            which = "" if self.size == 1 else f"member {missing[0]} of "
            raise ScoringError(f"normalising needs the reward mean and std that rewardlab saves with a trained model "
                               f"(rewardlab.json, or reward_mean/reward_std in config.json); {which}{self.name} has "
                               f"none")

    def combine(self, outputs: list[list[Output]], normalize: bool = False) -> Scores:
        """[members][n] raw outputs → :class:`Scores`: each member's reward (centred at its mean when the
        combination says so, or with ``normalize`` ``(r − reward_mean) / reward_std`` with its own statistics),
        then their combination."""
        if normalize:
            self.check_normalizable()
        members = []
        for member, row in zip(self.members, outputs):
            rewards = [member.reward(o) for o in row]
            if normalize:
                rewards = [(r - member.reward_mean) / member.reward_std for r in rewards]
            elif self.combination.center:
                rewards = [r - member.reward_mean for r in rewards]
            members.append(rewards)
        attributes = None
        if self.attributes:
            values = torch.tensor(outputs, dtype=torch.float64).mean(0)  # (n, a): the members' mean
            attributes = {a: values[:, j].tolist() for j, a in enumerate(self.attributes)}
        return Scores(self.combination(members), members, attributes)


def load_scorer(path_or_id: str, max_length: int | None = None, token_budget: int | None = None,
                device: str | None = None, trust_remote_code: bool = False, reward: str | None = None,
                std_weight: float | None = None) -> RewardModel:
    """What scores with the model at ``path_or_id``: :meth:`RewardModel.load` (a model or an ensemble folder)."""
    return RewardModel.load(path_or_id, max_length, token_budget, device, trust_remote_code, reward=reward,
                            std_weight=std_weight)
