"""Loading an ensemble folder: N members, one encoding, one combined reward and the members' spread.

```
OUT/ensemble.json   the manifest: members (folder, seed, backbone, base), how to combine them
OUT/member-0/ ...   each member a folder that AutoModelForSequenceClassification.from_pretrained loads: full
                    fine-tuning, a plain sequence classifier (as `rewardlab train` saves one); LoRA, its adapter and
                    head (peft), over
OUT/base-0/         the frozen backbone its LoRA members share, saved once (one per backbone)
```

The members combine by ``mean``, ``min`` or ``mean_minus_std`` (mean − λ·std, a conservative reward for RLHF; Coste
et al., 2023, arXiv 2310.02743; Eisenstein et al., 2023, arXiv 2312.09244). LoRA members over one base are one model
in memory, the base with N adapters, and a batch of n sequences can be one forward pass of n·N rows, each row
through its member's adapter (peft's mixed-adapter batches): on a GPU by default; on CPU one adapter at a time,
which measured 12% faster (docs/ensembles.md).

Each member's reward is centred at its reward mean on its evaluation set (``center_members``): a Bradley–Terry
reward is defined up to a constant, so the spread of uncentred members would measure their offsets.
"""

from __future__ import annotations

from pathlib import Path

from rewardlab.errors import ScoringError
from rewardlab.inference.parts import Assembly, Combination, Member, NetworkPart, load_network, single
from rewardlab.models.loading import load_classifier
from rewardlab.models.manifest import encoding_probe, read_manifest
from rewardlab.models.reward import RewardNetwork
from rewardlab.models.saved import load_info
from rewardlab.models.setup import weights_fingerprint


def load_ensemble(path: str, device: str, max_length: int | None = None, trust_remote_code: bool = False,
                  reward: str | None = None, std_weight: float | None = None,
                  batch_adapters: bool | None = None) -> Assembly:
    """An ensemble folder's members; ``reward`` and ``std_weight`` override the manifest's."""
    manifest, root = read_manifest(path), Path(path)
    batch_adapters = device == "cuda" if batch_adapters is None else batch_adapters
    parts, shared = [], {}
    lead = None
    for k, member in enumerate(manifest["members"]):
        if member.get("base"):
            shared.setdefault(member["base"], []).append(k)
            continue
        assembly = single(*load_network(str(root / member["path"]), device, trust_remote_code), max_length)
        parts.append((assembly.parts[0][0], [k]))
        lead = lead or assembly
        check_same_encoding(lead, assembly, path)
    for base, indices in shared.items():
        folders = [root / manifest["members"][k]["path"] for k in indices]
        network, tokenizer, encoder = load_adapters(root / base, folders, device, trust_remote_code)
        assembly = single(network, tokenizer, encoder, load_info(folders[0]), max_length)
        parts.append((NetworkPart(network, [f.name for f in folders], batch_adapters), indices))
        lead = lead or assembly
        check_same_encoding(lead, assembly, path)
    parts.sort(key=lambda part: part[1][0])
    members = []
    for member in manifest["members"]:
        folder = root / member["path"]
        members.append(Member.of(load_info(folder), None))
    combination = Combination(reward or manifest["reward"],
                              manifest["std_weight"] if std_weight is None else std_weight,
                              manifest.get("center_members", True))
    combination.check(str(path))
    if combination.center and any(m.reward_mean is None for m in members):
        raise ScoringError(f"{path}: centring members needs each one's reward mean (rewardlab.json)")
    return Assembly(parts, members, lead.policy, combination, str(path))


def check_same_encoding(lead: Assembly, other: Assembly, name: str) -> None:
    """Members encode texts alike: an ensemble encodes a text once for all of them."""
    if encoding_probe(other.policy) != encoding_probe(lead.policy):
        raise ScoringError(f"the members of {name} encode texts differently ({lead.name} and {other.name}): an "
                           "ensemble encodes a text once for all members, so they must share a tokenizer")


def load_adapters(base: Path, folders: list[Path], device: str, trust_remote_code: bool = False):
    """(network, tokenizer, encoder?): the frozen backbone in ``base`` with the LoRA adapter (and head) of each
    member folder, named after the folder. Each member's rewardlab.json must record ``base`` as its initial
    backbone."""
    from peft import PeftModel

    model, tokenizer, encoder = load_classifier(str(base), trust_remote_code=trust_remote_code)
    fingerprint = weights_fingerprint(model)
    for folder in folders:
        recorded = load_info(folder).get("initial_backbone", {}).get("fingerprint")
        if recorded != fingerprint:
            raise ScoringError(f"{folder} was not trained from {base} (its initial backbone fingerprint is "
                               f"{recorded}, the base's {fingerprint})")
    peft_model = PeftModel.from_pretrained(model, folders[0], adapter_name=folders[0].name)
    for folder in folders[1:]:
        peft_model.load_adapter(folder, adapter_name=folder.name)
    return RewardNetwork(peft_model.to(device), encoder).eval(), tokenizer, encoder
