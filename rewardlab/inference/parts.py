"""What a scorer is made of: members (each a reward model's statistics and attribute weights), the loaded networks
that compute them (:class:`NetworkPart`: one model, or LoRA adapters over one shared base), and how members combine.

A single model is an ensemble of one: one part, one member, combined by the mean of one (its own reward). So the
scorer (:class:`~rewardlab.inference.scorer.RewardModel`) has one code path for both, and nothing that uses it needs
to know which it holds.

Shape notation: m = members, n = sequences, a = a member's outputs (1, or one per rated attribute).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rewardlab.data.collate import pad_sequences
from rewardlab.data.encode import EncodingPolicy
from rewardlab.errors import ScoringError, UntrustedModelError
from rewardlab.models.loading import load_classifier
from rewardlab.models.manifest import check_combination
from rewardlab.models.offline import resolve_offline
from rewardlab.models.reward import RewardNetwork
from rewardlab.models.saved import load_info

Output = float | list[float]  # one sequence's outputs from one member: its reward, or one value per attribute


@dataclass
class Member:
    """One reward model of a scorer: its statistics on its evaluation set and, for a multi-attribute model (objective
    regression), its attributes and their weights in the reward."""

    reward_mean: float | None = None
    reward_std: float | None = None
    attributes: list[str] = field(default_factory=list)
    reward_weights: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, info: dict, config) -> Member:
        """From ``rewardlab.json`` (and, for models saved without it, ``config.json``'s reward statistics)."""
        attributes = info.get("attributes") or []
        weights = info.get("reward_weights") or [1 / max(1, len(attributes))] * len(attributes)
        return cls(info.get("reward_mean", getattr(config, "reward_mean", None)),
                   info.get("reward_std", getattr(config, "reward_std", None)), attributes, weights)

    def reward(self, output: Output) -> float:
        """A response's reward from its outputs: the one output, or Σ ``reward_weights`` · attribute."""
        return output if isinstance(output, float) else sum(w * o for w, o in zip(self.reward_weights, output))

    @property
    def normalizable(self) -> bool:
        return self.reward_mean is not None and bool(self.reward_std)


@dataclass
class Combination:
    """How members' rewards become one: ``mean``, ``min`` or ``mean_minus_std`` (mean − ``std_weight`` · the sample
    std across members), each member first centred at its reward mean when ``center``."""

    reward: str = "mean"
    std_weight: float = 1.0
    center: bool = False

    def check(self, where: str) -> None:
        check_combination(self.reward, self.std_weight, where)

    def __call__(self, members: list[list[float]]) -> list[float]:
        return combine(members, self.reward, self.std_weight)


def combine(members: list[list[float]], reward: str, std_weight: float) -> list[float]:
    """[members][n] → the n combined rewards: the mean, the minimum or mean − λ·std across members."""
    values = torch.tensor(members, dtype=torch.float64)
    if reward == "min":
        return values.min(0).values.tolist()
    if reward == "mean_minus_std":
        return (values.mean(0) - std_weight * values.std(0)).tolist()
    return values.mean(0).tolist()


def spread(members: list[list[float]]) -> list[float]:
    """[members][n] → the n sample standard deviations (n − 1 in the denominator) across members; 0 for one."""
    values = torch.tensor(members, dtype=torch.float64)
    return values.std(0).tolist() if len(members) > 1 else [0.0] * values.shape[1]


class NetworkPart:
    """A loaded reward network and the members it computes: itself (``adapters`` None), or one member per LoRA
    adapter over its shared base.

    Args:
        network: the :class:`~rewardlab.models.reward.RewardNetwork` (in eval mode, on its device).
        adapters: the adapter names of its members, or None.
        batch_adapters: the adapters' rows run as one forward pass of n·k rows (peft's ``adapter_names``); False
            runs the batch once per adapter (``set_adapter``).
    """

    def __init__(self, network: RewardNetwork, adapters: list[str] | None = None, batch_adapters: bool = False):
        self.network, self.adapters, self.batch_adapters = network, adapters, batch_adapters

    @property
    def size(self) -> int:
        return len(self.adapters) if self.adapters else 1

    @property
    def rows_per_sequence(self) -> int:
        """Rows a sequence takes in one forward pass."""
        return self.size if self.adapters and self.batch_adapters else 1

    @torch.inference_mode()
    def forward(self, sequences: list[list[int]]) -> list[list[Output]]:
        """[members of the part][n] outputs of one batch."""
        if self.adapters is None:
            return [self.network.score_sequences(sequences)]
        model = self.network.model
        if not self.batch_adapters:
            outputs = []
            for adapter in self.adapters:
                model.set_adapter(adapter)
                outputs.append(self.network.score_sequences(sequences))
            return outputs
        input_ids, mask = pad_sequences(sequences, self.network.pad_token_id)
        n, k, device = len(sequences), len(self.adapters), self.network.device
        logits = model(input_ids=input_ids.repeat(k, 1).to(device), attention_mask=mask.repeat(k, 1).to(device),
                       adapter_names=[a for a in self.adapters for _ in range(n)]).logits
        flat = logits.squeeze(-1).float().tolist()
        return [flat[j * n : (j + 1) * n] for j in range(k)]


@dataclass
class Assembly:
    """Everything a scorer is built from: parts with the member indices each computes, every member, the one
    encoding policy they share, how they combine, and a name for messages."""

    parts: list[tuple[NetworkPart, list[int]]]
    members: list[Member]
    policy: EncodingPolicy
    combination: Combination
    name: str


def load_network(path_or_id: str, device: str, trust_remote_code: bool = False, attention: str = "auto"):
    """(network in eval mode on ``device``, tokenizer, encoder?, rewardlab info) of a model folder, adapter folder
    or hub id; safetensors only, and a model's own code only with ``trust_remote_code``."""
    source = resolve_offline(path_or_id) or path_or_id
    try:
        model, tokenizer, encoder = load_classifier(source, trust_remote_code=trust_remote_code)
    except UntrustedModelError as e:
        raise ScoringError(str(e)) from None
    return RewardNetwork(model.to(device), encoder, attention), tokenizer, encoder, load_info(source)


def single(network: RewardNetwork, tokenizer, encoder: bool, info: dict, max_length: int | None = None) -> Assembly:
    """One model as an ensemble of one: its own reward, uncombined (the mean of one) and uncentred."""
    network.eval()  # the wrapper too: a probe that restores the wrapper's mode must not turn dropout on
    config = network.classifier.config
    member = Member.of(info, config)
    if config.num_labels != max(1, len(member.attributes)):
        raise ScoringError(f"a reward model has one output (or one per rated attribute, named in rewardlab.json); "
                           f"{config._name_or_path or type(network.model).__name__} has {config.num_labels} (is it a "
                           f"classifier rather than a reward model?)")
    saved = info.get("encoding", {"max_length": info.get("max_length")})
    policy = EncodingPolicy.from_dict(tokenizer, encoder, saved, max_length)
    name = str(getattr(config, "_name_or_path", "") or type(network.model).__name__)
    return Assembly([(NetworkPart(network), [0])], [member], policy, Combination(), name)


def load_single(path_or_id: str, device: str, max_length: int | None = None, trust_remote_code: bool = False,
                attention: str = "auto") -> Assembly:
    network, tokenizer, encoder, info = load_network(path_or_id, device, trust_remote_code, attention)
    return single(network, tokenizer, encoder, info, max_length)
