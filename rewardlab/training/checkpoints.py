"""A run's folder: resumable checkpoints, what marks one complete, and a final save that is whole or absent.

```
output_dir/
  checkpoints/step-00000040/  Accelerate's state (model, optimizer, RNG), then progress.json, written last and
                              atomically: the loop's position, the scheduler, the recipe and the run it belongs to
  metrics.jsonl
  config.json, model.safetensors, ...  the final model, staged in output_dir/.saving and moved in with the files
                              that loaders open first (config.json, recipe.yaml) last
```

A process killed at any moment leaves either a checkpoint with its progress file, which is complete, or one without,
which :func:`latest_checkpoint` never picks. Nothing here unpickles: the scheduler's state travels as JSON in the
progress file, and Accelerate loads the rest with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rewardlab.errors import RecipeError

PROGRESS_FILE = "progress.json"
STAGING = ".saving"  # the final model is written here, then moved into output_dir
# The files a loader opens first: moved into output_dir last, so a folder holding them holds the whole model
# (config.json: transformers and rewardlab's reward and sentence models; recipe.yaml: two-tower models).
OPENED_FIRST = ("recipe.yaml", "config.json")
# What a training run leaves in its output_dir; a folder holding any of them belongs to a run.
RUN_FILES = ("checkpoints", "metrics.jsonl", "rewardlab", "rewardlab.json", "config.json", STAGING)
# Recipe keys that change neither the weights nor where the data stands, so `--resume` may change them.
RESUMABLE_CHANGES = {"output_dir", "logging_steps", "eval_steps", "save_steps", "save_total_limit", "tracker",
                     "plots", "eval_data", "eval_split", "save_adapter_only"}


@dataclass
class Progress:
    """Where the loop is: optimizer steps done, the epoch, the micro-batches of that epoch already consumed, the
    steps skipped for a non-finite loss, and the run (an id kept across resumes) these belong to."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    skipped_nonfinite: int = 0
    run: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass
class Checkpoint:
    """A complete checkpoint: its folder and what its progress file holds."""

    path: Path
    progress: Progress
    scheduler: dict
    recipe: dict


def write_atomically(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (a temporary file beside it, then a rename)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def read_checkpoint(path: Path) -> Checkpoint | None:
    """The checkpoint in ``path``, or None if it is incomplete (no readable progress file)."""
    try:
        record = json.loads((path / PROGRESS_FILE).read_text())
        return Checkpoint(path, Progress(**record["progress"]), record["scheduler"], record["recipe"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def complete_checkpoints(output_dir: str | Path) -> list[Checkpoint]:
    """The complete checkpoints under ``output_dir/checkpoints``, oldest first."""
    found = (read_checkpoint(p) for p in Path(output_dir, "checkpoints").glob("step-*"))
    return sorted((c for c in found if c is not None), key=lambda c: c.progress.step)


def latest_checkpoint(output_dir: str | Path) -> Checkpoint | None:
    done = complete_checkpoints(output_dir)
    return done[-1] if done else None


def mark_complete(path: Path, progress: Progress, scheduler: dict, recipe: dict) -> None:
    record = {"progress": asdict(progress), "scheduler": scheduler, "recipe": recipe}
    write_atomically(path / PROGRESS_FILE, json.dumps(record, indent=1))


def prune(output_dir: str | Path, run: str, keep: int) -> None:
    """Delete all but the newest ``keep`` complete checkpoints of ``run`` (never another run's)."""
    mine = [c for c in complete_checkpoints(output_dir) if c.progress.run == run]
    for old in mine[: len(mine) - keep]:
        shutil.rmtree(old.path)


def recipe_changes(saved: dict, current: dict) -> list[str]:
    """``key: old → new`` for each recipe key (dotted) that differs and matters for resuming."""
    old, new = flatten(saved), flatten(current)
    return [f"{key}: {old.get(key)!r} → {new.get(key)!r}" for key in sorted(old.keys() | new.keys())
            if old.get(key) != new.get(key) and key.split(".")[0] not in RESUMABLE_CHANGES]


def flatten(tree: dict, prefix: str = "") -> dict:
    """A nested dict's leaves under dotted keys."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def check_output_dir(output_dir: str | Path, resume: bool) -> None:
    """Fail before any work if ``output_dir`` cannot be written or, without ``resume``, holds another run."""
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise RecipeError(f"recipe key 'output_dir': {out} is a file, not a folder")
    if not resume and out.is_dir():
        found = sorted(name for name in RUN_FILES if (out / name).exists())
        if found:
            raise RecipeError(
                f"recipe key 'output_dir': {out} already holds a run ({', '.join(found)}); pass --resume to continue "
                "it, or choose another output_dir (or delete this one)"
            )
    probe = out / f".write-test-{os.getpid()}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise RecipeError(f"recipe key 'output_dir': cannot write into {out} ({e.strerror or e})") from None


def check_free_space(output_dir: str | Path, needed: int) -> None:
    free = shutil.disk_usage(output_dir).free
    if free < needed:
        raise RecipeError(f"recipe key 'output_dir': {output_dir} has {free / 2**20:.1f} MiB free; this run needs at "
                          f"least {needed / 2**20:.1f} MiB (a checkpoint and the final model)")


def save_whole(save, output_dir: str | Path) -> None:
    """Run ``save(folder)`` into a staging folder, then move what it wrote into ``output_dir``, the files loaders open
    first last: a kill at any moment leaves output_dir without them (not loadable) or with the whole model."""
    out = Path(output_dir)
    staging = out / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    save(staging)
    for name in OPENED_FIRST:  # a previous model in the folder no longer looks complete while the new one moves in
        (out / name).unlink(missing_ok=True)
    last = [staging / name for name in OPENED_FIRST if (staging / name).exists()]
    for entry in [p for p in staging.iterdir() if p.name not in OPENED_FIRST] + last:
        target = out / entry.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(entry, target)
    staging.rmdir()
