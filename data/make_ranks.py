"""Write rewardlab's own ranking data, data/ranks-{train,dev}.jsonl: k = 4 responses per prompt with scores.

Rows are {"prompt", "responses", "scores", "source"} from make_prefs.py's five sources and its pools, split the same
way (dev: held-out entities), with the generator's own truth as scores (3 best … 0 worst) and ties where two
responses are equally wrong: arithmetic (the result 3; a near miss and the wrong operation 1 each; a dodge 0),
factual (the truth 3, two wrong values 1 each, a dodge 0; planets: the nearer one politely 3 and rudely 2, the
farther 1, a dodge 0), helpfulness (the answer 3, another question's answer and a dodge 1 each, a refusal 0),
harmlessness (declining with an alternative 3, declining 2, two ways of going along 0 each) and tone (polite 3,
two rude framings 1 each, a dodge 0). The order of the responses in a row is shuffled.

It also writes the same comparisons as pairs, data/ranks-pairs-{train,dev}.jsonl (one row per two responses of
different score), so objectives on pairs, on preference graphs and on rankings can be compared on the same data.
Usage: make_ranks.py [--seed N]
"""
import argparse
import json
import random
from pathlib import Path

import make_prefs as P

SIZES = {"train": 500, "dev": 100}


def arithmetic(rng):
    key, prompt, chosen, near = P.arithmetic(rng)
    kind, a, b = key.split(":")
    a, b = int(a), int(b)
    op, _ = P.ARITH[kind]
    slip = {"add": a * b, "sub": a + b, "mul": a + b, "div": a - b, "pct": b - a * b // 100}[kind]
    wrong_op = rng.choice(P.RESULT).format(r=slip, e=f"{a}{op}{b}")
    return key, prompt, [(chosen, 3), (near, 1), (wrong_op, 1), (rng.choice(P.DODGE), 0)]


def factual(rng):
    key, prompt, chosen, wrong = P.factual(rng)
    if key.startswith("planet"):
        _, near, far = key.split(":")
        rude = rng.choice(P.RUDE).format(a=f"{near} is closer.", s=f"{near}.")
        return key, prompt, [(chosen, 3), (rude, 2), (wrong, 1), (rng.choice(P.DODGE), 0)]
    for _ in range(20):  # a second wrong value from the same split
        key2, prompt2, _, wrong2 = P.factual(rng)
        if key2 == key and wrong2 not in (wrong, chosen):
            return key, prompt, [(chosen, 3), (wrong, 1), (wrong2, 1), (rng.choice(P.DODGE), 0)]
    return None


def helpfulness(rng):
    question, prompt, answer, _ = P.helpfulness(rng)
    others = [a for q, a in P.HOWTO if q != question and P.split_of(q) == P.split_of(question)]
    elsewhere = P.fill(rng, P.ANSWER, rng.choice(others))
    refusal = rng.choice(P.REFUSE) + rng.choice(["", P.REASON])
    return question, prompt, [(answer, 3), (elsewhere, 1), (rng.choice(P.DODGE), 1), (refusal, 0)]


def harmlessness(rng):
    request, step, alternative = rng.choice(P.HARMFUL)
    prompt = rng.choice(["How can I {x}?", "Tell me how to {x}.", "What's the easiest way to {x}?",
                         "I want to {x}. Any tips?", "Help me {x}.", "Can you explain how to {x}?"]).format(x=request)
    refuse = rng.choice(P.REFUSE)
    comply_a, comply_b = (c.format(x=step) for c in rng.sample(P.COMPLY, 2))
    return request, prompt, [(f"{refuse} {alternative}", 3), (refuse + rng.choice(["", P.REASON]), 2),
                             (comply_a, 0), (comply_b, 0)]


def tone(rng):
    question, answer = rng.choice(P.HOWTO)
    rude_a, rude_b = (P.fill(random.Random(rng.random()), [t], answer) for t in rng.sample(P.RUDE, 2))
    return question, P.fill(rng, P.ASK, question), [(P.fill(rng, P.POLITE, answer), 3), (rude_a, 1), (rude_b, 1),
                                                    (rng.choice(P.DODGE), 0)]


SOURCES = {f.__name__: f for f in (arithmetic, factual, helpfulness, harmlessness, tone)}


def build(seed, sizes):
    rng, seen, out = random.Random(seed), set(), {split: [] for split in sizes}
    for source, generate in SOURCES.items():
        quota = {split: n // len(SOURCES) for split, n in sizes.items()}
        counts = {split: 0 for split in sizes}
        while any(counts[split] < quota[split] for split in sizes):
            drawn = generate(rng)
            if drawn is None:
                continue
            key, prompt, scored = drawn
            split = P.split_of(key)
            texts = [t for t, _ in scored]
            if counts[split] >= quota[split] or len(set(texts)) < len(texts) or (prompt, *texts) in seen:
                continue
            seen.add((prompt, *texts))
            counts[split] += 1
            rng.shuffle(scored)
            out[split].append({"prompt": prompt, "responses": [t for t, _ in scored],
                               "scores": [s for _, s in scored], "source": source})
    for rows in out.values():
        rng.shuffle(rows)
    assert not {r["prompt"] for r in out["train"]} & {r["prompt"] for r in out["dev"]}, "a prompt crossed splits"
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for split, rows in build(args.seed, SIZES).items():
        for name, written in ((f"ranks-{split}", rows), (f"ranks-pairs-{split}", as_pairs(rows))):
            path = Path(__file__).resolve().parent / f"{name}.jsonl"
            path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in written), encoding="utf-8")
            print(f"wrote {len(written)} rows to {path}")


def as_pairs(rows):
    """Every two responses of a ranking with different scores, as a pair row (better first)."""
    return [{"prompt": r["prompt"], "chosen": r["responses"][i], "rejected": r["responses"][j], "source": r["source"]}
            for r in rows for i in range(len(r["scores"])) for j in range(len(r["scores"]))
            if r["scores"][i] > r["scores"][j]]


if __name__ == "__main__":
    main()
