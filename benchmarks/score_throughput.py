"""Scoring throughput: rewardlab's token-budget batching against a naive loop, on the same model and inputs.

    python -m benchmarks.score_throughput --model minilm-l6 [--responses 2000] [--token-budget N]

The inputs are real responses from ``../shared/data`` (HH-RLHF harmless train/dev with their implicit prompts, and
the LLMBar / PandaLM preference files): every chosen and rejected response with its prompt, shuffled with a fixed
seed, the first ``--responses`` of them. Both ways score the same token ids (rewardlab's encoding, the prompt cut
from the left past ``--max-length``), so only the batching differs:

- naive: fixed batches of 8 in input order, each padded to its longest sequence;
- rewardlab: :meth:`RewardModel.score_ids`, sorted by length, batches of at most ``--token-budget`` padded tokens.

Encoding (tokenization) is not timed. The two ways' rewards are checked to agree. ``--model`` is a saved reward-model
folder, or a backbone name loaded as training loads it (``minilm-l6``: MiniLM-L6 with a fresh 1-output head;
throughput does not depend on the head's weights).
Prints one JSON object (and writes it with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from rewardlab.config import ModelSettings
from rewardlab.data.pairs import read_pairs
from rewardlab.inference.scorer import RewardModel
from rewardlab.models.loading import load_backbone

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SOURCES = ["hh-harmless-train.jsonl", "hh-harmless-dev.jsonl", "prefs/llmbar-natural.jsonl",
           "prefs/llmbar-processed-llmeval2.jsonl", "prefs/pandalm-testset-human.jsonl"]


def shared_responses(n: int, data_dir: Path = SHARED_DATA, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` (prompt, response) pairs from the project's shared data, shuffled with ``seed``."""
    items = []
    for name in SOURCES:
        pairs, _ = read_pairs(str(data_dir / name))
        items += [(p.prompt, r) for p in pairs for r in (p.chosen, p.rejected)]
    random.Random(seed).shuffle(items)
    if len(items) < n:
        raise SystemExit(f"only {len(items)} responses in {data_dir}, asked for {n}")
    return items[:n]


def load_model(name: str, max_length: int, token_budget: int | None) -> RewardModel:
    """A saved reward model folder, or a backbone name (``minilm-l6``, ...) with a fresh 1-output head."""
    if Path(name).is_dir():
        return RewardModel.load(name, max_length, token_budget)
    backbone = load_backbone(ModelSettings(name=name))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return RewardModel.of(backbone.model.to(device), backbone.tokenizer, backbone.encoder, {}, max_length, token_budget)


def naive_loop(rm: RewardModel, sequences: list[list[int]], batch_size: int) -> tuple[list[float], int]:
    """Fixed batches in input order, each padded to its longest: (rewards, padded tokens)."""
    rewards, padded = [], 0
    for start in range(0, len(sequences), batch_size):
        batch = sequences[start : start + batch_size]
        rewards += rm.forward(batch)
        padded += len(batch) * max(len(s) for s in batch)
    return rewards, padded


def timed(function, *args):
    """(result, wall seconds, CPU seconds of this process): on a shared machine CPU time is the steadier measure."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def rates(n: int, wall: float, cpu: float) -> dict:
    return {"seconds": round(wall, 2), "cpu_seconds": round(cpu, 2), "responses_per_s": round(n / wall, 1),
            "responses_per_cpu_s": round(n / cpu, 1)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="minilm-l6", help="a saved model folder, offline backbone name or hub id")
    p.add_argument("--responses", type=int, default=2000)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--token-budget", type=int, help="default: rewardlab's (16384 on a GPU, 2048 on CPU)")
    p.add_argument("--naive-batch-size", type=int, default=8)
    p.add_argument("--data-dir", type=Path, default=SHARED_DATA)
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    rm = load_model(args.model, args.max_length, args.token_budget)
    sequences = [rm.encode(prompt, response) for prompt, response in shared_responses(args.responses, args.data_dir)]
    rm.score_ids(sequences[:16])  # warm-up: first-call allocations and kernel selection

    (naive, naive_padded), naive_s, naive_cpu = timed(naive_loop, rm, sequences, args.naive_batch_size)
    batched, batched_s, batched_cpu = timed(rm.score_ids, sequences)
    batches = rm.batches([len(s) for s in sequences])

    result = {
        "model": args.model,
        "device": str(next(rm.model.parameters()).device),
        "torch_threads": torch.get_num_threads(),
        "responses": len(sequences),
        "tokens": sum(map(len, sequences)),
        "max_length": args.max_length,
        "naive": {"batch_size": args.naive_batch_size, **rates(len(sequences), naive_s, naive_cpu),
                  "padded_tokens": naive_padded, "forward_passes": -(-len(sequences) // args.naive_batch_size)},
        "rewardlab": {"token_budget": rm.token_budget, **rates(len(sequences), batched_s, batched_cpu),
                      "padded_tokens": sum(len(b) * len(sequences[b[0]]) for b in batches),
                      "forward_passes": len(batches)},
        "speedup": round(naive_s / batched_s, 2),
        "speedup_cpu_time": round(naive_cpu / batched_cpu, 2),
        "max_abs_reward_difference": max(abs(a - b) for a, b in zip(naive, batched)),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
