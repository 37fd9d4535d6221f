"""rewardlab against TRL's RewardTrainer: same model, data, order, batch, steps, learning rate and precision.

    python -m benchmarks.vs_trl --model smollm2-135m --lora-r 16 --steps 6
    python -m benchmarks.vs_trl --model minilm-l6 --steps 10

Each trainer runs in its own process (so each has its own peak memory), alternating TRL, rewardlab, TRL, … for
``--rounds`` rounds. Both start from the same weights (``rewardlab.models.loading.load_backbone`` with one seed, LoRA
included) and see the same token ids (rewardlab's encoder; TRL gets them pre-tokenized) in the same order (the order
of rewardlab's seeded sampler; TRL reads them sequentially). The script prints, per trainer, pairs/s and unique
(non-pad, non-repeated) tokens/s over the steps after the first, peak resident memory, the loss at every step, the
ratios, the machine's measured matmul rate and the model FLOPs utilisation; and it fails (exit 1) when the losses of
the two differ by more than ``--tolerance`` at any step.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def matmul_rate(seconds: float = 3.0, n: int = 2048) -> float:
    """Measured fp32 matrix-multiply rate of this machine, FLOP/s (best of repeated n×n products)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best


def prepare(spec: dict):
    """(backbone, the pairs both trainers see, in order): rewardlab's encoding and its sampler's order."""
    from rewardlab.config import LoraSettings, ModelSettings
    from rewardlab.data.encode import EncodingPolicy
    from rewardlab.data.pairs import read_pairs
    from rewardlab.models.loading import load_backbone

    # no dropout anywhere (TRL's disable_dropout), so both compute the same deterministic function
    lora = LoraSettings(r=spec["lora_r"], alpha=2 * spec["lora_r"], dropout=0.0)
    settings = ModelSettings(name=spec["model"], lora=lora, gradient_checkpointing=spec["gradient_checkpointing"])
    backbone = load_backbone(settings, spec["seed"])
    pairs, _ = read_pairs(spec["data"])
    encoded, _ = EncodingPolicy(backbone.tokenizer, backbone.encoder, spec["max_length"]).encode_pairs(pairs)
    order = torch.randperm(len(encoded), generator=torch.Generator().manual_seed(spec["seed"])).tolist()
    return backbone, [encoded[i] for i in order[: spec["steps"] * spec["batch_size"]]]


def run_trl(spec: dict) -> dict:
    from datasets import Dataset
    from torch.utils.data import SequentialSampler
    from transformers import TrainerCallback
    from trl import RewardConfig, RewardTrainer

    backbone, pairs = prepare(spec)
    rows = [{"chosen_ids": p.prompt_ids + p.chosen_ids, "rejected_ids": p.prompt_ids + p.rejected_ids} for p in pairs]
    losses, stamps = [], []

    class Recorded(RewardTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            losses.append((out[0] if return_outputs else out).item())
            return out

        def _get_train_sampler(self, *args, **kwargs):
            return SequentialSampler(self.train_dataset)

    class Clock(TrainerCallback):
        def on_step_end(self, *args, **kwargs):
            stamps.append(time.perf_counter())

    args = RewardConfig(
        output_dir=spec["workdir"] + "/trl", per_device_train_batch_size=spec["batch_size"], max_steps=spec["steps"],
        learning_rate=spec["lr"], lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        logging_steps=1, report_to=[], save_strategy="no", use_cpu=True, bf16=False, max_length=None, seed=spec["seed"],
        gradient_checkpointing=spec["trl_gradient_checkpointing"], disable_dropout=True,
    )
    trainer = Recorded(model=backbone.model, args=args, train_dataset=Dataset.from_list(rows),
                       processing_class=backbone.tokenizer, callbacks=[Clock()])
    stamps.append(time.perf_counter())
    trainer.train()
    return {"losses": losses, "step_seconds": [b - a for a, b in zip(stamps, stamps[1:])]}


def run_rewardlab(spec: dict) -> dict:
    from rewardlab.config import load_recipe
    from rewardlab.training.loop import train

    out = Path(spec["workdir"], "rewardlab")
    recipe = load_recipe(None, [
        f"model.name={spec['model']}", f"model.lora.r={spec['lora_r']}", f"model.lora.alpha={2 * spec['lora_r']}",
        "model.lora.dropout=0", f"model.gradient_checkpointing={spec['gradient_checkpointing']}",
        f"train_data={spec['data']}", "eval_data=null", f"max_length={spec['max_length']}",
        f"batch_size={spec['batch_size']}", f"max_steps={spec['steps']}", f"learning_rate={spec['lr']}",
        "warmup_ratio=0", "logging_steps=1", f"seed={spec['seed']}", f"layout={spec['layout']}",
        f"model.attention={spec['attention']}", f"output_dir={out}",
    ])
    train(recipe)
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "train/loss" in r]
    return {"losses": [r["train/loss"] for r in steps], "step_seconds": [r["train/step_seconds"] for r in steps]}


