"""Ensembles of reward models: one folder, N members, one combined reward and the members' spread.

```
OUT/ensemble.json   the manifest: members (folder, seed, backbone, base), how to combine them
OUT/member-0/ ...   each member a folder that AutoModelForSequenceClassification.from_pretrained loads: full
                    fine-tuning, a plain sequence classifier (as `rewardlab train` saves one); LoRA, its adapter and
                    head (peft), over
OUT/base-0/         the frozen backbone its LoRA members share, saved once (one per backbone)
```

:class:`EnsembleRewardModel` is a :class:`~rewardlab.scoring.RewardModel` (its encoding, token-budget batches and
``score``/``rank``/``score_texts``), whose reward is the members' combination: ``mean``, ``min`` or
``mean_minus_std`` (mean − λ·std, a conservative reward for RLHF; Coste et al., 2023, arXiv 2310.02743; Eisenstein
et al., 2023, arXiv 2312.09244). LoRA members over one base are one model in memory, the base with N adapters, and a
batch of n sequences is one forward pass of n·N rows, each row through its member's adapter (peft's mixed-adapter
batches).

Each member's reward is centred at its reward mean on its evaluation set (``center_members``): a Bradley–Terry
reward is defined up to a constant, so the spread of uncentred members would measure their offsets.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rewardlab.config import ENSEMBLE_REWARDS
from rewardlab.data.collate import pad_sequences
from rewardlab.data.encode import EncodingPolicy
from rewardlab.save import load_info
from rewardlab.scoring import RewardModel, ScoringError, Text, load_reward_model

MANIFEST = "ensemble.json"
FORMAT = "rewardlab-ensemble/1"
PROBES = [("How do I water a cactus?", " Every two to three weeks."), ("Hi" * 300, " ok"),
          ([{"role": "user", "content": "Hi?"}], [{"role": "assistant", "content": "Hello."}])]


def is_ensemble(path: str | Path) -> bool:
    return Path(path, MANIFEST).is_file()


def read_manifest(path: str | Path) -> dict:
    """The manifest of an ensemble folder, checked: a malformed one is a :class:`ScoringError` naming the key."""
    file = Path(path, MANIFEST)
    try:
        manifest = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise ScoringError(f"{file}: not a readable ensemble manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ScoringError(f"{file}: 'format' must be {FORMAT!r}")
    members = manifest.get("members")
    if not isinstance(members, list) or len(members) < 2 or not all(isinstance(m, dict) and "path" in m for m in members):
        raise ScoringError(f"{file}: 'members' must list at least 2 members, each with a 'path'")
    check_combination(manifest.get("reward"), manifest.get("std_weight"), str(file))
    for member in members:
        for key in ("path", "base"):
            if member.get(key) is not None and not Path(path, member[key]).is_dir():
                raise ScoringError(f"{file}: member folder {member[key]!r} is not in {path}")
    return manifest


def check_combination(reward, std_weight, where: str) -> None:
    if reward not in ENSEMBLE_REWARDS:
        raise ScoringError(f"{where}: reward {reward!r} is not allowed; choose one of: {', '.join(ENSEMBLE_REWARDS)}")
    if isinstance(std_weight, bool) or not isinstance(std_weight, (int, float)) or not 0 <= std_weight < float("inf"):
        raise ScoringError(f"{where}: std_weight (λ in mean − λ·std) must be a number >= 0, got {std_weight!r}")


def encoding_probe(policy: EncodingPolicy) -> list:
    """What ``policy`` makes of a few probe texts (plain, past max_length, a conversation where it has a chat
    template): two policies that agree on them encode alike."""
    probes = PROBES if policy.tokenizer.chat_template else PROBES[:2]
    return [policy.to_dict(), policy.tokenizer.chat_template] + [policy.encode(p, r) for p, r in probes]


def combine(members: list[list[float]], reward: str, std_weight: float) -> list[float]:
    """[members][n] → the n combined rewards: the mean, the minimum or mean − λ·std across members."""
    values = torch.tensor(members, dtype=torch.float64)
    if reward == "min":
        return values.min(0).values.tolist()
    if reward == "mean_minus_std":
        return (values.mean(0) - std_weight * values.std(0)).tolist()
    return values.mean(0).tolist()


def spread(members: list[list[float]]) -> list[float]:
    """[members][n] → the n sample standard deviations (n − 1 in the denominator) across members."""
    return torch.tensor(members, dtype=torch.float64).std(0).tolist()


class EnsembleRewardModel(RewardModel):
    """Several reward models that score as one: ``score`` returns the combined reward, so anything that takes a
    :class:`RewardModel` takes an ensemble; ``score_members`` returns every member's reward and :meth:`summary` the
    mean, the spread (``std``) and the combination.

    Args:
        parts: the loaded models, each a :class:`RewardModel` with the adapter names of its members (a LoRA base
            with N adapters) or None (one member), and the indices of those members in the ensemble.
        member_stats: every member's (reward mean, reward std) on its evaluation set.
        reward, std_weight: how members combine (``mean``, ``min``, ``mean_minus_std``; λ).
        center_members: subtract each member's reward mean before combining.
        batch_adapters: LoRA members over one base run as one forward pass of n·N rows (peft's ``adapter_names``);
            False runs the batch once per adapter (``set_adapter``). Default: batched on a GPU; one adapter at a time
            on CPU, where it measured 12% faster (README, "Ensembles and weight averaging").
        max_length, token_budget: as for :class:`RewardModel`; the budget counts every member's rows of a pass.

    All members encode alike (checked at load, :func:`encoding_probe`): a text is encoded once for all of them.
    """

    def __init__(self, parts: list[tuple[RewardModel, list[str] | None, list[int]]],
                 member_stats: list[tuple[float | None, float | None]], reward: str = "mean", std_weight: float = 1.0,
                 center_members: bool = True, batch_adapters: bool | None = None, max_length: int | None = None,
                 token_budget: int | None = None, name: str = "ensemble"):
        lead = parts[0][0]
        super().__init__(lead.module, lead.tokenizer, lead.module.encoder, lead.info, max_length, token_budget)
        for part, _, _ in parts[1:]:
            if encoding_probe(part.policy) != encoding_probe(lead.policy):
                raise ScoringError(f"the members of {name} encode texts differently ({lead.name} and {part.name}): an "
                                   "ensemble encodes a text once for all members, so they must share a tokenizer")
        check_combination(reward, std_weight, name)
        if batch_adapters is None:
            batch_adapters = self.module.device.type == "cuda"
        self.parts, self.member_stats, self.batch_adapters = parts, member_stats, batch_adapters
        self.reward, self.std_weight, self.center_members = reward, float(std_weight), center_members
        self.attributes, self.reward_weights = [], []  # members weigh their own attributes
        self.name = name
        if center_members and any(mean is None for mean, _ in member_stats):
            raise ScoringError(f"{name}: centring members needs each one's reward mean (rewardlab.json)")
        widest = max(len(adapters or [None]) for _, adapters, _ in parts)
        if batch_adapters and widest > 1:
            self.token_budget = max(1, self.token_budget // widest)  # a pass holds every adapter's rows

    @classmethod
    def load(cls, path: str, max_length: int | None = None, token_budget: int | None = None, device: str | None = None,
             trust_remote_code: bool = False, reward: str | None = None, std_weight: float | None = None,
             batch_adapters: bool | None = None) -> EnsembleRewardModel:
        """An ensemble folder; ``reward`` and ``std_weight`` override the manifest's."""
        manifest, root = read_manifest(path), Path(path)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        parts, shared = [], {}
        for k, member in enumerate(manifest["members"]):
            if member.get("base"):
                shared.setdefault(member["base"], []).append(k)
            else:
                parts.append((RewardModel.load(str(root / member["path"]), max_length, token_budget, device,
                                               trust_remote_code), None, [k]))
        for base, indices in shared.items():
            folders = [root / manifest["members"][k]["path"] for k in indices]
            parts.append((load_adapters(root / base, folders, device, max_length, token_budget, trust_remote_code),
                          [folder.name for folder in folders], indices))
        parts.sort(key=lambda part: part[2][0])
        infos = [load_info(root / m["path"]) for m in manifest["members"]]
        stats = [(info.get("reward_mean"), info.get("reward_std")) for info in infos]
        return cls(parts, stats, reward or manifest["reward"],
                   manifest["std_weight"] if std_weight is None else std_weight, manifest.get("center_members", True),
                   batch_adapters, max_length, token_budget, name=str(path))

    @property
    def size(self) -> int:
        return len(self.member_stats)

    def forward_members(self, sequences: list[list[int]]) -> list[list[float]]:
        """[members][n] rewards of one batch as each member gives them (uncentred): one forward pass per loaded model."""
        out: list = [None] * self.size
        for part, adapters, indices in self.parts:
            for k, rewards in zip(indices, self.part_forward(part, adapters, sequences)):
                out[k] = rewards
        return out

    @torch.inference_mode()
    def part_forward(self, part: RewardModel, adapters: list[str] | None, sequences: list[list[int]]):
        """[members of the part][n] rewards: a plain model's one pass, or its adapters' rows in one pass."""
        if adapters is None:
            return [part.forward(sequences)]
        if not self.batch_adapters:
            rewards = []
            for adapter in adapters:
                part.model.set_adapter(adapter)
                rewards.append(part.forward(sequences))
            return rewards
        input_ids, mask = pad_sequences(sequences, part.module.pad_token_id)
        n, k, device = len(sequences), len(adapters), part.module.device
        logits = part.model(input_ids=input_ids.repeat(k, 1).to(device), attention_mask=mask.repeat(k, 1).to(device),
                            adapter_names=[a for a in adapters for _ in range(n)]).logits
        rewards = [part.weighted(o) for o in logits.squeeze(-1).float().tolist()]
        return [rewards[j * n : (j + 1) * n] for j in range(k)]

    def adjust(self, members: list[list[float]], normalize: bool = False) -> list[list[float]]:
        """Members' rewards as they combine: centred (``center_members``), or with ``normalize``
        ``(r − reward_mean) / reward_std`` each with its own statistics."""
        if normalize:
            self.normalize([])
            return [[(r - mean) / std for r in rewards] for rewards, (mean, std) in zip(members, self.member_stats)]
        if not self.center_members:
            return members
        return [[r - mean for r in rewards] for rewards, (mean, _) in zip(members, self.member_stats)]

    def member_ids(self, sequences: list[list[int]], normalize: bool = False) -> list[list[float]]:
        """[members][n] rewards of encoded sequences, as they combine (:meth:`adjust`), in token-budget batches."""
        out = [[0.0] * len(sequences) for _ in range(self.size)]
        for batch in self.batches([len(s) for s in sequences]):
            for k, rewards in enumerate(self.forward_members([sequences[i] for i in batch])):
                for i, reward in zip(batch, rewards):
                    out[k][i] = reward
        return self.adjust(out, normalize)

    def combine(self, members: list[list[float]]) -> list[float]:
        return combine(members, self.reward, self.std_weight)

    def summary(self, members: list[list[float]], with_members: bool = False) -> dict:
        """``rewards`` (combined), ``mean``, ``std`` per response, and ``members`` ([members][n]) on request."""
        values = torch.tensor(members, dtype=torch.float64)
        out = {"rewards": self.combine(members), "mean": values.mean(0).tolist(), "std": spread(members)}
        return out | ({"members": members} if with_members else {})

    def score_members(self, prompts: list[Text], responses: list[Text], normalize: bool = False) -> list[list[float]]:
        """[members][n]: every member's reward of every (prompt, response), as they combine (:meth:`adjust`)."""
        if isinstance(prompts, str) or isinstance(responses, str):
            raise ScoringError("prompts and responses must be lists (one item per response to score), not strings")
        if len(prompts) != len(responses):
            raise ScoringError(f"{len(prompts)} prompts but {len(responses)} responses; give one prompt per response")
        return self.member_ids([self.encode(p, r) for p, r in zip(prompts, responses)], normalize)

    def score(self, prompts: list[Text], responses: list[Text], normalize: bool = False) -> list[float]:
        return self.combine(self.score_members(prompts, responses, normalize))

    def score_texts(self, texts: list[str], normalize: bool = False) -> list[float]:
        return self.combine(self.member_ids([self.encode_text(t) for t in texts], normalize))

    def score_ids(self, sequences: list[list[int]], attributes: bool = False) -> list:
        if attributes:
            raise ScoringError(f"{self.name} is an ensemble: it gives one reward per response, not attributes")
        return self.combine(self.member_ids(sequences))

    def forward(self, sequences: list[list[int]]) -> list[float]:
        return self.combine(self.adjust(self.forward_members(sequences)))

    def rank(self, prompt: Text, candidates: list[Text], normalize: bool = False) -> list[tuple[int, float]]:
        rewards = self.score([prompt] * len(candidates), candidates, normalize)
        return sorted(enumerate(rewards), key=lambda item: -item[1])

    def score_candidates(self, prompt: Text, candidates: list[Text]) -> list[float]:
        return self.score([prompt] * len(candidates), candidates)

    def normalize(self, rewards: list[float]) -> list[float]:
        """Checks that every member has its statistics; an ensemble normalises its members, not its combination
        (``score(..., normalize=True)``)."""
        missing = [k for k, (mean, std) in enumerate(self.member_stats) if mean is None or not std]
        if missing:
            raise ScoringError(f"normalising needs every member's reward mean and std (rewardlab.json); member "
                               f"{missing[0]} of {self.name} has none")
        if rewards:
            raise ScoringError("an ensemble normalises each member before combining: score(..., normalize=True)")
        return []


def load_adapters(base: Path, folders: list[Path], device: str, max_length: int | None, token_budget: int | None,
                  trust_remote_code: bool = False) -> RewardModel:
    """One :class:`RewardModel` over the frozen backbone in ``base`` with the LoRA adapter (and head) of each member
    folder, named after the folder. Each member's rewardlab.json must record ``base`` as its initial backbone."""
    from peft import PeftModel

    from rewardlab.backbones import weights_fingerprint

    model, tokenizer, encoder, _ = load_reward_model(str(base), trust_remote_code=trust_remote_code)
    fingerprint = weights_fingerprint(model)
    for folder in folders:
        recorded = load_info(folder).get("initial_backbone", {}).get("fingerprint")
        if recorded != fingerprint:
            raise ScoringError(f"{folder} was not trained from {base} (its initial backbone fingerprint is "
                               f"{recorded}, the base's {fingerprint})")
    peft_model = PeftModel.from_pretrained(model, folders[0], adapter_name=folders[0].name)
    for folder in folders[1:]:
        peft_model.load_adapter(folder, adapter_name=folder.name)
    return RewardModel(peft_model.to(device).eval(), tokenizer, encoder, load_info(folders[0]), max_length, token_budget)
