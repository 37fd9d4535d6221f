"""``rewardlab compare RECIPE ... [KEY=VALUE ...]``: train several recipes alike and set their results side by
side."""

from __future__ import annotations

from pathlib import Path

from rewardlab.cli.options import command, split_overrides


def add(sub) -> None:
    p = command(sub, "compare", "train several recipes under the same overrides and compare their results",
                "rewardlab compare recipes/quickstart.yaml recipes/hh-minilm.yaml max_steps=20")
    p.add_argument("recipes", nargs="+", metavar="RECIPE_OR_KEY=VALUE",
                   help="recipe files, or one comparison file (runs:, overrides:, output_dir:), and dotted "
                        "key=value overrides for every run")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an override for every run (the same as KEY=VALUE among the recipes)")
    p.add_argument("--output", help="output folder (default: the comparison file's, else runs/compare)")
    p.set_defaults(func=run)


def run(args) -> None:
    from rewardlab.config import Comparison, load_comparison, load_recipe
    from rewardlab.config.loading import read_yaml
    from rewardlab.errors import RecipeError

    files, overrides = split_overrides(args.recipes)
    overrides += args.set
    if not files:
        raise RecipeError("rewardlab compare needs recipe files (or one comparison file) besides its overrides")
    contents = read_yaml(Path(files[0])) if len(files) == 1 else {}
    if isinstance(contents, dict) and "runs" in contents:
        comparison = load_comparison(files[0], overrides)
        if args.output:
            comparison = comparison.model_copy(update={"output_dir": args.output})
    else:
        comparison = Comparison(runs=files, overrides=overrides, output_dir=args.output or "runs/compare")
        for run_file in comparison.runs:
            load_recipe(run_file, comparison.overrides)  # every recipe checked before the first one trains
    from rewardlab.training.compare import compare

    compare(comparison)
