"""Options several commands share: numbers checked as they are parsed, the model argument, and the scoring options
(their choices read from the recipe declarations, :mod:`rewardlab.config.recipe`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import get_args

from rewardlab.config.recipe import EnsembleReward


def positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def port(text: str) -> int:
    if not text.strip().isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number (0-65535), got {text!r}")
    return int(text)


def command(sub, name: str, help: str, example: str) -> argparse.ArgumentParser:
    """A subcommand whose help shows every default and ends with an example."""
    return sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".",
                          epilog=f"example:\n  {example}", formatter_class=Formatter)


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in every option's help (where one is set), and the example kept as written."""


def data_option(p: argparse.ArgumentParser, help: str) -> None:
    """``--data``: one or more files, repeatable (``--data A B`` and ``--data A --data B`` alike)."""
    p.add_argument("--data", nargs="+", action="extend", required=True, metavar="FILE", help=help)


def scoring_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-remote-code", action="store_true",
                   help="run the Python code a model folder or hub repo ships (auto_map)")
    p.add_argument("--max-length", type=positive_int, help="tokens per text (default: the length the model was "
                                                           "trained with, else 512)")
    p.add_argument("--reward-weights", type=float, nargs="+", metavar="W",
                   help="a multi-attribute model: the weight of each attribute in the reward (default: the saved ones)")
    p.add_argument("--token-budget", type=positive_int,
                   help="most padded tokens (rows x longest row) in one forward pass (default: 16384 on a GPU, 2048 "
                        "on CPU)")
    p.add_argument("--ensemble-reward", choices=get_args(EnsembleReward),
                   help="an ensemble: how its members combine (default: its manifest's)")
    p.add_argument("--std-weight", type=float, metavar="LAMBDA",
                   help="an ensemble: lambda in mean - lambda * std (default: its manifest's)")


def load_scorer(args):
    """The scorer the scoring options describe, with ``--reward-weights`` applied."""
    from rewardlab.errors import ScoringError
    from rewardlab.inference.scorer import RewardModel

    scorer = RewardModel.load(args.model, args.max_length, args.token_budget, trust_remote_code=args.trust_remote_code,
                              reward=args.ensemble_reward, std_weight=args.std_weight)
    if args.reward_weights is not None:
        if len(args.reward_weights) != len(scorer.attributes):
            raise ScoringError(f"--reward-weights needs one weight per attribute of {scorer.name} "
                               f"({', '.join(scorer.attributes) or 'it rates none'}), got {len(args.reward_weights)}")
        scorer.reward_weights = args.reward_weights
    return scorer


def say(message: str) -> None:
    """A line for the user, on standard error (standard output carries results)."""
    print(message, file=sys.stderr)


def split_overrides(arguments: list[str]) -> tuple[list[str], list[str]]:
    """(files, ``key=value`` overrides) of positional arguments: an argument with ``=`` that is not a file is an
    override."""
    overrides = [a for a in arguments if "=" in a and not Path(a).exists()]
    return [a for a in arguments if a not in overrides], overrides
