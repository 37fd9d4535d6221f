"""Dense-mask against block attention on the same batches, back to back: a ratio that holds on a busy machine.

    python -m benchmarks.attention_ab --model smollm2-135m --lora-r 16 --steps 4 --rounds 2

The pairs, order and encoding are ``benchmarks.vs_trl``'s (HH-harmless train, max_length 512, 8 pairs a
step). Each step's pairs go through one forward and backward pass with ``model.attention: dense`` (rows as
``make_collator`` lays them for the dense mask), then with ``blocks`` (rows with no padding), alternating, so load
from other work falls on both alike. Prints the seconds of each, their ratio over the steps after the first, and
the largest difference between the two losses.
"""

from __future__ import annotations

import argparse
import time

from benchmarks.vs_trl import prepare
from rewardlab.models.reward import RewardNetwork
from rewardlab.objectives import BradleyTerryLoss
from rewardlab.tasks.reward import make_collator, resolve_layout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--data", default="../shared/data/hh-harmless-train.jsonl")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs a step")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2, help="passes over the steps' batches")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--layout", default="auto")
    args = parser.parse_args(argv)

    spec = dict(model=args.model, lora_r=args.lora_r, gradient_checkpointing=0.0, seed=0, data=args.data,
                max_length=args.max_length, steps=args.steps, batch_size=args.batch_size)
    backbone, pairs = prepare(spec)
    # one model: the dense module's batches carry no blocks, so its attention is transformers' SDPA with the mask
    modules = {name: RewardNetwork(backbone.model, backbone.encoder, name).train() for name in ("dense", "blocks")}
    layout, _ = resolve_layout(args.layout, modules["blocks"])
    print(f"{args.model}, layout {layout}, attention {modules['blocks'].attention()}")
    batches = {name: [make_collator(layout, module)(pairs[i:i + args.batch_size])
                      for i in range(0, args.steps * args.batch_size, args.batch_size)]
               for name, module in modules.items()}
    seconds = {name: [] for name in modules}
    worst = 0.0
    for _ in range(args.rounds):
        for step in range(args.steps):
            losses = []
            for name, module in modules.items():
                started = time.perf_counter()
                loss = BradleyTerryLoss()(*module(batches[name][step]).chunk(2))
                loss.backward()
                seconds[name].append(time.perf_counter() - started)
                losses.append(loss.item())
                module.zero_grad(set_to_none=True)
            worst = max(worst, abs(losses[0] - losses[1]))
            rows = tuple(batches["dense"][step].input_ids.shape)
            print(f"step {step}: rows {rows} dense {seconds['dense'][-1]:.2f} s"
                  f", rows {tuple(batches['blocks'][step].input_ids.shape)} blocks {seconds['blocks'][-1]:.2f} s",
                  flush=True)
    dense, blocks = sum(seconds["dense"][1:]), sum(seconds["blocks"][1:])
    print(f"forward + backward, steps after the first: dense {dense:.1f} s, blocks {blocks:.1f} s: "
          f"blocks {dense / blocks:.2f}× as fast; max loss difference {worst:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
