"""Write rewardlab's own attribute ratings, data/attributes-{train,dev}.jsonl, in HelpSteer2's layout: one response a
row, rated 0–4 on helpfulness, politeness and verbosity.

The responses are those of make_ranks.py (4 per prompt, same splits); the ratings are the generator's truth:
helpfulness from the response's rank score (3 → 4, 2 → 3, 1 → 1, 0 → 0), politeness 0 for the rude framings of
make_prefs.py's RUDE pool and 4 otherwise, verbosity from the length (one point per 7 words, at most 4). So the
three disagree: a rude right answer is helpful and impolite, a long dodge verbose and unhelpful.
Usage: make_attributes.py [--seed N]
"""
import argparse
import json
import re
from pathlib import Path

import make_prefs as P
import make_ranks as R

HELPFULNESS = {3: 4, 2: 3, 1: 1, 0: 0}
RUDE = [re.compile(re.escape(t).replace(r"\{a\}", ".*").replace(r"\{s\}", ".*") + "$") for t in P.RUDE]


def rate(response: str, score: int) -> dict:
    return {"helpfulness": HELPFULNESS[score],
            "politeness": 0 if any(p.match(response) for p in RUDE) else 4,
            "verbosity": min(4, len(response.split()) // 7)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for split, rows in R.build(args.seed, R.SIZES).items():
        rated = [{"prompt": r["prompt"], "response": response, **rate(response, score), "source": r["source"]}
                 for r in rows for response, score in zip(r["responses"], r["scores"])]
        path = Path(__file__).resolve().parent / f"attributes-{split}.jsonl"
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rated), encoding="utf-8")
        print(f"wrote {len(rated)} rows to {path}")


if __name__ == "__main__":
    main()
