"""``ensemble.json``: the manifest of an ensemble folder, read and checked, and the probe that tells whether two
models encode texts alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

from rewardlab.config.recipe import EnsembleReward
from rewardlab.data.encode import EncodingPolicy
from rewardlab.errors import ScoringError

MANIFEST = "ensemble.json"
FORMAT = "rewardlab-ensemble/1"
ENSEMBLE_REWARDS = get_args(EnsembleReward)
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
    if not (isinstance(members, list) and len(members) >= 2
            and all(isinstance(m, dict) and "path" in m for m in members)):
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
