import importlib.metadata
import json
import os
import random
import socket
from pathlib import Path

import pytest
import torch

from rewardlab.config import ModelSettings
from rewardlab.models.loading import load_backbone

# Tiny backbones gain nothing from threads, and on 2 shared cores several threads spin against each other.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
# Under CI a test may skip only for data that is really absent, never for a package the test command should have
# installed: such a skip would let a change that breaks the feature land green.
STRICT_SKIPS = os.environ.get("CI", "").lower() in ("1", "true", "yes")
MISSING_PACKAGE = ("not installed", "could not import")
MISSING_DATA = "../shared/data is not here"


def installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def needs(distribution: str):
    """Skip unless the pip distribution is installed (a failure under CI: the test command installs it)."""
    return pytest.mark.skipif(not installed(distribution), reason=f"{distribution} not installed")


needs_shared_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=MISSING_DATA)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not (STRICT_SKIPS and report.skipped and isinstance(report.longrepr, tuple)):
        return
    reason = report.longrepr[2].removeprefix("Skipped: ")
    package = any(phrase in reason for phrase in MISSING_PACKAGE)
    data = MISSING_DATA in reason and SHARED_DATA.is_dir()
    if package or data:
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, where it must run: {reason}"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny Llama reward model saved by ``rewardlab train`` (2 steps on 8 synthetic pairs): what the command-line
    tests score with."""
    from rewardlab.cli import main

    tmp = tmp_path_factory.mktemp("trained")
    data = write_jsonl(tmp / "train.jsonl", synthetic_rows(8))
    out = tmp / "model"
    assert main(["train", "model.name=tiny-llama", f"train_data={data}", f"eval_data={data}", "max_steps=2",
                 "batch_size=2", f"output_dir={out}"]) == 0
    return out


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


def free_port() -> int:
    """A TCP port free right now, for a launcher's rendezvous (tests of several agents share the machine)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
