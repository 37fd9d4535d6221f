import pytest
import torch
from helpers import MISSING_DATA, MISSING_PACKAGE, SHARED_DATA, STRICT_SKIPS, synthetic_rows, write_jsonl

from rewardlab.config import ModelSettings
from rewardlab.models.loading import load_backbone

# Tiny backbones gain nothing from threads, and on 2 shared cores several threads spin against each other.
torch.set_num_threads(1)


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


@pytest.fixture(scope="session")
def tiny():
    """The three tiny random backbones, built once."""
    return {name: load_backbone(ModelSettings(name=name)) for name in ("tiny-llama", "tiny-gpt2", "tiny-bert")}
