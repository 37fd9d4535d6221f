"""`accelerate launch --multi_gpu --num_processes 2` on CPU (gloo) computes the same losses as 1 process, same global batch."""

import os
import subprocess
import sys

import pytest

from conftest import REPO, synthetic_rows, write_jsonl
from test_train import logged_losses


def run(tmp_path, name, processes):
    data = write_jsonl(tmp_path / "train.jsonl", synthetic_rows(48))
    out = tmp_path / name
    launcher = [sys.executable, "-m", "accelerate.commands.launch", *(["--multi_gpu"] if processes > 1 else []),
                "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no",
                "--dynamo_backend", "no", "--main_process_port", "29517"]
    command = launcher + ["-m", "rewardlab.cli", "train", "model.name=tiny-llama", f"train_data={data}",
                          "eval_data=null", "max_length=64", "batch_size=8", "learning_rate=3e-3", "max_steps=4",
                          "logging_steps=1", f"output_dir={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"= {8 // processes} a forward pass × {processes} processes" in result.stdout
    return logged_losses(out)


def test_two_processes_give_the_same_losses_as_one(tmp_path):
    one, two = run(tmp_path, "one", 1), run(tmp_path, "two", 2)
    assert sorted(one) == sorted(two) == [1, 2, 3, 4]
    for step in one:
        assert two[step] == pytest.approx(one[step], abs=1e-5), step
