"""``rewardlab train [RECIPE] [KEY=VALUE ...]``: train what a recipe describes."""

from __future__ import annotations

from rewardlab.cli.options import command, split_overrides


def add(sub) -> None:
    p = command(sub, "train", "train a reward model (or an embedding model) from a YAML recipe",
                "rewardlab train recipes/quickstart.yaml train_data=my.jsonl max_steps=100 output_dir=runs/mine")
    p.add_argument("recipe", nargs="?", help="recipe file (default: the quickstart recipe)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted recipe keys to override, e.g. max_steps=10 model.lora.r=8")
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint in output_dir")
    p.add_argument("--resume-changed", action="store_true",
                   help="--resume, and continue although the recipe differs from the checkpoint's in keys that matter")
    p.set_defaults(func=run)


def run(args) -> None:
    from rewardlab.training.launcher import die_with_launcher

    die_with_launcher()  # now, not after the seconds that importing the training stack takes
    from rewardlab.config import load_recipe

    files, overrides = split_overrides([args.recipe] if args.recipe else [])
    recipe = load_recipe(files[0] if files else None, overrides + args.overrides)  # checked before torch loads
    from rewardlab.training import train_recipe  # the training stack (torch, transformers): seconds to import

    train_recipe(recipe, resume=args.resume or args.resume_changed, resume_changed=args.resume_changed)
