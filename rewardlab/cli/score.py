"""``rewardlab score MODEL --input IN --output OUT``: a reward added to every row of a file."""

from __future__ import annotations

from rewardlab.cli.options import command, load_scorer, say, scoring_options


def add(sub) -> None:
    p = command(sub, "score", "add a reward to every row of a file",
                "rewardlab score runs/quickstart --input rows.jsonl --output scored.jsonl")
    p.add_argument("model", help="a saved model or ensemble folder, offline name or hub id")
    p.add_argument("--input", required=True, help="rows with prompt + response, messages, or text (.jsonl, ...)")
    p.add_argument("--output", required=True, help="JSON lines: each input row with a 'reward' field")
    p.add_argument("--best-of-n", action="store_true",
                   help="rows hold 'prompt' + 'responses' (a list); keep the best as 'response' with its 'reward' "
                        "(all rewards under 'rewards')")
    p.add_argument("--normalize", action="store_true", help="(reward - mean) / std with the saved statistics")
    p.add_argument("--members", action="store_true",
                   help="every member's reward too ('member_rewards'; an ensemble always writes 'reward_mean' and "
                        "'reward_std')")
    scoring_options(p)
    p.set_defaults(func=run)


def run(args) -> None:
    from pathlib import Path

    from rewardlab.inference.files import check_output, open_rows, write_scores

    rows = open_rows(args.input)  # a missing or malformed input, or an output that cannot be written, fails here,
    check_output(Path(args.output))  # before the model loads
    scorer = load_scorer(args)
    written = write_scores(scorer, rows, args.input, args.output, args.best_of_n, args.normalize, args.members)
    cut = scorer.report
    if cut.truncated_prompt or cut.truncated_response:
        say(f"over max_length={scorer.max_length}: {cut.truncated_prompt} prompts and {cut.truncated_response} "
            f"responses cut from the left")
    say(f"wrote {written} rows to {args.output}")
