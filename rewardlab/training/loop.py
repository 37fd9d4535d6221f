"""The one training loop, on Accelerate: accumulate, clip, schedule, log, evaluate, checkpoint, resume.

Reads top to bottom: the learner (:mod:`rewardlab.tasks`) brings data, model, loss, evaluation and saving; the loop
builds the optimizer and runs optimizer steps. A global batch of ``batch_size`` examples is split over processes
and accumulation steps, so the run computes the same losses on 1 process as on N (up to float noise).
"""

from __future__ import annotations

import copy
import gc
import math
import os
import pickle
import shutil
import sys
import time
import traceback
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration, PartialState
from accelerate.utils import DistributedType, gather_object, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from rewardlab.config import Recipe
from rewardlab.errors import RecipeError, TrainingError
from rewardlab.tasks import build_task
from rewardlab.training.checkpoints import (
    Progress,
    check_free_space,
    check_output_dir,
    flatten,
    latest_checkpoint,
    mark_complete,
    prune,
    read_checkpoint,
    recipe_changes,
    save_whole,
)
from rewardlab.training.launcher import die_with_launcher
from rewardlab.training.tracking import JSONLinesTracker


def mixed_precision(precision: str) -> str:
    if precision == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return {"fp32": "no"}.get(precision, precision)


def make_accelerator(recipe: Recipe) -> tuple[Accelerator, int]:
    """The Accelerator and the per-process micro-batch size that together give ``batch_size`` pairs a step."""
    # Several processes and no accelerator (e.g. `accelerate launch --multi_gpu` on a CPU machine): gloo on CPU.
    cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available()
    processes = PartialState(cpu=cpu).num_processes
    micro = recipe.micro_batch_size or max(1, recipe.batch_size // processes)
    if recipe.batch_size % (micro * processes):
        raise RecipeError(
            f"recipe key 'batch_size' ({recipe.batch_size}) must be a multiple of micro_batch_size ({micro}) × "
            f"processes ({processes})"
        )
    trackers = {"jsonl": lambda: [JSONLinesTracker("metrics", recipe.output_dir)],
                "tensorboard": lambda: ["tensorboard"], "none": lambda: None}
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision=mixed_precision(recipe.precision),
        gradient_accumulation_steps=recipe.batch_size // (micro * processes),
        log_with=trackers[recipe.tracker](),
        project_dir=recipe.output_dir,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=recipe.seed),
    )
    return accelerator, micro




def train(recipe: Recipe, resume: bool = False, resume_changed: bool = False) -> dict:
    """Train the learner ``recipe`` describes, save it to ``recipe.output_dir``, return the final metrics.

    ``resume``: continue from the newest complete checkpoint in output_dir; its recipe must match this one in every
    key that matters, unless ``resume_changed`` says the change is intended.
    """
    die_with_launcher()
    check_output_dir(recipe.output_dir, resume)  # every process, before any of them (the tracker) writes there
    accelerator, micro = make_accelerator(recipe)
    try:
        return _train(accelerator, micro, recipe, resume, resume_changed)
    except BaseException as e:
        # The traceback's frames would keep the wrapped model alive past end_training (see below).
        traceback.clear_frames(e.__traceback__)
        raise
    finally:
        # DDP's reducer holds the last reference to the gloo process group once end_training has unregistered it;
        # freed after that, it destroys the group with the GIL held while gloo's worker threads may still need the
        # GIL to free their last work: a hang at exit. Freed here, the group goes with the GIL released.
        accelerator.free_memory()
        gc.collect()
        accelerator.end_training()


