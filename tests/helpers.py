"""Plain helpers and constants the test modules share (``from helpers import ...``); the fixtures and the pytest
hook stay in conftest.py."""

import importlib.metadata
import json
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

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


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


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


def make_recipe(tmp_path: Path, *overrides: str, rows: int = 48):
    """A tiny-llama recipe on ``rows`` synthetic training pairs and 32 evaluation pairs, writing to tmp_path/out."""
    from rewardlab.config import load_recipe

    tmp_path.mkdir(parents=True, exist_ok=True)
    data = write_jsonl(tmp_path / "train.jsonl", synthetic_rows(rows))
    dev = write_jsonl(tmp_path / "dev.jsonl", synthetic_rows(32, seed=1))
    return load_recipe(None, [
        "model.name=tiny-llama", f"train_data={data}", f"eval_data={dev}", "max_length=64", "batch_size=8",
        "learning_rate=3e-3", "logging_steps=1", f"output_dir={tmp_path / 'out'}", *overrides,
    ])


def logged(output_dir, key: str = "train/loss") -> dict[int, dict]:
    """The records of output_dir/metrics.jsonl that hold ``key``, by step."""
    return {r["step"]: r for r in read_jsonl(Path(output_dir, "metrics.jsonl")) if key in r}


def logged_losses(output_dir) -> dict[int, float]:
    return {step: r["train/loss"] for step, r in logged(output_dir).items()}


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a child process that runs rewardlab from this checkout, on one thread per process."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **extra}


def accelerate_launch(processes: int) -> list[str]:
    """``accelerate launch`` on CPU; with port 0 Accelerate picks the rendezvous port itself."""
    return [sys.executable, "-m", "accelerate.commands.launch", *(["--multi_gpu"] if processes > 1 else []),
            "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "--main_process_port", "0"]


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Check ``condition`` until it holds (True) or ``timeout`` seconds have passed (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def interrupt_after_checkpoint(monkeypatch, recipe, step: int) -> None:
    """Run ``recipe`` until the checkpoint at ``step`` is written, then stop as a kill would."""
    from rewardlab.training import loop as train_module

    real_save = train_module.save_checkpoint

    def save_then_die(accelerator, recipe_, progress, *rest):
        real_save(accelerator, recipe_, progress, *rest)
        if progress.step == step:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_module.train(recipe)
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)


def join_gloo_group(rank: int, world_size: int, folder) -> None:
    """In a spawned process: one thread, and a gloo process group whose processes meet through a file store in
    ``folder`` (fresh for each test), so no port is needed."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    store = Path(folder, "rendezvous").resolve()
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
