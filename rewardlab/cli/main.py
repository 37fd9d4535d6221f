"""The command line: one module per command (each parses its options, calls the library and prints), and one
rule for failures: a mistake in what was given is one line and exit status 2, a bug one line and status 1."""

from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback
from pathlib import Path

from rewardlab.cli import average, bench, compare, evaluate, score, serve, train
from rewardlab.errors import UserError

COMMANDS = (train, evaluate, score, serve, bench, compare, average)
# Packages behind optional features: the extra that installs each.
EXTRAS = {"fastapi": "serve", "uvicorn": "serve", "httpx": "serve", "tensorboard": "tensorboard",
          "matplotlib": "plot", "scipy": "plot", "PIL": "clip", "gguf": "smollm2"}
DEBUG = "REWARDLAB_DEBUG"  # set to 1 for the full traceback of any failure


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rewardlab", description="Train preference reward models (and their contrastive siblings), then "
                                      "evaluate, score and serve them.",
        epilog="`rewardlab COMMAND --help` shows a command's options and an example.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. Mistakes in what was given (recipes, data and chat templates, paths, missing packages) are a
    one-line ``error: ...`` and exit status 2; anything else is a bug in rewardlab: one line naming where it
    happened, exit status 1, and the traceback with ``REWARDLAB_DEBUG=1``."""
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "model", None):
            check_model_path(args.model)
        args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get(DEBUG, "") not in ("", "0"):
            raise
        message, status = describe_failure(e)
        if not getattr(e, "reported", False):  # a distributed run's processes say it as they stop
            print("error: " + " ".join(line.strip() for line in message.splitlines() if line.strip()),
                  file=sys.stderr)
        return status
    return 0


def check_model_path(name: str) -> None:
    """A name like ``runs/typo`` whose folder ``runs`` is here is a local path that does not exist, not a hub id to
    look up (which would only fail after minutes of retries offline)."""
    path = Path(name)
    if not path.exists() and str(path.parent) not in ("", ".") and path.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, "no such model folder", name)


def describe_failure(e: Exception) -> tuple[str, int]:
    """(one-line message, exit status) for an exception that ended a command."""
    if isinstance(e, UserError):
        return str(e), e.exit_status
    if isinstance(e, ModuleNotFoundError) and not (e.name or "").startswith("rewardlab"):
        if "pip install" in str(e):  # rewardlab's own message, with the command
            return str(e), 2
        top = (e.name or "").split(".")[0]
        extra = EXTRAS.get(top)
        hint = f"pip install 'rewardlab[{extra}]'" if extra else f"pip install {top}"
        return f"this needs the '{top}' package, which is not installed: {hint}", 2
    if isinstance(e, OSError):
        if e.strerror and e.filename:
            return f"{e.strerror}: {e.filename}", 2
        return e.strerror or str(e), 2
    frame = traceback.extract_tb(e.__traceback__)[-1]
    return (f"internal error: {type(e).__name__}: {e} (at {frame.filename}:{frame.lineno} in {frame.name}). This is "
            f"a bug in rewardlab: please report it with the traceback that {DEBUG}=1 prints"), 1