def _train(accelerator: Accelerator, micro: int, recipe: Recipe, resume: bool, resume_changed: bool) -> dict:
    log = accelerator.print
    set_seed(recipe.seed)
    task = build_task(recipe, log)
    check_free_space(recipe.output_dir, bytes_to_save(task.model))
    log(f"batch: {recipe.batch_size} a step = {micro} a forward pass × {accelerator.num_processes} processes "
        f"× {accelerator.gradient_accumulation_steps} accumulation steps")
    sampler = getattr(task, "sampler", None)
    # Its own generator: building an iterator (each epoch, and after a resume) must not draw from the global RNG,
    # which dropout uses and a checkpoint restores.
    loader = DataLoader(task.train_data, batch_size=micro, shuffle=sampler is None, sampler=sampler,
                        collate_fn=task.collate, generator=torch.Generator().manual_seed(recipe.seed))
    params = [p for p in task.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameter_groups(params, recipe.weight_decay), lr=recipe.learning_rate)
    set_seed(recipe.seed)
    # Sharded engines leave no full copy of the weights on any process: keep the structure for the final save.
    skeleton = meta_copy(task.model) if shards_parameters(accelerator) else None
    model, optimizer, loader = accelerator.prepare(task.model, optimizer, loader)
    if skeleton is not None:
        # FSDP 2 replaced the parameters (by DTensors), and Accelerate clips an FSDP model's gradients only when
        # given all its parameters (frozen ones have no gradient and count for nothing).
        params = list(model.parameters())
    model.train()  # from_pretrained returns eval mode; dropout (where a recipe keeps it) must be live

    steps_per_epoch = math.ceil(len(loader) / accelerator.gradient_accumulation_steps)
    total_steps = recipe.max_steps or math.ceil(recipe.epochs * steps_per_epoch)
    # Stepped by hand once per optimizer step (Accelerate's wrapper would step it once per process). Its state is
    # checkpointed as JSON in the progress file: Accelerate would pickle it, and unpickle whatever it finds.
    scheduler = get_scheduler(recipe.lr_scheduler, optimizer, round(recipe.warmup_ratio * total_steps), total_steps)
    progress = restore(accelerator, recipe, optimizer, scheduler, resume_changed) if resume else Progress()
    accelerator.init_trackers("rewardlab", config=_flat(recipe.to_dict()))

    started = time.perf_counter()
    run_steps(accelerator, recipe, task, model, optimizer, scheduler, loader, params, progress, total_steps)
    if read_checkpoint(checkpoint_path(recipe, progress.step)) is None:
        save_checkpoint(accelerator, recipe, progress, scheduler)  # the trained weights, before anything can fail
    info = finish(accelerator, recipe, task, model, progress, time.perf_counter() - started, skeleton)
    if not recipe.save_steps and accelerator.is_main_process:
        shutil.rmtree(Path(recipe.output_dir, "checkpoints"))  # the recipe keeps none: the last one was a safety net
    return info


def run_steps(accelerator: Accelerator, recipe: Recipe, task, model, optimizer, scheduler, loader, params,
              progress: Progress, total_steps: int) -> None:
    """Optimizer steps until ``total_steps``, from where ``progress`` stands; evaluates and checkpoints on the way."""
    bar = tqdm(total=total_steps, initial=progress.step, disable=not accelerator.is_main_process, desc="train")
    recent, step_started = [], time.perf_counter()
    while progress.step < total_steps:
        loader.set_epoch(progress.epoch)
        skip = progress.batches_in_epoch
        batches = accelerator.skip_first_batches(loader, skip) if skip else loader
        micro_stats, rows = [], []
        for batch in batches:
            progress.batches_in_epoch += 1
            with accelerator.accumulate(model):
                if hasattr(task, "backward"):  # the task runs its own backward passes (cached-gradient batches)
                    loss, stats = task.backward(accelerator, model, batch)
                else:
                    loss, stats = task.loss(model, batch)
                    accelerator.backward(loss)
            micro_stats.append({"loss": loss.detach(), **{k: v.detach() for k, v in stats.items()}})
            rows.append(batch_rows(batch, progress, accelerator))
            if not accelerator.sync_gradients:
                continue
            step_stats = {k: accelerator.reduce(torch.stack([m[k] for m in micro_stats]).mean(), "mean").item()
                          for k in micro_stats[0]}
            # Clipped at infinity when the recipe does not clip: the norm is still measured.
            norm = accelerator.clip_grad_norm_(params, recipe.max_grad_norm if recipe.max_grad_norm > 0 else math.inf)
            # Under fp16 an infinite gradient is the loss scaler's to handle (it skips the step and scales down).
            finite = math.isfinite(step_stats["loss"]) and (norm is None or accelerator.scaler is not None
                                                             or math.isfinite(norm))
            if finite:
                optimizer.step()
                if hasattr(task, "after_optimizer_step"):
                    task.after_optimizer_step(accelerator.unwrap_model(model))
            else:
                skip_nonfinite(accelerator, recipe, progress, step_stats["loss"], norm, micro_stats, rows, bar)
            optimizer.zero_grad()
            scheduler.step()
            progress.step += 1
            micro_stats, rows = [], []
            now = time.perf_counter()
            logged = {"train/lr": scheduler.get_last_lr()[0], "train/step_seconds": now - step_started}
            if finite:
                recent = (recent + [step_stats])[-50:]
                logged |= {f"train/{k}": v for k, v in step_stats.items()}
                bar.set_postfix({k: f"{sum(r[k] for r in recent) / len(recent):.4f}" for k in step_stats})
            else:
                logged["train/skipped_nonfinite"] = progress.skipped_nonfinite
            accelerator.log(logged, step=progress.step)
            step_started = now
            bar.update(1)
            last = progress.step >= total_steps
            if recipe.eval_steps and progress.step % recipe.eval_steps == 0 and task.eval_data and not last:
                metrics = task.evaluate(accelerator, model, task.eval_data)
                accelerator.log(_prefixed("eval/", metrics), step=progress.step)
                bar.write(f"step {progress.step}: eval {task.main_metric} {metrics[task.main_metric]:.4f}")
            if recipe.save_steps and progress.step % recipe.save_steps == 0 and progress.step < total_steps:
                save_checkpoint(accelerator, recipe, progress, scheduler)
            if progress.step >= total_steps:
                break
        else:
            progress.epoch, progress.batches_in_epoch = progress.epoch + 1, 0
    bar.close()


