"""The one training loop, on Accelerate: accumulate, clip, schedule, log, evaluate, checkpoint, resume.

Reads top to bottom: the learner (:mod:`rewardlab.tasks`) brings data, model, loss, evaluation and saving; the loop
builds the optimizer and runs optimizer steps. A global batch of ``batch_size`` examples is split over processes
and accumulation steps, so the run computes the same losses on 1 process as on N (up to float noise).
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration, PartialState
from accelerate.utils import DistributedType, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from rewardlab.config import Recipe, RecipeError, to_dict
from rewardlab.tasks import build_task
from rewardlab.tracking import JSONLinesTracker

PROGRESS_FILE = "progress.json"  # written last into a checkpoint: its presence marks the checkpoint complete


@dataclass
class Progress:
    """Where the loop is: optimizer steps done, the epoch, and the micro-batches of that epoch already consumed."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0


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
    trackers = {"jsonl": lambda: [JSONLinesTracker("metrics", recipe.output_dir)], "tensorboard": lambda: ["tensorboard"],
                "none": lambda: None}
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision=mixed_precision(recipe.precision),
        gradient_accumulation_steps=recipe.batch_size // (micro * processes),
        log_with=trackers[recipe.tracker](),
        project_dir=recipe.output_dir,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=recipe.seed),
    )
    return accelerator, micro


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest checkpoint whose progress file was written (i.e. it finished saving)."""
    done = sorted(p.parent for p in Path(output_dir, "checkpoints").glob(f"step-*/{PROGRESS_FILE}"))
    return done[-1] if done else None


def save_checkpoint(accelerator: Accelerator, recipe: Recipe, progress: Progress) -> None:
    root = Path(recipe.output_dir, "checkpoints")
    path = root / f"step-{progress.step:08d}"
    accelerator.save_state(path)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (path / PROGRESS_FILE).write_text(json.dumps(progress.__dict__))
        for old in sorted(root.glob("step-*"))[: -recipe.save_total_limit]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def train(recipe: Recipe, resume: bool = False) -> dict:
    """Train the learner ``recipe`` describes, save it to ``recipe.output_dir``, return the final metrics."""
    accelerator, micro = make_accelerator(recipe)
    log = accelerator.print
    set_seed(recipe.seed)
    task = build_task(recipe, log)
    log(f"batch: {recipe.batch_size} a step = {micro} a forward pass × {accelerator.num_processes} processes "
        f"× {accelerator.gradient_accumulation_steps} accumulation steps")
    sampler = getattr(task, "sampler", None)
    loader = DataLoader(task.train_data, batch_size=micro, shuffle=sampler is None, sampler=sampler,
                        collate_fn=task.collate)
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
    # Stepped by hand once per optimizer step (Accelerate's wrapper would step it once per process).
    scheduler = get_scheduler(recipe.lr_scheduler, optimizer, round(recipe.warmup_ratio * total_steps), total_steps)
    accelerator.register_for_checkpointing(scheduler)

    progress = Progress()
    checkpoint = latest_checkpoint(recipe.output_dir) if resume else None
    if resume and checkpoint is None:
        log(f"--resume: no complete checkpoint in {recipe.output_dir}/checkpoints; starting from step 0")
    if checkpoint is not None:
        accelerator.load_state(checkpoint)
        progress = Progress(**json.loads((checkpoint / PROGRESS_FILE).read_text()))
        log(f"resumed from {checkpoint} (step {progress.step})")
    accelerator.init_trackers("rewardlab", config=_flat(to_dict(recipe)))

    bar = tqdm(total=total_steps, initial=progress.step, disable=not accelerator.is_main_process, desc="train")
    started, recent = time.perf_counter(), []
    step_started = started
    while progress.step < total_steps:
        loader.set_epoch(progress.epoch)
        batches = accelerator.skip_first_batches(loader, progress.batches_in_epoch) if progress.batches_in_epoch else loader
        micro_stats = []
        for batch in batches:
            progress.batches_in_epoch += 1
            with accelerator.accumulate(model):
                if hasattr(task, "backward"):  # the task runs its own backward passes (cached-gradient batches)
                    loss, stats = task.backward(accelerator, model, batch)
                else:
                    loss, stats = task.loss(model, batch)
                    accelerator.backward(loss)
                if accelerator.sync_gradients and recipe.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, recipe.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients and hasattr(task, "after_optimizer_step"):
                    task.after_optimizer_step(accelerator.unwrap_model(model))
                optimizer.zero_grad()
            micro_stats.append({"loss": loss.detach(), **{k: v.detach() for k, v in stats.items()}})
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            progress.step += 1
            step_stats = {k: accelerator.reduce(torch.stack([m[k] for m in micro_stats]).mean(), "mean").item()
                          for k in micro_stats[0]}
            micro_stats = []
            recent = (recent + [step_stats])[-50:]
            now = time.perf_counter()
            accelerator.log({f"train/{k}": v for k, v in step_stats.items()}
                            | {"train/lr": scheduler.get_last_lr()[0], "train/step_seconds": now - step_started},
                            step=progress.step)
            step_started = now
            bar.update(1)
            bar.set_postfix({k: f"{sum(r[k] for r in recent) / len(recent):.4f}" for k in step_stats})
            if recipe.eval_steps and progress.step % recipe.eval_steps == 0 and task.eval_data and progress.step < total_steps:
                metrics = task.evaluate(accelerator, model, task.eval_data)
                accelerator.log(_prefixed("eval/", metrics), step=progress.step)
                bar.write(f"step {progress.step}: eval {task.main_metric} {metrics[task.main_metric]:.4f}")
            if recipe.save_steps and progress.step % recipe.save_steps == 0 and progress.step < total_steps:
                save_checkpoint(accelerator, recipe, progress)
            if progress.step >= total_steps:
                break
        else:
            progress.epoch, progress.batches_in_epoch = progress.epoch + 1, 0
    bar.close()
    return finish(accelerator, recipe, task, model, progress, time.perf_counter() - started, skeleton)


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
    """Final evaluation and the saved model."""
    measured_on = "eval" if task.eval_data else "train"
    data = task.eval_data or task.train_data[:256]
    metrics = task.evaluate(accelerator, model, data)
    accelerator.log(_prefixed("eval/", metrics), step=progress.step)
    info = {"evaluated_on": measured_on, "steps": progress.step, "train_seconds": round(elapsed, 1),
            "main_metric": task.main_metric, "metrics": metrics}
    trained = final_model(accelerator, model, skeleton)
    if accelerator.is_main_process:
        out = Path(recipe.output_dir)
        task.save(trained, out, info)
        accelerator.print(task.format(f"{measured_on} ({recipe.eval_data or recipe.train_data})", metrics))
        accelerator.print(f"saved to {out} after {progress.step} steps in {elapsed:.1f}s")
    accelerator.wait_for_everyone()
    accelerator.end_training()  # also ends the process group, so it comes last
    return info


def _prefixed(prefix: str, metrics: dict) -> dict:
    flat = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update({f"{prefix}{key}/{k}": v for k, v in value.items()})
        else:
            flat[prefix + key] = value
    return flat


def _flat(tree: dict, prefix: str = "") -> dict:
    """Recipe as flat scalars, for trackers such as TensorBoard's hparams."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat
