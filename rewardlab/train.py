"""The one training loop, on Accelerate: accumulate, clip, schedule, log, evaluate, checkpoint, resume.

Reads top to bottom: build the data, the model and the optimizer; then one loop over optimizer steps. A global
batch of ``batch_size`` pairs is split over processes and accumulation steps, so the run computes the same losses on
1 process as on N (up to float noise).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration, PartialState
from accelerate.utils import gather_object, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from rewardlab.backbones import Backbone, load_backbone, trainable_parameters
from rewardlab.config import Recipe, RecipeError, to_dict
from rewardlab.data.collate import PadCollator
from rewardlab.data.encode import EncodedPair, PairEncoder
from rewardlab.data.formats import read_pairs
from rewardlab.evaluate import format_metrics, plot_rewards, preference_metrics, score_pairs
from rewardlab.heads import pair_rewards
from rewardlab.objectives import BradleyTerryLoss
from rewardlab.save import save_reward_model
from rewardlab.tracking import JSONLinesTracker

PROGRESS_FILE = "progress.json"  # written last into a checkpoint: its presence marks the checkpoint complete


@dataclass
class Progress:
    """Where the loop is: optimizer steps done, the epoch, and the micro-batches of that epoch already consumed."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0


def load_data(recipe: Recipe, backbone: Backbone, log) -> tuple[list[EncodedPair], list[EncodedPair]]:
    """Read and encode the training and evaluation pairs, reporting what was skipped, cut or dropped."""
    tokenizer = backbone.tokenizer
    render = None
    if tokenizer.chat_template:
        def render(messages, prompt_only):
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt_only)
    encoder = PairEncoder(tokenizer, backbone.encoder, recipe.max_length, recipe.truncation)
    splits = []
    for source, split in ((recipe.train_data, recipe.train_split), (recipe.eval_data, recipe.eval_split)):
        if source is None:
            splits.append([])
            continue
        pairs, read_report = read_pairs(source, split, render)
        encoded, encode_report = encoder.encode_pairs(pairs, source)
        log(f"{source}: {read_report.summary()}; {encode_report.summary()}")
        splits.append(encoded)
    return splits[0], splits[1]


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
    trackers = {"jsonl": [JSONLinesTracker("metrics", recipe.output_dir)], "tensorboard": ["tensorboard"]}
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision=mixed_precision(recipe.precision),
        gradient_accumulation_steps=recipe.batch_size // (micro * processes),
        log_with=trackers.get(recipe.tracker),
        project_dir=recipe.output_dir,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=recipe.seed),
    )
    return accelerator, micro


def evaluate_pairs(accelerator: Accelerator, model, pairs: list[EncodedPair], collator, batch_size: int):
    """Score ``pairs`` split across processes; every process gets all rewards back, in order."""
    with accelerator.split_between_processes(pairs) as shard:
        chosen, rejected = score_pairs(model, shard, collator, batch_size, accelerator.device)
    return gather_object(chosen), gather_object(rejected)


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
    """Train a reward model as ``recipe`` says, save it to ``recipe.output_dir``, return the final metrics."""
    accelerator, micro = make_accelerator(recipe)
    log = accelerator.print
    set_seed(recipe.seed)
    backbone = load_backbone(recipe.model, recipe.seed)
    trainable, total = trainable_parameters(backbone.model)
    log(f"model {recipe.model.name}: {trainable:,} of {total:,} parameters trained "
        f"({'LoRA r=' + str(recipe.model.lora.r) if recipe.model.lora.r else 'full fine-tuning'}), "
        f"{'encoder (reward at first token)' if backbone.encoder else 'causal LM (reward at last real token)'}")
    log(f"batch: {recipe.batch_size} pairs a step = {micro} a forward pass × {accelerator.num_processes} processes "
        f"× {accelerator.gradient_accumulation_steps} accumulation steps")
    train_pairs, eval_pairs = load_data(recipe, backbone, log)
    collator = PadCollator(backbone.tokenizer.pad_token_id, backbone.encoder)
    loader = DataLoader(train_pairs, batch_size=micro, shuffle=True, collate_fn=collator)
    params = [p for p in backbone.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    set_seed(recipe.seed)
    model, optimizer, loader = accelerator.prepare(backbone.model, optimizer, loader)

    steps_per_epoch = math.ceil(len(loader) / accelerator.gradient_accumulation_steps)
    total_steps = recipe.max_steps or math.ceil(recipe.epochs * steps_per_epoch)
    # Stepped by hand once per optimizer step (Accelerate's wrapper would step it once per process).
    scheduler = get_scheduler(recipe.lr_scheduler, optimizer, round(recipe.warmup_ratio * total_steps), total_steps)
    accelerator.register_for_checkpointing(scheduler)
    loss_fn = BradleyTerryLoss(recipe.loss.label_smoothing, recipe.loss.center_coefficient)

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
    started, window = time.perf_counter(), []
    while progress.step < total_steps:
        loader.set_epoch(progress.epoch)
        batches = accelerator.skip_first_batches(loader, progress.batches_in_epoch) if progress.batches_in_epoch else loader
        micro_losses, micro_wins = [], []
        for batch in batches:
            progress.batches_in_epoch += 1
            with accelerator.accumulate(model):
                chosen, rejected = pair_rewards(model, batch)
                loss = loss_fn(chosen, rejected, batch.margin if recipe.loss.use_margin else None)
                accelerator.backward(loss)
                if accelerator.sync_gradients and recipe.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, recipe.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            micro_losses.append(loss.detach())
            micro_wins.append((chosen > rejected).float().mean().detach())
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            progress.step += 1
            step_loss = accelerator.reduce(torch.stack(micro_losses).mean(), "mean").item()
            step_acc = accelerator.reduce(torch.stack(micro_wins).mean(), "mean").item()
            micro_losses, micro_wins = [], []
            window.append((step_loss, step_acc))
            accelerator.log({"train/loss": step_loss, "train/accuracy": step_acc,
                             "train/lr": scheduler.get_last_lr()[0]}, step=progress.step)
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}", acc=f"{sum(a for _, a in window[-50:]) / len(window[-50:]):.3f}")
            if recipe.eval_steps and progress.step % recipe.eval_steps == 0 and eval_pairs and progress.step < total_steps:
                metrics = preference_metrics(*evaluate_pairs(accelerator, model, eval_pairs, collator, micro), eval_pairs)
                accelerator.log(_prefixed("eval/", metrics), step=progress.step)
                bar.write(f"step {progress.step}: eval accuracy {metrics['accuracy']:.4f}, margin {metrics['mean_margin']:.3f}")
            if recipe.save_steps and progress.step % recipe.save_steps == 0 and progress.step < total_steps:
                save_checkpoint(accelerator, recipe, progress)
            if progress.step >= total_steps:
                break
        else:
            progress.epoch, progress.batches_in_epoch = progress.epoch + 1, 0
    bar.close()
    elapsed = time.perf_counter() - started
    return finish(accelerator, recipe, backbone, model, train_pairs, eval_pairs, collator, micro, progress, elapsed)


def finish(accelerator, recipe, backbone, model, train_pairs, eval_pairs, collator, micro, progress, elapsed) -> dict:
    """Final evaluation, reward statistics and the saved model."""
    measured_on = "eval" if eval_pairs else "train"
    pairs = eval_pairs or train_pairs[:1000]
    chosen, rejected = evaluate_pairs(accelerator, model, pairs, collator, micro)
    metrics = preference_metrics(chosen, rejected, pairs)
    accelerator.log(_prefixed("eval/", metrics), step=progress.step)
    info = {
        "reward_mean": metrics["reward_mean"],
        "reward_std": metrics["reward_std"],
        "reward_stats_from": measured_on,
        "max_length": recipe.max_length,
        "encoder": backbone.encoder,
        "steps": progress.step,
        "train_seconds": round(elapsed, 1),
        "metrics": metrics,
    }
    if accelerator.is_main_process:
        out = save_reward_model(accelerator.unwrap_model(model), backbone.tokenizer, recipe.output_dir,
                                to_dict(recipe), info, recipe.save_adapter_only)
        if recipe.plots:
            plot_rewards(chosen, rejected, pairs, out / "rewards.png")
        accelerator.print(format_metrics(f"{measured_on} ({recipe.eval_data or recipe.train_data})", metrics))
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