LINEAR_OPS = ("aten::mm", "aten::addmm", "aten::bmm")
ATTENTION_OPS = ("aten::_scaled_dot_product_flash_attention_for_cpu",
                 "aten::_scaled_dot_product_flash_attention_for_cpu_backward")


def profile_step(spec: dict, rate: float) -> None:
    """Where one rewardlab optimizer step (forward, backward, AdamW) spends its time: torch.profiler's operators by
    self CPU time, and the share spent in matrix multiplies with the rate they ran at against the machine's."""
    from torch.profiler import ProfilerActivity, profile

    from rewardlab.models.reward import RewardNetwork
    from rewardlab.objectives import BradleyTerryLoss
    from rewardlab.tasks.reward import make_collator, resolve_layout

    backbone, pairs = prepare(spec)
    scorer = RewardNetwork(backbone.model, backbone.encoder, spec["attention"]).train()
    layout, _ = resolve_layout(spec["layout"], scorer)
    collate = make_collator(layout, scorer)
    optimizer = torch.optim.AdamW([p for p in scorer.parameters() if p.requires_grad], lr=spec["lr"])

    def step(batch):
        BradleyTerryLoss()(*scorer(batch).chunk(2)).backward()
        optimizer.step()
        optimizer.zero_grad()

    batches = [collate(pairs[i : i + spec["batch_size"]]) for i in (0, spec["batch_size"])]
    step(batches[0])  # warm-up
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        started = time.perf_counter()
        step(batches[1])
        seconds = time.perf_counter() - started
    events = prof.key_averages()
    print(f"\nprofile of one rewardlab step ({layout}, {seconds:.1f} s):")
    print(events.table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=60))
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    linear = [e for e in events if e.key in LINEAR_OPS]
    linear_seconds = sum(e.self_cpu_time_total for e in linear) / 1e6
    linear_rate = sum(e.flops for e in linear) / max(linear_seconds, 1e-9)
    attention_seconds = sum(e.self_cpu_time_total for e in events if e.key in ATTENTION_OPS) / 1e6
    print(f"of {total:.2f} s: matrix multiplies {linear_seconds:.2f} s ({linear_seconds / total:.0%}) at "
          f"{linear_rate / 1e9:.1f} GFLOP/s ({linear_rate / rate:.0%} of the measured rate); fused attention "
          f"{attention_seconds:.2f} s ({attention_seconds / total:.0%}); everything else "
          f"{(total - linear_seconds - attention_seconds) / total:.0%}")


