"""``rewardlab eval MODEL --data FILE ...``: a saved model's metrics on data files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

from rewardlab.cli.options import command, data_option, positive_int, say
from rewardlab.config.recipe import Attention, Layout, Pooling


def add(sub) -> None:
    p = command(sub, "eval", "evaluate a reward model on preference files, or a sentence encoder on STS files",
                "rewardlab eval runs/quickstart --data data/prefs-dev.jsonl --json metrics.json")
    p.add_argument("model", help="a saved model or ensemble folder, offline name or hub id")
    data_option(p, "preference files or hub datasets, or STS files (sentence1,sentence2,score)")
    p.add_argument("--split", default="test", help="split for hub datasets")
    p.add_argument("--json", help="write the metrics per file to this JSON file")
    p.add_argument("--plot", help="write a PNG per file into this folder")
    p.add_argument("--batch-size", type=positive_int, default=16, help="examples per forward pass")
    p.add_argument("--max-length", type=positive_int, help="tokens per text (default: the length the model was "
                                                           "trained with, else 512)")
    p.add_argument("--layout", default="auto", choices=get_args(Layout),
                   help="how pairs become rows (as in training; auto: the fastest exact one)")
    p.add_argument("--attention", default="auto", choices=get_args(Attention),
                   help="how packed rows attend (as in training; auto: blocks where exact)")
    p.add_argument("--pooling", choices=get_args(Pooling),
                   help="STS: sentence embedding pooling (default: the saved model's, else mean for encoders and "
                        "last for causal LMs)")
    p.set_defaults(func=run)


def run(args) -> None:
    from rewardlab.inference.evaluate import evaluate_files

    results = evaluate_files(args.model, args.data, args.split, args.batch_size, args.max_length, args.layout,
                             args.attention, args.pooling, args.plot, log=say, show=print)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
