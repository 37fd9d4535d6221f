"""Best-of-n scoring with the prompt computed once, against scoring every candidate with its prompt.

    python -m benchmarks.best_of_n --model smollm2-135m --prompts 12 --n 8 [--min-prompt-tokens 200]

Prompts are HH-RLHF dialogues (long shared context, as in RLHF); the candidates of a prompt are its own chosen and
rejected replies plus replies of other rows. Three ways, same model, same rewards (checked to 1e-3):
a loop that scores each candidate with its prompt; one token-budget batch of the n (prompt, candidate) sequences;
``RewardModel.rank`` (one row ``[prompt | c1 | … | cn]``, the prompt computed once).
"""

from __future__ import annotations

import argparse
import random
import time

from rewardlab.data.pairs import read_pairs
from rewardlab.inference.scorer import RewardModel


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data", default="../shared/data/hh-harmless-dev.jsonl")
    parser.add_argument("--prompts", type=int, default=12)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--min-prompt-tokens", type=int, default=0, help="only prompts at least this long")
    args = parser.parse_args(argv)

    rm = RewardModel.load(args.model, max_length=args.max_length)
    pairs, _ = read_pairs(args.data)
    rng = random.Random(0)
    replies = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    tasks = []
    long_enough = [p for p in pairs if len(rm.policy.encode_candidates(p.prompt, [p.chosen])[0])
                   >= args.min_prompt_tokens]
    for pair in rng.sample(long_enough, args.prompts):
        tasks.append((pair.prompt, [pair.chosen, pair.rejected] + rng.sample(replies, args.n - 2)))
    rm.rank(*tasks[0])  # warm-up

    results, seconds = {}, {}
    ways = {
        "loop, one candidate at a time": lambda p, cs: [rm.score([p], [c])[0] for c in cs],
        "one token-budget batch": lambda p, cs: rm.score([p] * len(cs), cs),
        "prompt computed once (rank)": lambda p, cs: rm.score_candidates(p, cs),
    }
    for name, way in ways.items():
        start = time.perf_counter()
        results[name] = [way(p, cs) for p, cs in tasks]
        seconds[name] = time.perf_counter() - start
    reference = results["loop, one candidate at a time"]
    worst = max(abs(a - b) for name in results for got, ref in zip(results[name], reference) for a, b in zip(got, ref))
    tokens = sum(len(rm.encode(p, c)) for p, cs in tasks for c in cs)
    once = 0
    for p, cs in tasks:
        shared, rests = rm.policy.encode_candidates(p, cs)
        once += len(shared) + sum(map(len, rests))
    print(f"{args.model}, {args.prompts} prompts × {args.n} candidates, {tokens:,} tokens scored one by one, "
          f"{once:,} with each prompt once (the most computing the prompt once can save: {tokens / once:.2f}×)")
    base = seconds["loop, one candidate at a time"]
    for name, s in seconds.items():
        print(f"  {name:32} {s:8.2f} s  {args.prompts * args.n / s:7.2f} candidates/s  {base / s:5.2f}×")
    print(f"  largest reward difference from the loop: {worst:.2e}")


if __name__ == "__main__":
    main()