def rss_gb() -> float:
    """This process's resident memory now."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def worker(name: str, spec: dict) -> None:
    torch.manual_seed(spec["seed"])
    import transformers  # noqa: F401  (the libraries' own memory is part of the baseline, not of training)

    baseline = rss_gb()
    result = (run_trl if name == "trl" else run_rewardlab)(spec)
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    result["peak_above_imports_gb"] = result["peak_rss_gb"] - baseline
    Path(spec["workdir"], f"{name}.json").write_text(json.dumps(result))


def model_flops(spec: dict, backbone, pairs) -> tuple[float, int]:
    """(FLOPs the unique tokens need for one pass of training, unique tokens). Per token: 2N forward, 2N for the
    activation gradients, and 2N more for the weight gradients when all weights train (LoRA's are negligible);
    attention adds 2·2·d·context per layer forward (scores and values), three times that with the backward."""
    from rewardlab.models.reward import RewardNetwork

    config = RewardNetwork(backbone.model, backbone.encoder).classifier.config
    n = sum(p.numel() for name, p in backbone.model.named_parameters() if "embed" not in name and "lora_" not in name)
    per_token = (4 if spec["lora_r"] else 6) * n
    flops, tokens = 0.0, 0
    for p in pairs:
        for segment in (len(p.prompt_ids), len(p.chosen_ids), len(p.rejected_ids)):
            tokens += segment
        sequence = len(p.prompt_ids) + max(len(p.chosen_ids), len(p.rejected_ids))
        context = sequence / 2  # mean causal context; an encoder's is the whole sequence, close enough here
        unique = len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids)
        flops += unique * (per_token + 3 * 4 * config.hidden_size * context * config.num_hidden_layers)
    return flops, tokens


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--lora-r", type=int, default=0)
    parser.add_argument("--data", default="../shared/data/hh-harmless-train.jsonl")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs a step")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layout", default="auto", help="rewardlab's layout (auto, padded, packed, prefix_shared)")
    parser.add_argument("--attention", default="auto", choices=("auto", "dense", "blocks"),
                        help="rewardlab's model.attention")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--gradient-checkpointing", type=float, default=0.0,
                        help="rewardlab's model.gradient_checkpointing: the fraction of layers checkpointed")
    parser.add_argument("--trl-gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True,
                        help="TRL's RewardConfig default is on")
    parser.add_argument("--tolerance", type=float, default=2e-3)
    parser.add_argument("--profile", action="store_true", help="also profile one rewardlab step (torch.profiler)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, json.loads(Path(args.spec).read_text()))
        return 0

    workdir = tempfile.mkdtemp(prefix="rewardlab-vs-trl-")
    spec = {k: v for k, v in vars(args).items() if k not in ("worker", "spec", "rounds", "tolerance", "profile")}
    spec["workdir"] = workdir
    Path(workdir, "spec.json").write_text(json.dumps(spec))
    results = {"trl": [], "rewardlab": []}
    for _ in range(args.rounds):
        for name in ("trl", "rewardlab"):
            command = [sys.executable, "-m", "benchmarks.vs_trl", "--worker", name, "--spec", f"{workdir}/spec.json"]
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            results[name].append(json.loads(Path(workdir, f"{name}.json").read_text()))
    rate = matmul_rate()
    flops, tokens = model_flops(spec, *prepare(spec))
    failed = report(spec, results, rate, flops, tokens, args.tolerance)
    if args.profile:
        profile_step(spec, rate)
    return failed


def report(spec, results, rate, flops, tokens, tolerance) -> int:
    steps = spec["steps"]
    print(f"\n{spec['model']} {'LoRA r=' + str(spec['lora_r']) if spec['lora_r'] else 'full fine-tuning'}, "
          f"{spec['batch_size']} pairs a step, {steps} steps, max_length {spec['max_length']}, fp32, "
          f"rewardlab layout {spec['layout']}, attention {spec['attention']}, gradient checkpointing on "
          f"{spec['gradient_checkpointing']:.0%} of the "
          f"layers; TRL gradient checkpointing {spec['trl_gradient_checkpointing']}")
    print(f"machine matmul rate: {rate / 1e9:.1f} GFLOP/s; unique tokens in the {steps} steps: {tokens:,}")
    summary = {}
    for name, runs in results.items():
        # steady state: every step after the first, over all rounds
        seconds = [s for run in runs for s in run["step_seconds"][1:]]
        per_step = statistics.median(seconds)
        mean_step = sum(seconds) / len(seconds)
        summary[name] = {
            "s/step (median)": per_step,
            "pairs/s": spec["batch_size"] / mean_step,
            "unique tokens/s": tokens / steps / mean_step,
            "peak RSS GB": max(run["peak_rss_gb"] for run in runs),
            "peak − imports GB": max(run["peak_above_imports_gb"] for run in runs),
            "MFU": flops / steps / mean_step / rate,
        }
    print(f"{'':20}{'TRL':>14}{'rewardlab':>14}{'ratio':>10}")
    for key in summary["trl"]:
        a, b = summary["trl"][key], summary["rewardlab"][key]
        print(f"{key:20}{a:14.3f}{b:14.3f}{b / a:10.2f}")
    worst = 0.0
    print(f"\n{'step':>4}{'TRL loss':>14}{'rewardlab loss':>16}{'|Δ|':>10}")
    for step, (a, b) in enumerate(zip(results["trl"][0]["losses"], results["rewardlab"][0]["losses"]), 1):
        worst = max(worst, abs(a - b))
        print(f"{step:4}{a:14.6f}{b:16.6f}{abs(a - b):10.2e}")
    if worst > tolerance:
        print(f"FAILED: the losses differ by {worst:.2e} > {tolerance:.0e}: not the same computation")
        return 1
    print(f"losses agree at every step (max |Δ| {worst:.2e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