def batch_rows(batch, progress: Progress, accelerator: Accelerator) -> list[str]:
    """Where a batch's examples came from: each pair's file:line, else the batch's place in the epoch."""
    if getattr(batch, "origins", None):
        return list(batch.origins)
    where = f" on process {accelerator.process_index}" if accelerator.num_processes > 1 else ""
    return [f"batch {progress.batches_in_epoch} of epoch {progress.epoch}{where}"]


def skip_nonfinite(accelerator: Accelerator, recipe: Recipe, progress: Progress, loss: float, norm, micro_stats,
                   rows, bar) -> None:
    """Count a step whose loss or gradients are not finite as skipped, or stop the run with an error naming the
    step and its rows when the recipe allows no more skips. Every process calls it at the same step (the loss is
    averaged over processes and the gradients are synchronised) and gathers the rows of every process."""
    bad = gather_object([r for m, r in zip(micro_stats, rows) if not torch.isfinite(m["loss"])])
    if not bad:  # a finite loss with non-finite gradients: any row of the step may be the cause
        bad = gather_object(rows)
    named = [origin for batch in bad for origin in batch]
    shown = ", ".join(named[:8]) + (f" and {len(named) - 8} more" if len(named) > 8 else "")
    what = f"the loss is {loss}" if not math.isfinite(loss) else f"the gradient norm is {float(norm)}"
    step = progress.step + 1
    if progress.skipped_nonfinite >= recipe.skip_nonfinite:
        kept = latest_checkpoint(recipe.output_dir)
        allowed = (f"skip_nonfinite: {recipe.skip_nonfinite} steps were skipped already" if recipe.skip_nonfinite
                   else "lower learning_rate, check these rows, or let the recipe skip such steps (skip_nonfinite: N)")
        error = TrainingError(f"step {step}: {what} (rows: {shown}); no model was saved"
                              + (f", the last good checkpoint is {kept.path}" if kept else "") + f"; {allowed}")
        if accelerator.num_processes > 1:
            # Every process stops here, at the same step: each says why before any of them exits (the launcher ends
            # the others as soon as one exits, which could cut a slower one short before its message).
            bar.close()  # the main process's bar ends its line before any process writes beside it
            accelerator.wait_for_everyone()
            sys.stderr.write(f"error: {error}\n")  # one write: lines of several processes do not interleave
            sys.stderr.flush()
            error.reported = True
            accelerator.wait_for_everyone()
        raise error
    progress.skipped_nonfinite += 1
    bar.write(f"step {step}: skipped, {what} (rows: {shown}); {progress.skipped_nonfinite} of at most "
              f"{recipe.skip_nonfinite} steps skipped")


def checkpoint_path(recipe: Recipe, step: int) -> Path:
    return Path(recipe.output_dir, "checkpoints", f"step-{step:08d}")


def save_checkpoint(accelerator: Accelerator, recipe: Recipe, progress: Progress, scheduler) -> None:
    """Accelerate's state on every process, then (main process) the progress file that marks it complete."""
    path = checkpoint_path(recipe, progress.step)
    accelerator.save_state(path)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        mark_complete(path, progress, scheduler.state_dict(), recipe.to_dict())
        prune(recipe.output_dir, progress.run, recipe.save_total_limit)
    accelerator.wait_for_everyone()


