"""FSDP 2 on 2 CPU processes (gloo) trains and evaluates like 1 process and saves the whole model, not its shards.

Accelerate 1.15 never selects FSDP on a CPU machine: with ``use_cpu: true`` its state settles on MULTI_CPU (plain
DDP) and ignores the FSDP config without a word. torch's ``fully_shard`` itself runs on CPU with gloo, so the launched
script below only promotes Accelerate's state from MULTI_CPU to FSDP; the rest (``prepare`` → ``fully_shard``,
DTensor parameters, ``clip_grad_norm_``, ``get_state_dict``) is Accelerate's and torch's own FSDP 2 code.
"""

import json
import subprocess
import sys

import pytest
import torch
import yaml
from helpers import REPO, logged_losses, subprocess_env, synthetic_rows, write_jsonl
from transformers import AutoModelForSequenceClassification, AutoTokenizer

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

DRIVER = '''
import sys
from accelerate import Accelerator
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

original_init, original_prepare = AcceleratorState.__init__, Accelerator.prepare


def init(self, *args, fsdp_plugin=None, **kwargs):
    original_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        PartialState._shared_state["distributed_type"] = self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin


def prepare(self, *args, **kwargs):
    prepared = original_prepare(self, *args, **kwargs)
    kinds = sorted({type(p).__name__ for p in prepared[0].parameters()})
    units = sum(type(m).__name__.startswith("FSDP") for m in prepared[0].modules())
    self.print(f"prepared: {self.distributed_type.value} {type(prepared[0]).__name__} {kinds} {units} units")
    return prepared


AcceleratorState.__init__, Accelerator.prepare = init, prepare
from rewardlab.cli import main

sys.exit(main())
'''


def fsdp_cpu_config(tmp_path):
    """recipes/accelerate/fsdp.yaml, on 2 CPU processes in fp32; port 0: Accelerate picks the rendezvous port."""
    config = yaml.safe_load((REPO / "recipes" / "accelerate" / "fsdp.yaml").read_text())
    config.update(num_processes=2, mixed_precision="no", use_cpu=True, main_process_port=0)
    path = tmp_path / "fsdp-cpu.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run(tmp_path, name, sharded, overrides):
    data = write_jsonl(tmp_path / "train.jsonl", synthetic_rows(48))
    # 17 pairs do not split evenly over 2 processes: every forward pass under FSDP is a collective (the weights are
    # gathered), so both processes must still run the same evaluation batches.
    dev = write_jsonl(tmp_path / "dev.jsonl", synthetic_rows(17, seed=1))
    out = tmp_path / name
    if sharded:
        (tmp_path / "driver.py").write_text(DRIVER)
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(fsdp_cpu_config(tmp_path)),
                   str(tmp_path / "driver.py")]
    else:
        command = [sys.executable, "-m", "rewardlab.cli"]
    command += ["train", "model.name=tiny-llama", f"train_data={data}", f"eval_data={dev}", "max_length=64",
                "batch_size=8", "learning_rate=3e-3", "max_steps=2", "logging_steps=1", "max_grad_norm=0.05",
                f"output_dir={out}", *overrides]
    result = subprocess.run(command, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    if sharded:  # the model really was sharded: FSDP 2 turned its parameters into DTensors
        # ... one shard group per decoder layer (tiny-llama has 2) and the root
        assert "prepared: FSDP FSDPRewardNetwork ['DTensor'] 3 units" in result.stdout, result.stdout[-2000:]
    return out


@pytest.mark.parametrize("overrides", [[], ["model.lora.r=4", "model.lora.dropout=0"]], ids=["full", "lora"])
def test_fsdp_saves_the_same_model_as_one_process(tmp_path, overrides):
    one, two = run(tmp_path, "one", False, overrides), run(tmp_path, "fsdp", True, overrides)
    losses_one, losses_two = logged_losses(one), logged_losses(two)
    assert sorted(losses_one) == sorted(losses_two) == [1, 2]
    for step in losses_one:
        assert losses_two[step] == pytest.approx(losses_one[step], abs=1e-5), step

    expected = AutoModelForSequenceClassification.from_pretrained(one).eval()
    saved = AutoModelForSequenceClassification.from_pretrained(two).eval()
    expected_weights, saved_weights = expected.state_dict(), saved.state_dict()
    assert list(saved_weights) == list(expected_weights)  # LoRA merged: plain Llama keys
    for key, value in expected_weights.items():
        assert saved_weights[key].shape == value.shape, key  # full tensors, not 1/2 shards
        torch.testing.assert_close(saved_weights[key], value, atol=1e-4, rtol=0, msg=key)

    metrics_one, metrics_two = (json.loads((out / "rewardlab.json").read_text())["metrics"] for out in (one, two))
    assert metrics_one["pairs"] == metrics_two["pairs"] == 17
    for key in ("accuracy", "mean_margin", "reward_mean", "reward_std"):
        assert metrics_two[key] == pytest.approx(metrics_one[key], abs=1e-5), key

    tokenizer = AutoTokenizer.from_pretrained(two)
    texts = ["Request 1: well thanks", "Request 2: go away", "Request 3: so ok sure"]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        scores_one, scores_two = expected(**batch).logits.squeeze(-1), saved(**batch).logits.squeeze(-1)
    torch.testing.assert_close(scores_two, scores_one, atol=1e-5, rtol=0)
