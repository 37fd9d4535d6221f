"""``rewardlab bench MODEL --data FILE_OR_DIR ...``: a RewardBench-style report."""

from __future__ import annotations

from pathlib import Path

from rewardlab.cli.options import command, data_option, load_scorer, positive_int, say, scoring_options


def add(sub) -> None:
    p = command(sub, "bench", "a RewardBench-style report: accuracy per subset and section, calibration",
                "rewardlab bench runs/quickstart --data ../shared/data/prefs --output runs/bench/quickstart")
    p.add_argument("model", help="a saved model or ensemble folder, offline name or hub id")
    data_option(p, "RewardBench v1 rows (prompt, chosen, rejected, subset) or RewardBench 2 rows (rejected: a list); "
                   "a folder stands for its data files")
    p.add_argument("--sections", help="YAML file: section -> {subset: weight} (default: RewardBench's sections, "
                                      "rewardlab/evaluation/rewardbench_sections.yaml)")
    p.add_argument("--output", help="folder for report.json, report.md, rows.jsonl and the plots "
                                    "(default: runs/bench/MODEL_NAME)")
    p.add_argument("--subset-column", default="subset",
                   help="column naming each row's subset; rows without it take the file's name")
    p.add_argument("--split", default="test", help="split for hub datasets")
    p.add_argument("--bins", type=positive_int, default=10, help="equal-width confidence bins of the calibration error")
    scoring_options(p)
    p.set_defaults(func=run)


def run(args) -> None:
    import importlib

    from rewardlab.evaluation.rewardbench import load_sections, read_bench
    from rewardlab.inference.bench import run_bench

    for package in ("matplotlib", "scipy"):  # the plots and the calibration: missing, it fails before scoring
        importlib.import_module(package)
    load_sections(args.sections)
    read_bench(args.data, args.subset_column, args.split)  # bad data fails here, before the model loads
    scorer = load_scorer(args)
    output = Path(args.output or Path("runs") / "bench" / Path(args.model.rstrip("/")).name)
    print(run_bench(scorer, args.data, output, args.sections, args.subset_column, args.split, args.bins), end="")
    cut = scorer.report
    if cut.truncated_prompt or cut.truncated_response:
        say(f"over max_length={scorer.max_length}: {cut.truncated_prompt} prompts and {cut.truncated_response} "
            f"responses cut from the left")
    say(f"wrote {output}/report.json, report.md, rows.jsonl and the plots")
