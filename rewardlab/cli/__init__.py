"""The command line, one small module per command; :func:`main` runs one."""

from rewardlab.cli.main import main

__all__ = ["main"]
