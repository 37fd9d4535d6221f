"""The cost of scoring with an ensemble of N LoRA members against one model (real tokens per second).

    python -m benchmarks.ensemble_scoring [--model minilm-l6] [--members 4] [--responses 512]

Trains (once, into ``--output``) an ensemble of ``--members`` LoRA members (r 8, all linear layers, 2 steps each:
throughput does not depend on how trained they are), then scores the same responses from ``../shared/data`` (see
:mod:`benchmarks.score_throughput`), already encoded, in five ways:

- ``one model``: member 0 merged into a plain model (what one reward model costs);
- ``one LoRA member``: member 0 as an adapter over the base, unmerged;
- ``ensemble, batched adapters``: the base once with N adapters, each pass n·N rows (peft's ``adapter_names``);
- ``ensemble, one adapter at a time``: the base with N adapters, each batch run N times (``set_adapter``);
- ``N merged models``: each member merged, one after another (what N fully fine-tuned members cost).

Each way is timed 3 times, the ways in turn, and the fastest kept. Prints one JSON object (and writes it with
``--json``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks.score_throughput import shared_responses
from rewardlab.config import load_recipe
from rewardlab.inference.averaging import merged
from rewardlab.inference.ensemble import EnsembleRewardModel, is_ensemble
from rewardlab.inference.scorer import RewardModel
from rewardlab.models.saved import load_info
from rewardlab.training.ensembles import train_ensemble

REPO = Path(__file__).resolve().parents[2]


def fastest(ways: dict, repeats: int = 3) -> dict[str, float]:
    """The fastest of ``repeats`` timings of each way, the ways taken in turn (so a change in the machine's load
    falls on all of them)."""
    times = {name: [] for name in ways}
    for _ in range(repeats):
        for name, run in ways.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return {name: min(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--responses", type=int, default=512)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared machine)")
    parser.add_argument("--output", default="runs/bench-ensemble")
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.output)
    if not is_ensemble(out):
        train_ensemble(load_recipe(None, [
            f"model.name={args.model}", "model.lora.r=8", f"ensemble.members={args.members}", "max_steps=2",
            "batch_size=8", f"max_length={args.max_length}", f"train_data={REPO / 'data/prefs-train.jsonl'}",
            f"eval_data={REPO / 'data/prefs-dev.jsonl'}", "tracker=none", f"output_dir={out}"]))
    batched = EnsembleRewardModel.load(str(out), max_length=args.max_length, batch_adapters=True)
    one_at_a_time = EnsembleRewardModel.load(str(out), max_length=args.max_length, batch_adapters=False)
    folders = [out / f"member-{k}" for k in range(batched.size)]
    device = batched.module.device
    plain = [RewardModel.of(merged(f)[0].to(device), batched.tokenizer, batched.module.encoder, load_info(f),
                         args.max_length) for f in folders]
    lora_member = RewardModel.load(str(folders[0]), args.max_length)
    sequences = [batched.encode(p, r) for p, r in shared_responses(args.responses)]
    tokens = sum(len(s) for s in sequences)
    ways = {
        "one model": lambda: plain[0].score_ids(sequences),
        "one LoRA member": lambda: lora_member.score_ids(sequences),
        "ensemble, batched adapters": lambda: batched.member_ids(sequences),
        "ensemble, one adapter at a time": lambda: one_at_a_time.member_ids(sequences),
        f"{len(plain)} merged models": lambda: [m.score_ids(sequences) for m in plain],
    }
    # the ways agree: each member's rewards, batched, one at a time and merged
    together, apart = batched.member_ids(sequences), one_at_a_time.member_ids(sequences)
    by_merged = batched.adjust([m.score_ids(sequences) for m in plain])
    error = max(abs(a - b) for x, y in ((together, apart), (together, by_merged)) for r, s in zip(x, y)
                for a, b in zip(r, s))
    seconds = fastest(ways)
    base = seconds["one model"]
    result = {
        "model": args.model, "members": batched.size, "responses": len(sequences), "tokens": tokens,
        "device": str(device), "threads": args.threads, "max_abs_difference_between_ways": error,
        "ways": {name: {"seconds": round(s, 3), "tokens_per_second": round(tokens / s),
                        "cost_vs_one_model": round(s / base, 2)} for name, s in seconds.items()},
        "parameters_in_memory": {
            "one model": sum(p.numel() for p in plain[0].model.parameters()),
            "ensemble (base + adapters)": sum(p.numel() for p in batched.model.parameters()),
            f"{len(plain)} merged models": sum(p.numel() for m in plain for p in m.model.parameters()),
        },
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
