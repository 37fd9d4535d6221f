"""`accelerate launch --multi_gpu --num_processes 2` on CPU (gloo): the same losses and evaluation as 1 process with
the same global batch, an exit that never hangs, and ranks that die with their launcher."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from helpers import accelerate_launch, logged, logged_losses, subprocess_env, synthetic_rows, wait_until, write_jsonl

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

# Rank 1 used to hang at exit (1 run in 10 on a loaded machine): DDP's reducer, freed after the process group was
# destroyed, destroyed the group with the GIL held while a gloo worker thread waited for the GIL. The driver reports
# how many DDP models are still alive when the group is destroyed (must be 0: the reducer goes first).
DRIVER = '''
import gc, os, sys
import torch.distributed
from torch.nn.parallel import DistributedDataParallel

real_destroy = torch.distributed.destroy_process_group


def destroy(*args, **kwargs):
    alive = sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects())
    print(f"DDP models alive at destroy_process_group: {alive}", flush=True)
    real_destroy(*args, **kwargs)


torch.distributed.destroy_process_group = destroy
if os.environ.get("POISON"):  # the loss of a batch holding the pair from this file:line is NaN
    from rewardlab.tasks.reward import RewardTask

    real_loss = RewardTask.loss

    def loss(self, model, batch):
        value, stats = real_loss(self, model, batch)
        return value * float("nan") if any(o.endswith(os.environ["POISON"]) for o in batch.origins) else value, stats

    RewardTask.loss = loss
from rewardlab.cli import main

sys.exit(main())
'''


def launch(tmp_path, processes: int, *overrides: str, driver: bool = False) -> list[str]:
    launcher = accelerate_launch(processes)
    if driver:
        (tmp_path / "driver.py").write_text(DRIVER)
        launcher.append(str(tmp_path / "driver.py"))
    else:
        launcher += ["-m", "rewardlab.cli"]
    data = write_jsonl(tmp_path / "train.jsonl", synthetic_rows(48))
    return launcher + ["train", "model.name=tiny-llama", f"train_data={data}", "eval_data=null", "max_length=64",
                       "batch_size=8", "learning_rate=3e-3", "logging_steps=1", *overrides]


def run(command, cwd, timeout: float, **env) -> subprocess.CompletedProcess:
    """Run the launcher ``command``; on a timeout kill it and its ranks (each in a session of its own)."""
    child = subprocess.Popen(command, cwd=cwd, env=subprocess_env(**env), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_with_ranks(child)
        stdout, stderr = child.communicate()
        pytest.fail(f"no exit within {timeout} s:\n{stdout[-2000:]}\n{stderr[-2000:]}")
    return subprocess.CompletedProcess(command, child.returncode, stdout, stderr)


def kill_with_ranks(launcher: subprocess.Popen) -> None:
    for pid in children(launcher.pid) + [launcher.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def train_on(tmp_path, name, processes, *overrides):
    out = tmp_path / name
    result = run(launch(tmp_path, processes, f"output_dir={out}", *overrides), tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"a forward pass × {processes} processes" in result.stdout
    return out


def test_two_processes_give_the_same_losses_and_evaluation_as_one(tmp_path):
    """17 evaluation pairs do not split evenly over 2 processes: each still runs the same batches (the last ones
    padded with repeats, which are dropped again), and the metrics are those of 1 process over all 17."""
    dev = write_jsonl(tmp_path / "dev.jsonl", synthetic_rows(17, seed=1))
    common = ("max_steps=4", "eval_steps=2", f"eval_data={dev}", "micro_batch_size=2")
    one, two = train_on(tmp_path, "one", 1, *common), train_on(tmp_path, "two", 2, *common)
    losses_one, losses_two = logged_losses(one), logged_losses(two)
    assert sorted(losses_one) == sorted(losses_two) == [1, 2, 3, 4]
    for step in losses_one:
        assert losses_two[step] == pytest.approx(losses_one[step], abs=1e-5), step
    evals_one, evals_two = logged(one, "eval/pairs"), logged(two, "eval/pairs")
    assert sorted(evals_one) == sorted(evals_two) == [2, 4]
    for step, metrics in evals_one.items():
        assert metrics["eval/pairs"] == evals_two[step]["eval/pairs"] == 17
        for key in ("eval/accuracy", "eval/reward_mean", "eval/reward_std", "eval/mean_margin"):
            assert evals_two[step][key] == pytest.approx(metrics[key], abs=1e-5), (step, key)


def test_two_process_training_exits_every_time(tmp_path):
    """10 runs in a row, each well within its timeout, each releasing the wrapped model before the process group."""
    for attempt in range(10):
        out = tmp_path / f"run{attempt}"
        started = time.perf_counter()
        result = run(launch(tmp_path, 2, f"output_dir={out}", "max_steps=1", driver=True), tmp_path, timeout=120)
        assert result.returncode == 0, (attempt, result.stderr[-3000:])
        assert result.stdout.count("DDP models alive at destroy_process_group: 0") == 2, (attempt, result.stdout)
        assert (out / "config.json").is_file(), attempt
        print(f"run {attempt}: {time.perf_counter() - started:.1f} s")


def test_a_non_finite_loss_on_one_process_stops_every_process(tmp_path):
    """The pair at line 13 is in one process's micro-batch: both processes see the step fail (the loss is averaged
    over processes), both stop at it with the same error, and both exit."""
    result = run(launch(tmp_path, 2, f"output_dir={tmp_path / 'out'}", "max_steps=6", "save_steps=2", driver=True),
                 tmp_path, timeout=120, POISON="train.jsonl:13")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and errors[0] == errors[1], result.stderr[-3000:]
    assert re.match(r"error: step \d+: the loss is nan \(rows: .*train\.jsonl:13", errors[0]), errors[0]
    assert result.stdout.count("DDP models alive at destroy_process_group: 0") == 2, result.stdout[-2000:]
    assert not (tmp_path / "out" / "config.json").exists()


def children(pid: int) -> list[int]:
    tasks = f"/proc/{pid}/task"
    with contextlib.suppress(FileNotFoundError):
        return [int(c) for t in os.listdir(tasks) for c in open(f"{tasks}/{t}/children").read().split()]
    return []


def alive(pid: int) -> bool:
    """Running (not a zombie: a killed orphan may wait for a reaper that does not come)."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_ranks_die_with_their_launcher(tmp_path):
    out = tmp_path / "out"
    launcher = subprocess.Popen(launch(tmp_path, 2, f"output_dir={out}", "max_steps=100000"), cwd=tmp_path,
                                env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = out / "metrics.jsonl"
    ranks = []
    try:
        training = lambda: metrics.exists() and "train/loss" in metrics.read_text()
        assert wait_until(lambda: training() or launcher.poll() is not None, timeout=300) and training(), \
            "training never started"
        ranks = children(launcher.pid)
        assert len(ranks) == 2
        launcher.kill()  # SIGKILL: the launcher cannot pass anything on
        launcher.wait()
        assert wait_until(lambda: not any(map(alive, ranks)), timeout=10), "ranks outlived their launcher"
    finally:
        for pid in ranks + [launcher.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
