"""Command line: ``rewardlab train | eval``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rewardlab.config import RecipeError
from rewardlab.data.formats import DataError


def cmd_train(args) -> None:
    from rewardlab.config import load_recipe
    from rewardlab.train import train

    recipe = load_recipe(args.recipe, args.overrides)
    train(recipe, resume=args.resume)


def cmd_eval(args) -> None:
    import torch

    from rewardlab.data.collate import PadCollator
    from rewardlab.data.encode import PairEncoder
    from rewardlab.data.formats import read_pairs
    from rewardlab.evaluate import format_metrics, plot_rewards, preference_metrics, score_pairs
    from rewardlab.scoring import load_reward_model

    model, tokenizer, encoder, info = load_reward_model(args.model)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    pair_encoder = PairEncoder(tokenizer, encoder, args.max_length or info.get("max_length", 512), "truncate")
    collator = PadCollator(tokenizer.pad_token_id, encoder)
    render = None
    if tokenizer.chat_template:
        def render(messages, prompt_only):
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt_only)
    results = {}
    for path in args.data:
        pairs, read_report = read_pairs(path, args.split, render)
        encoded, encode_report = pair_encoder.encode_pairs(pairs, path)
        print(f"{path}: {read_report.summary()}; {encode_report.summary()}", file=sys.stderr)
        chosen, rejected = score_pairs(model, encoded, collator, args.batch_size, device)
        results[path] = preference_metrics(chosen, rejected, encoded)
        print(format_metrics(path, results[path]))
        if args.plot:
            Path(args.plot).mkdir(parents=True, exist_ok=True)
            plot_rewards(chosen, rejected, encoded, Path(args.plot) / f"{Path(path).stem}.png")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rewardlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a reward model from a YAML recipe")
    p.add_argument("recipe", nargs="?", help="recipe file (default: recipes/quickstart.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. max_steps=10 model.lora.r=8")
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint in output_dir")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a saved reward model on preference files")
    p.add_argument("model", help="a saved model folder or hub id")
    p.add_argument("--data", action="append", required=True, help="preference file or hub dataset (repeatable)")
    p.add_argument("--split", default="test", help="split for hub datasets (default: test)")
    p.add_argument("--json", help="write the metrics per file to this JSON file")
    p.add_argument("--plot", help="write a PNG per file into this folder")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, help="default: the length the model was trained with, else 512")
    p.set_defaults(func=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # `rewardlab train key=value` without a recipe: the first positional is an override, not a file.
    if args.command == "train" and args.recipe and "=" in args.recipe and not Path(args.recipe).exists():
        args.overrides, args.recipe = [args.recipe, *args.overrides], None
    try:
        args.func(args)
    except (RecipeError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
