import json
import random
from pathlib import Path

import pytest
import torch

from rewardlab.backbones import load_backbone
from rewardlab.config import ModelSettings

# Tiny backbones gain nothing from threads, and on 2 shared cores several threads spin against each other.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    """A learnable preference set: the chosen reply ends in a kind word, the rejected one in a rude word, after a
    random filler of random length, so that length alone does not decide."""
    kind, rude, filler = ["thanks", "gladly", "sure"], ["never", "whatever", "go away"], ["well", "so", "ok", "hm"]
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        pad = lambda: " ".join(rng.choice(filler) for _ in range(rng.randint(0, 3)))
        rows.append({
            "prompt": f"Request {rng.randint(0, 999)}:",
            "chosen": f" {pad()} {rng.choice(kind)}",
            "rejected": f" {pad()} {rng.choice(rude)}",
        })
    return rows


@pytest.fixture(scope="session")
def tiny():
    """The three tiny random backbones, built once."""
    return {name: load_backbone(ModelSettings(name=name)) for name in ("tiny-llama", "tiny-gpt2", "tiny-bert")}