def restore(accelerator: Accelerator, recipe: Recipe, optimizer, scheduler, resume_changed: bool) -> Progress:
    """Load the newest complete checkpoint (model, optimizer, RNG, scheduler) and return where it stood."""
    checkpoint = latest_checkpoint(recipe.output_dir)
    if checkpoint is None:
        accelerator.print(f"--resume: no complete checkpoint in {recipe.output_dir}/checkpoints; starting from step 0")
        return Progress()
    changes = recipe_changes(checkpoint.recipe, recipe.to_dict())
    if changes and not resume_changed:
        raise RecipeError(f"--resume: the recipe differs from the one {checkpoint.path} was trained with: "
                          + "; ".join(changes) + ". Resume with that recipe, or pass --resume-changed to continue "
                          "with the new values")
    try:
        accelerator.load_state(checkpoint.path)  # model (safetensors), optimizer and RNG with weights_only=True
    except (OSError, RuntimeError, ValueError, KeyError, pickle.UnpicklingError) as e:
        reason = " ".join(str(e).split())  # one line
        raise TrainingError(f"checkpoint {checkpoint.path} cannot be loaded ({type(e).__name__}: {reason}); delete it "
                            "to resume from the one before") from None
    scheduler.load_state_dict(checkpoint.scheduler)
    if changes:
        accelerator.print("--resume-changed: continuing with " + "; ".join(changes))
        # The checkpoint's optimizer and scheduler carry the old learning rate: the recipe's applies from here on.
        scheduler.base_lrs = [recipe.learning_rate] * len(scheduler.base_lrs)
        for group, factor in zip(optimizer.param_groups, scheduler.lr_lambdas):
            group["initial_lr"], group["lr"] = recipe.learning_rate, recipe.learning_rate * factor(scheduler.last_epoch)
    accelerator.print(f"resumed from {checkpoint.path} (step {checkpoint.progress.step})")
    return checkpoint.progress


def bytes_to_save(model: torch.nn.Module) -> int:
    """At least what a checkpoint (every weight, AdamW's two fp32 moments of the trained ones) and the final model
    take on disk."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    moments = sum(2 * 4 * p.numel() for p in model.parameters() if p.requires_grad)
    return 2 * weights + moments


def parameter_groups(params: list[torch.nn.Parameter], weight_decay: float) -> list[dict]:
    """AdamW's groups: weight decay on the tensors of 2 or more dimensions (weight matrices, embeddings, LoRA
    factors), none on biases, norm weights and scalars such as CLIP's logit scale (nanoGPT's and open_clip's rule:
    decaying those only pulls them towards 0, which means nothing for a norm's gain or a temperature)."""
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


def shards_parameters(accelerator: Accelerator) -> bool:
    """Whether no process holds all the weights after ``prepare`` (FSDP, DeepSpeed ZeRO-3)."""
    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    return (accelerator.distributed_type == DistributedType.DEEPSPEED
            and accelerator.state.deepspeed_plugin.zero_stage == 3)


def meta_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module`` whose parameters are on the meta device (no memory): the structure the final save fills
    with the gathered weights. Buffers are copied as they are (they are small and not sharded)."""
    memo = {}
    for param in module.parameters():
        shape = getattr(param, "ds_shape", param.shape)  # ZeRO-3 partitioned at init: the data is empty
        memo[id(param)] = torch.nn.Parameter(torch.empty(shape, dtype=param.dtype, device="meta"),
                                             requires_grad=param.requires_grad)
    return copy.deepcopy(module, memo)


def final_model(accelerator: Accelerator, model, skeleton: torch.nn.Module | None) -> torch.nn.Module | None:
    """The trained model, unwrapped and whole, on the main process (None elsewhere). Call it on every process: under
    FSDP and ZeRO-3 it gathers the shards into a full state dict (on the CPU, main process) and loads it into
    ``skeleton``, the unsharded structure."""
    if skeleton is None:
        return accelerator.unwrap_model(model) if accelerator.is_main_process else None
    state_dict = accelerator.get_state_dict(model)
    if not accelerator.is_main_process:
        return None
    skeleton.load_state_dict(state_dict, assign=True)
    return skeleton


def finish(accelerator: Accelerator, recipe: Recipe, task, model, progress: Progress, elapsed: float,
           skeleton: torch.nn.Module | None = None) -> dict:
    """Final evaluation and the saved model, written whole or not at all (:func:`checkpoints.save_whole`)."""
    measured_on = "eval" if task.eval_data else "train"
    data = task.eval_data or task.train_data[:256]
    metrics = task.evaluate(accelerator, model, data)
    accelerator.log(_prefixed("eval/", metrics), step=progress.step)
    info = {"evaluated_on": measured_on, "steps": progress.step, "train_seconds": round(elapsed, 1),
            "skipped_nonfinite": progress.skipped_nonfinite, "main_metric": task.main_metric, "metrics": metrics}
    trained = final_model(accelerator, model, skeleton)
    if accelerator.is_main_process:
        save_whole(lambda folder: task.save(trained, folder, info), recipe.output_dir)
        accelerator.print(task.format(f"{measured_on} ({recipe.eval_data or recipe.train_data})", metrics))
        accelerator.print(f"saved to {recipe.output_dir} after {progress.step} steps in {elapsed:.1f}s")
    accelerator.wait_for_everyone()
    return info


def _prefixed(prefix: str, metrics: dict) -> dict:
    flat = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update({f"{prefix}{key}/{k}": v for k, v in value.items()})
        else:
            flat[prefix + key] = value
    return flat


def _flat(tree: dict) -> dict:
    """Recipe as flat scalars, for trackers such as TensorBoard's hparams."""
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flatten(tree).items()}
