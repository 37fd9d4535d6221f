"""Training runs that meet faults: kill -9 at any moment, a final evaluation that fails, non-finite losses, reused or
unwritable output folders, changed recipes on resume, and pickles planted in a checkpoint."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import interrupt_after_checkpoint, logged_losses, make_recipe, read_jsonl, subprocess_env
from safetensors.torch import load_file

from rewardlab.errors import RecipeError, TrainingError
from rewardlab.tasks.reward import RewardTask
from rewardlab.training import loop as train_module
from rewardlab.training.checkpoints import PROGRESS_FILE, Progress, complete_checkpoints, mark_complete, prune
from rewardlab.training.loop import latest_checkpoint, train

# Stops the process with SIGKILL at the moment $KILL_AT names (a real kill -9: no handler, no cleanup runs):
#   backward:N   during the N-th backward pass (mid-step)
#   state:N      right after Accelerate wrote checkpoint step-N, before its progress file
#   marker:N     with step-N's progress file written to its temporary name, before the rename
#   final:N      while the final model moves into output_dir, before its N-th entry
DRIVER = '''
import os, signal, sys
from pathlib import Path
import accelerate

where, n = os.environ["KILL_AT"].split(":")
n = int(n)
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
calls = []

if where == "backward":
    real_backward = accelerate.Accelerator.backward
    def backward(self, loss, **kwargs):
        calls.append(1)
        if len(calls) == n:
            die()
        return real_backward(self, loss, **kwargs)
    accelerate.Accelerator.backward = backward
if where == "state":
    real_save_state = accelerate.Accelerator.save_state
    def save_state(self, output_dir=None, **kwargs):
        result = real_save_state(self, output_dir, **kwargs)
        if Path(output_dir).name == f"step-{n:08d}":
            die()
        return result
    accelerate.Accelerator.save_state = save_state
if where in ("marker", "final"):
    real_replace = os.replace
    def replace(source, target):
        target = Path(target)
        if where == "marker" and target.name == "progress.json" and target.parent.name == f"step-{n:08d}":
            die()
        if where == "final" and Path(source).parent.name == ".saving":
            calls.append(1)
            if len(calls) == n:
                die()
        return real_replace(source, target)
    os.replace = replace

from rewardlab.cli import main
sys.exit(main())
'''

# 40 pairs, 8 a step in 2 micro-batches of 4: 5 steps an epoch; LoRA dropout and a warmup make every step depend on
# the restored RNG, optimizer and scheduler.
KILL_RECIPE = ("model.lora.r=4", "model.lora.dropout=0.2", "micro_batch_size=4", "max_steps=8", "save_steps=2",
               "warmup_ratio=0.25")


def run_cli(tmp_path, recipe, *flags, kill_at=None):
    overrides = [f"model.name={recipe.model.name}", f"train_data={recipe.train_data}", f"eval_data={recipe.eval_data}",
                 f"max_length={recipe.max_length}", f"batch_size={recipe.batch_size}",
                 f"learning_rate={recipe.learning_rate}", "logging_steps=1", f"output_dir={recipe.output_dir}",
                 *KILL_RECIPE]
    (tmp_path / "driver.py").write_text(DRIVER)
    return subprocess.run([sys.executable, str(tmp_path / "driver.py"), "train", *overrides, *flags], cwd=tmp_path,
                          env=subprocess_env(KILL_AT=kill_at or "none:0"), capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_kill_9_at_any_moment_then_resume_gives_the_uninterrupted_weights(tmp_path):
    straight = make_recipe(tmp_path / "a", *KILL_RECIPE, rows=40)
    train(straight)
    recipe = make_recipe(tmp_path / "b", *KILL_RECIPE, rows=40)
    out = Path(recipe.output_dir)

    # (where to kill, the newest complete checkpoint afterwards)
    for kill_at, newest in (("backward:5", 2), ("state:4", 2), ("marker:6", 4), ("final:2", 8)):
        result = run_cli(tmp_path / "b", recipe, "--resume", kill_at=kill_at)
        assert result.returncode == -9, (kill_at, result.stderr[-2000:])
        assert latest_checkpoint(out).progress.step == newest, kill_at
        assert not (out / "config.json").exists(), kill_at  # nothing that looks like a saved model
        if kill_at == "marker:6":  # written whole under its temporary name, never renamed
            assert (out / "checkpoints" / "step-00000006" / ".progress.json.tmp").is_file()
    result = run_cli(tmp_path / "b", recipe, "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stdout and "(step 8)" in result.stdout  # only the final save was left to do

    expected, resumed = load_file(Path(straight.output_dir) / "model.safetensors"), load_file(out / "model.safetensors")
    assert expected.keys() == resumed.keys()
    for key, value in expected.items():
        torch.testing.assert_close(resumed[key], value, atol=1e-6, rtol=0, msg=key)
    assert logged_losses(out) == pytest.approx(logged_losses(straight.output_dir), abs=1e-6)
    assert not (out / ".saving").exists()
    assert [c.progress.step for c in complete_checkpoints(out)] == [6, 8]  # save_total_limit: 2


@pytest.mark.slow
def test_a_failed_final_evaluation_loses_no_training(tmp_path, monkeypatch):
    """The trained state is checkpointed before the final evaluation: --resume evaluates and saves, trains nothing."""
    straight = make_recipe(tmp_path / "a", "max_steps=3")
    train(straight)
    recipe = make_recipe(tmp_path / "b", "max_steps=3")
    real_evaluate = RewardTask.evaluate

    def broken(*args):
        raise RuntimeError("evaluation broke")

    monkeypatch.setattr(RewardTask, "evaluate", broken)
    with pytest.raises(RuntimeError, match="evaluation broke"):
        train(recipe)
    monkeypatch.setattr(RewardTask, "evaluate", real_evaluate)
    assert latest_checkpoint(recipe.output_dir).progress.step == 3
    assert not Path(recipe.output_dir, "config.json").exists()
    logged_before = Path(recipe.output_dir, "metrics.jsonl").read_text()

    info = train(recipe, resume=True)
    assert info["steps"] == 3
    assert "train/loss" not in Path(recipe.output_dir, "metrics.jsonl").read_text()[len(logged_before):]
    expected, saved = (load_file(Path(r.output_dir) / "model.safetensors") for r in (straight, recipe))
    for key, value in expected.items():
        assert torch.equal(saved[key], value), key
    assert not Path(recipe.output_dir, "checkpoints").exists()  # the recipe keeps none (save_steps unset)


def poison(monkeypatch, origin: str):
    """The loss of any batch holding the pair from ``origin`` (file:line) is NaN."""
    real_loss = RewardTask.loss

    def loss(self, model, batch):
        value, stats = real_loss(self, model, batch)
        return (value * float("nan") if any(o.endswith(origin) for o in batch.origins) else value), stats

    monkeypatch.setattr(RewardTask, "loss", loss)


@pytest.mark.slow
def test_a_non_finite_loss_stops_with_the_step_and_rows_and_saves_no_model(tmp_path, monkeypatch):
    recipe = make_recipe(tmp_path, "max_steps=5", "save_steps=1", rows=40)  # one epoch: every row once
    poison(monkeypatch, "train.jsonl:13")
    with pytest.raises(TrainingError, match=r"the loss is nan \(rows: .*train\.jsonl:13.*\); no model was saved"
                       ) as error:
        train(recipe)
    step = int(re.match(r"step (\d+): ", str(error.value)).group(1))
    kept = [c.path for c in complete_checkpoints(recipe.output_dir)]
    assert [int(p.name[5:]) for p in kept] == list(range(max(1, step - 2), step))  # save_total_limit: 2
    assert f"the last good checkpoint is {kept[-1]}" in str(error.value)
    assert not Path(recipe.output_dir, "config.json").exists()


def test_skip_nonfinite_skips_the_step_without_an_update_and_counts_it(tmp_path, monkeypatch):
    recipe = make_recipe(tmp_path, "max_steps=5", "skip_nonfinite=1", rows=40)
    poison(monkeypatch, "train.jsonl:13")
    updates = []
    real_step = torch.optim.AdamW.step
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, *a, **k: updates.append(1) or real_step(self, *a, **k))
    info = train(recipe)
    assert info["skipped_nonfinite"] == 1 and len(updates) == 4
    lines = read_jsonl(Path(recipe.output_dir, "metrics.jsonl"))
    skipped = [r["step"] for r in lines if "train/skipped_nonfinite" in r]
    assert len(skipped) == 1 and skipped[0] not in logged_losses(recipe.output_dir)
    assert json.loads(Path(recipe.output_dir, "rewardlab.json").read_text())["skipped_nonfinite"] == 1
    weights = load_file(Path(recipe.output_dir) / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_batches_without_origins_are_named_by_their_place():
    class Batch:  # SimCSE and CLIP batches carry no file:line
        pass

    class OneProcess:
        num_processes, process_index = 1, 0

    rows = train_module.batch_rows(Batch(), Progress(epoch=1, batches_in_epoch=3), OneProcess())
    assert rows == ["batch 3 of epoch 1"]


@pytest.mark.slow
def test_a_new_run_refuses_a_folder_that_holds_another_run(tmp_path):
    train(make_recipe(tmp_path, "max_steps=2", "save_steps=1"))
    with pytest.raises(RecipeError, match=r"already holds a run \(checkpoints, config\.json, metrics\.jsonl, "
                                          r"rewardlab\.json\); pass --resume"):
        train(make_recipe(tmp_path, "max_steps=2", "learning_rate=1e-3"))


@pytest.mark.slow
def test_resume_with_a_changed_recipe_names_the_keys_unless_told(tmp_path, monkeypatch):
    recipe = make_recipe(tmp_path, "max_steps=4", "save_steps=2")
    interrupt_after_checkpoint(monkeypatch, recipe, 2)
    changed = make_recipe(tmp_path, "max_steps=4", "save_steps=2", "learning_rate=1e-3", "max_length=48",
                          "eval_steps=1")  # eval_steps changes nothing that resuming depends on
    with pytest.raises(RecipeError, match=r"differs from the one .*step-00000002 was trained with: learning_rate: "
                                          r"0\.003 → 0\.001; max_length: 64 → 48\. .*--resume-changed"):
        train(changed, resume=True)
    train(changed, resume=True, resume_changed=True)
    lines = read_jsonl(Path(recipe.output_dir, "metrics.jsonl"))
    lr = {r["step"]: r["train/lr"] for r in lines if "train/lr" in r}
    assert lr[2] == pytest.approx(3e-3 * 2 / 4) and lr[3] == pytest.approx(1e-3 * 1 / 4)  # linear decay to step 4


def test_pruning_deletes_only_this_runs_checkpoints(tmp_path):
    for step, run in ((100, "other"), (200, "other"), (1, "mine"), (2, "mine"), (3, "mine")):
        path = tmp_path / "checkpoints" / f"step-{step:08d}"
        path.mkdir(parents=True)
        mark_complete(path, Progress(step=step, run=run), {}, {})
    prune(tmp_path, "mine", 2)
    assert [c.progress.step for c in complete_checkpoints(tmp_path)] == [2, 3, 100, 200]


def test_an_incomplete_checkpoint_is_never_picked(tmp_path):
    for step, marker in ((1, None), (2, ""), (3, "{not json")):
        path = tmp_path / "checkpoints" / f"step-{step:08d}"
        path.mkdir(parents=True)
        if marker is not None:
            (path / PROGRESS_FILE).write_text(marker)
    assert latest_checkpoint(tmp_path) is None
    mark_complete(tmp_path / "checkpoints" / "step-00000001", Progress(step=1), {}, {})
    assert latest_checkpoint(tmp_path).progress.step == 1


def test_an_output_folder_that_cannot_be_written_fails_before_training(tmp_path, monkeypatch):
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(RecipeError, match="'output_dir': .*taken is a file, not a folder"):
        train(make_recipe(tmp_path / "a", f"output_dir={tmp_path / 'taken'}"))
    with pytest.raises(RecipeError, match="'output_dir': cannot write into .*taken/run"):
        train(make_recipe(tmp_path / "b", f"output_dir={tmp_path / 'taken' / 'run'}"))

    from rewardlab.training import checkpoints

    monkeypatch.setattr(checkpoints.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 2**16})())
    recipe = make_recipe(tmp_path / "c")  # tiny-llama: 27,040 float32 weights, all trained: 0.4 MiB
    with pytest.raises(RecipeError, match=r"has 0\.1 MiB free; this run needs at least 0\.4 MiB"):
        train(recipe)
    assert "train/loss" not in Path(recipe.output_dir, "metrics.jsonl").read_text()


def test_the_cli_reports_a_refused_output_folder_in_one_line(tmp_path, capsys):
    from rewardlab.cli import main

    (tmp_path / "taken").write_text("a file")
    recipe = make_recipe(tmp_path)
    assert main(["train", "model.name=tiny-llama", f"train_data={recipe.train_data}", "eval_data=null",
                 f"output_dir={tmp_path / 'taken'}"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: recipe key 'output_dir'")


class Payload:
    """Unpickled, it writes the file it names: the proof that a pickle in a checkpoint ran."""

    def __init__(self, proof: Path):
        self.proof = proof

    def __reduce__(self):
        return exec, (f"open({str(self.proof)!r}, 'w').write('ran')",)


@pytest.mark.slow
def test_resume_runs_no_pickle_planted_in_a_checkpoint(tmp_path, monkeypatch):
    recipe = make_recipe(tmp_path, "max_steps=4", "save_steps=2")
    interrupt_after_checkpoint(monkeypatch, recipe, 2)
    checkpoint = latest_checkpoint(recipe.output_dir).path
    proof = tmp_path / "payload-ran"
    # Where Accelerate keeps registered objects (and unpickles them with weights_only=False): rewardlab registers none,
    # so Accelerate refuses the folder instead.
    torch.save(Payload(proof), checkpoint / "custom_checkpoint_0.pkl")
    with pytest.raises(TrainingError, match=r"checkpoint .*step-00000002 cannot be loaded .*custom checkpoints"):
        train(recipe, resume=True)
    assert not proof.exists()

    recipe = make_recipe(tmp_path / "again", "max_steps=4", "save_steps=2")
    interrupt_after_checkpoint(monkeypatch, recipe, 2)
    checkpoint = latest_checkpoint(recipe.output_dir).path
    torch.save(Payload(proof), checkpoint / "optimizer.bin")  # loaded with weights_only=True: refused
    with pytest.raises(TrainingError, match=r"checkpoint .*step-00000002 cannot be loaded \(UnpicklingError"):
        train(recipe, resume=True)
    assert not proof.exists()
