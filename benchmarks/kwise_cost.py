"""What a response costs in a k = 4 ranking row against the same responses as k/2 = 2 separate pairs.

    python -m benchmarks.kwise_cost --model smollm2-135m --lora-r 16 --steps 6

Each ranking of ``data/ranks-train.jsonl`` (a prompt and 4 responses) is trained on once as one prefix-shared row
``[prompt | r1 | r2 | r3 | r4]`` (Bradley–Terry over its comparisons, InstructGPT's k-wise weights) and once as the
pairs (r1, r2) and (r3, r4), each ``[prompt | chosen | rejected]``: the same responses, the prompt once against
twice. Steps of the two alternate (forward, backward, AdamW) on the same rankings, ``--batch-size`` rankings a step;
the script prints the median seconds a step, seconds per response and tokens per second (the tokens each batch
holds, padding excluded) over the steps after the first of each.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rewardlab.config import LoraSettings, ModelSettings
from rewardlab.data.encode import EncodedPair, EncodingPolicy
from rewardlab.data.groups import read_groups
from rewardlab.models.loading import load_backbone
from rewardlab.models.reward import RewardNetwork
from rewardlab.objectives import BradleyTerryLoss
from rewardlab.tasks.reward import make_collator


def as_pairs(group) -> list[EncodedPair]:
    """The responses of a 4-response ranking as the pairs (1, 2) and (3, 4), the better one chosen."""
    pairs = []
    for a, b in ((0, 1), (2, 3)):
        if group.levels[b] < group.levels[a]:
            a, b = b, a
        pairs.append(EncodedPair(group.prompt_ids, group.responses[a], group.responses[b]))
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--data", default="data/ranks-train.jsonl")
    parser.add_argument("--batch-size", type=int, default=16, help="rankings a step")
    parser.add_argument("--steps", type=int, default=6, help="steps of each")
    parser.add_argument("--attention", default="auto", choices=("auto", "dense", "blocks"))
    args = parser.parse_args(argv)

    lora = LoraSettings(r=args.lora_r, alpha=2 * args.lora_r, dropout=0.0)
    backbone = load_backbone(ModelSettings(name=args.model, lora=lora), seed=0)
    module = RewardNetwork(backbone.model, backbone.encoder, args.attention).train()
    groups, _ = read_groups(args.data)
    encoded, _ = EncodingPolicy(backbone.tokenizer, backbone.encoder, 512).encode_pairs(groups)
    encoded = [g for g in encoded if len(g.responses) == 4 and g.edges][: args.batch_size * args.steps]
    collate = make_collator("prefix_shared", module)
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-5)
    loss_fn = BradleyTerryLoss()

    def step(batch) -> float:
        started = time.perf_counter()
        rewards = module(batch)
        loss_fn(rewards[batch.edges[:, 0]], rewards[batch.edges[:, 1]], None, batch.edge_weight).backward()
        optimizer.step()
        optimizer.zero_grad()
        return time.perf_counter() - started

    seconds, tokens = {"k=4 rows": [], "2 pairs": []}, {"k=4 rows": [], "2 pairs": []}
    for i in range(args.steps):
        rankings = encoded[i * args.batch_size: (i + 1) * args.batch_size]
        for name, examples in (("k=4 rows", rankings), ("2 pairs", [p for g in rankings for p in as_pairs(g)])):
            batch = collate(examples)
            seconds[name].append(step(batch))
            tokens[name].append(sum(len(e.prompt_ids) + sum(map(len, e.responses)) for e in examples))
    responses = 4 * args.batch_size
    print(f"{args.model} {'LoRA r=' + str(args.lora_r) if args.lora_r else 'full fine-tuning'}, attention "
          f"{module.attention()[0]}, {args.batch_size} rankings ({responses} responses) a step, "
          f"{args.steps} steps each")
    print(f"{'':10}{'s/step':>10}{'ms/response':>13}{'tokens/step':>13}{'tokens/s':>10}")
    summary = {}
    for name in seconds:
        per_step = statistics.median(seconds[name][1:])
        summary[name] = per_step
        held = statistics.mean(tokens[name])
        print(f"{name:10}{per_step:10.3f}{1000 * per_step / responses:13.1f}{held:13.0f}{held / per_step:10.0f}")
    print(f"a response costs {summary['k=4 rows'] / summary['2 pairs']:.2f}× in a k=4 row what it costs in 2 pairs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
